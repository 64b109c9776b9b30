"""Text completions: a raw prompt continued, no chat template.

A text prompt is encoded as pre-training saw documents: `<s>` then the text; a prompt of
token ids is used as it is. Choices are numbered prompt by prompt
(`index = prompt_index * n + j`), as OpenAI does. vLLM's `structured_outputs` (a JSON
schema or a Lark grammar) constrains the completion, and `return_token_ids` returns
the ids, so a forgeml server can stand behind the vLLM engine's proxy as vLLM does.

A request asks for prompts x n completions: at most `max_completion_choices`, and no
more than the engine has room for now (429 before any work). Tokenizing the prompts
and building their guides runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import llguidance
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from forgeml.core.errors import InputError
from forgeml.serve.accounting import Accounting
from forgeml.serve.chat.prompt import completion_budget, stop_strings
from forgeml.serve.chat.protocol import Usage
from forgeml.serve.completions.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    StructuredOutputs,
)
from forgeml.serve.constrained.guide import OutputGuide, OutputSpec
from forgeml.serve.constrained.json_schema import json_grammar
from forgeml.serve.engine.base import (
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
    SamplingParams,
)
from forgeml.serve.errors import generation_failed
from forgeml.serve.served_models import ServedModel
from forgeml.serve.streaming import DONE, HOLE, EventTemplate, completion_id, merge, sse


class CompletionService:
    def __init__(self, app_state: Any) -> None:
        self.state = app_state

    async def create(self, body: CompletionRequest, request: Request) -> Any:
        started = time.perf_counter()
        served: ServedModel = await self.state.traffic.get(body.model, request, body.user)
        request.state.model = served.id
        _refuse_unsupported(body)
        prompts = _prompts(body.prompt)
        _check_room(served, len(prompts), body.n, self.state.settings)
        cid = completion_id("cmpl")
        generations = await asyncio.to_thread(self._generations, body, served, prompts, cid)
        prompt_tokens = sum(len(g.prompt_ids) for g in generations[:: body.n])
        accounting = Accounting(
            request, served, "completions", cid, body.stream, prompt_tokens, started,
            user_text="\n".join(prompt for prompt in prompts if isinstance(prompt, str)),
        )  # fmt: skip
        streams = []
        try:
            streams = [served.engine.generate(generation) for generation in generations]
        except BaseException:
            for stream in streams:
                await stream.aclose()
            raise
        self.state.traffic.shadow(
            request, lambda candidate: self._generations(body, candidate, prompts, "shadow")
        )
        run = _Run(body, served, cid, accounting, [g.prompt_ids for g in generations], prompts)
        if body.stream:
            return StreamingResponse(run.stream(streams), media_type="text/event-stream")
        return await run.collect(streams)

    def _generations(
        self, body: CompletionRequest, served: ServedModel, prompts: list, cid: str
    ) -> list[GenerationRequest]:
        """Tokenize, budget and guide every choice (in a thread: this is the costly part)."""
        encoded = [self._encode(served, prompt) for prompt in prompts]
        spec = _output_spec(body.structured_outputs)
        generations = []
        for prompt_index, prompt_ids in enumerate(encoded):
            max_tokens = completion_budget(
                len(prompt_ids), body.max_tokens, served.max_context, self.state.settings
            )
            for j in range(body.n):
                sampling = SamplingParams(
                    max_tokens=max_tokens,
                    temperature=1.0 if body.temperature is None else body.temperature,
                    top_p=1.0 if body.top_p is None else body.top_p,
                    seed=None if body.seed is None else body.seed + j,
                    stop=stop_strings(body.stop),
                    ignore_eos=body.ignore_eos,
                )
                index = prompt_index * body.n + j
                guide = None if spec is None else OutputGuide(served.vocabulary, spec, max_tokens)
                generations.append(
                    GenerationRequest(f"{cid}-{index}", prompt_ids, sampling, guide=guide)
                )
        return generations

    def _encode(self, served: ServedModel, prompt: str | list[int]) -> list[int]:
        tokenizer = served.tokenizer
        if isinstance(prompt, list):
            size = len(tokenizer)
            if not prompt or not all(0 <= token < size for token in prompt):
                raise InputError(
                    f"a prompt of token ids must be non-empty ids below {size}", field="prompt"
                )
            return prompt
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        if bos is not None and ids[:1] != [bos]:  # a rendered chat prompt brings its own <s>
            ids = [bos, *ids]
        return ids


class _Run:
    def __init__(
        self,
        body: CompletionRequest,
        served: ServedModel,
        cid: str,
        accounting: Accounting,
        prompt_ids: list[list[int]],
        prompts: list[str | list[int]],
    ) -> None:
        self.body, self.served, self.id = body, served, cid
        self.accounting: Accounting = accounting
        self.model = accounting.request.state.route.answered_as  # the version (traffic.py)
        count = len(prompt_ids)
        self.prompt_ids = prompt_ids  # per choice, for return_token_ids
        self.token_ids: list[list[int]] = [[] for _ in range(count)]
        self.prompt_sent: set[int] = set()
        self.texts = [""] * count
        self.tokens = [0] * count
        self.finish: list[str | None] = [None] * count
        self.errors: list[str | None] = [None] * count
        self.unavailable = False  # an engine went down under a choice: a 503
        self.prompts = prompts
        self.created = int(time.time())
        self._text_events: dict[int, EventTemplate] = {}  # per choice index

    def _text_event(self, index: int, text: str) -> str:
        """The event of a chunk that only carries text (nearly every token's)."""
        template = self._text_events.get(index)
        if template is None:
            choice = CompletionChoice(index=index, text=HOLE)
            template = self._text_events[index] = EventTemplate(self._envelope([choice]))
        return template.render(text)

    def _take(self, index: int, chunk: GenerationChunk) -> None:
        self.accounting.token_arrived(chunk)
        self.texts[index] += chunk.text
        self.tokens[index] = chunk.completion_tokens
        self.token_ids[index] += chunk.token_ids
        if chunk.finish_reason is not None:
            self.finish[index], self.errors[index] = chunk.finish_reason, chunk.error
            self.unavailable = self.unavailable or chunk.unavailable

    def _usage(self) -> Usage:
        completion = sum(self.tokens)
        prompt = self.accounting.prompt_tokens
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def _failure(self) -> str | None:
        for reason, error in zip(self.finish, self.errors, strict=True):
            if reason in ("error", "abort"):
                return error or "generation was aborted"
        return None

    async def collect(self, streams: list[AsyncIterator[GenerationChunk]]) -> JSONResponse:
        status, error = 200, None
        try:
            async for index, chunk in merge(streams):
                self._take(index, chunk)
            error = self._failure()
            if error is not None:
                failure = generation_failed(error, self.unavailable)
                status = failure.status
                raise failure
            choices = [
                CompletionChoice(index=i, text=text, finish_reason=self.finish[i])
                for i, text in enumerate(self.texts)
            ]
            if self.body.return_token_ids:
                for choice in choices:
                    choice.token_ids = self.token_ids[choice.index]
                    choice.prompt_token_ids = self.prompt_ids[choice.index]
            response = CompletionResponse(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=choices,
                usage=self._usage(),
            )
            payload = response.model_dump()
            payload["choices"] = [_dump(choice) for choice in choices]
            return JSONResponse(payload)
        finally:
            self._close(status, error)

    async def stream(self, streams: list[AsyncIterator[GenerationChunk]]) -> AsyncIterator[str]:
        status, error = 200, None
        try:
            async for index, chunk in merge(streams):
                self._take(index, chunk)
                if chunk.finish_reason in ("error", "abort"):
                    failure = generation_failed(chunk.error, chunk.unavailable)
                    status, error = failure.status, chunk.error or "generation was aborted"
                    yield sse(failure.body())
                    break
                ids = self.body.return_token_ids and chunk.token_ids  # half a character too
                if chunk.text and chunk.finish_reason is None and not self.body.return_token_ids:
                    yield self._text_event(index, chunk.text)
                elif chunk.text or chunk.finish_reason or ids:
                    choice = CompletionChoice(
                        index=index, text=chunk.text, finish_reason=chunk.finish_reason
                    )
                    if self.body.return_token_ids:
                        choice.token_ids = chunk.token_ids
                        if index not in self.prompt_sent:  # with a choice's first chunk
                            choice.prompt_token_ids = self.prompt_ids[index]
                            self.prompt_sent.add(index)
                    yield sse(self._envelope([choice]))
            else:
                options = self.body.stream_options
                if options is not None and options.include_usage:
                    yield sse(self._envelope([], self._usage()))
            yield DONE
        finally:
            if status == 200 and any(reason is None for reason in self.finish):
                status, error = 499, "client closed the stream"
            self._close(status, error)

    def _envelope(
        self, choices: list[CompletionChoice], usage: Usage | None = None
    ) -> dict[str, Any]:
        # Plain dicts, no response model: the last event of a choice, and every event
        # with return_token_ids, come through here.
        envelope: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [_dump(choice) for choice in choices],
        }
        if usage is not None:
            envelope["usage"] = usage.model_dump(exclude_none=True)
        return envelope

    def _close(self, status: int, error: str | None) -> None:
        self.accounting.close(
            status,
            error,
            sum(self.tokens),
            [reason or "" for reason in self.finish],
            {"prompts": self.prompts},
            self.texts,
        )


def _dump(choice: CompletionChoice) -> dict[str, Any]:
    """A choice as JSON; token ids only when they were asked for."""
    payload = choice.model_dump()
    for key in ("token_ids", "prompt_token_ids"):
        if payload[key] is None:
            del payload[key]
    return payload


def _check_room(served: ServedModel, prompts: int, n: int, settings: Any) -> None:
    """Refuse more choices than a request may ask for (400), or than the engine has room
    for now (429), before any prompt is tokenized."""
    choices = prompts * n
    capacity = settings.max_batch_size + settings.max_waiting
    most = min(settings.max_completion_choices, capacity)
    if choices > most:
        raise InputError(
            f"{prompts} prompt(s) x n={n} ask for {choices} completions; this server takes "
            f"at most {most} in one request",
            field="prompt" if prompts > 1 else "n",
            hint="send fewer prompts per request, or a lower n",
        )
    stats = served.engine.stats()
    room = capacity - stats.waiting - stats.running
    if choices > room:
        raise QueueFullError(
            f"the server is busy: {choices} completions asked for, room for {max(room, 0)}",
            hint="retry after a short wait",
        )


def _prompts(prompt: str | list) -> list[str | list[int]]:
    """The prompts of a request: one text, texts, one list of token ids, or several."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(token, int) for token in prompt):
        return [list(prompt)]
    if not prompt:
        raise InputError("prompt must not be empty", field="prompt")
    return list(prompt)


def _output_spec(structured: StructuredOutputs | None) -> OutputSpec | None:
    """vLLM's `structured_outputs` as what a guide enforces (None: unconstrained)."""
    if structured is None:
        return None
    field = "structured_outputs"
    kinds = [name for name, value in structured if value is not None]
    if len(kinds) != 1:
        raise InputError("structured_outputs takes one of json, json_object, grammar", field=field)
    if structured.grammar is not None:
        try:
            grammar = llguidance.grammar_from("grammar", structured.grammar)
        except ValueError as error:
            raise InputError(
                f"cannot read this grammar: {error}", field=f"{field}.grammar"
            ) from error
        return OutputSpec(grammar=grammar, field=f"{field}.grammar")
    schema = structured.json_schema
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as error:
            raise InputError("json must be a JSON schema", field=f"{field}.json") from error
    if structured.json_object is False:
        raise InputError("json_object must be true when set", field=f"{field}.json_object")
    return OutputSpec(grammar=json_grammar(schema, f"{field}.json"), field=f"{field}.json")


def _refuse_unsupported(body: CompletionRequest) -> None:
    if body.echo:
        raise InputError("echo is not supported", field="echo")
    if body.suffix:
        raise InputError("suffix (insertion) is not supported", field="suffix")
    if body.logprobs:
        raise InputError("log probabilities are not supported yet", field="logprobs")
    if body.best_of not in (None, 1):
        raise InputError("best_of is not supported", field="best_of")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise InputError("not supported by this server yet; leave it unset or 0", field=name)
