"""Chat completions: run a prepared request on the engine, shape OpenAI/Mistral output.

Reasoning goes back apart from the answer: as `message.reasoning_content` (and
`delta.reasoning_content` when streaming) for OpenAI clients, and as a leading
`{"type": "thinking", "thinking": [{"type": "text", ...}]}` content chunk for Mistral
clients, which is how Mistral's API returns it. A client counts as Mistral's when
its User-Agent says so (the mistralai SDK's does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from forgeml.core.errors import ForgeError
from forgeml.models import chat_template as ct
from forgeml.monitor.signals import enum_fields, user_text
from forgeml.serve.accounting import Accounting
from forgeml.serve.chat import protocol as p
from forgeml.serve.chat.output_parser import ParsedDelta, StreamingOutputParser
from forgeml.serve.chat.prompt import PreparedChat, prepare
from forgeml.serve.constrained.guide import OutputGuide
from forgeml.serve.engine.base import GenerationChunk, GenerationRequest
from forgeml.serve.errors import APIError, generation_failed
from forgeml.serve.recent_completions import RecentCompletion
from forgeml.serve.served_models import ServedModel
from forgeml.serve.streaming import DONE, HOLE, EventTemplate, completion_id, merge, sse

MISTRAL_USER_AGENT = "mistral"


@dataclass
class ChoiceState:
    guide: OutputGuide
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    unavailable: bool = False  # its engine went down: a 503
    parser: StreamingOutputParser = field(default_factory=StreamingOutputParser)


class ChatService:
    def __init__(self, app_state: Any) -> None:
        self.state = app_state  # pool, settings, metrics, request_log

    async def create(self, body: p.ChatCompletionRequest, request: Request) -> Any:
        started = time.perf_counter()
        served: ServedModel = await self.state.traffic.get(body.model, request, body.user)
        request.state.model = served.id
        prepared = await asyncio.to_thread(prepare, body, served, self.state.settings)
        choices = await asyncio.to_thread(
            lambda: [
                ChoiceState(OutputGuide(served.vocabulary, prepared.spec, s.max_tokens))
                for s in prepared.sampling
            ]
        )
        run = _Run(self, served, body, prepared, choices, request, started)
        streams = run.submit()
        self.state.traffic.shadow(request, lambda candidate: self._shadow(body, candidate))
        if body.stream:
            return StreamingResponse(run.stream(streams), media_type="text/event-stream")
        return await run.collect(streams)

    def _shadow(
        self, body: p.ChatCompletionRequest, candidate: ServedModel
    ) -> list[GenerationRequest]:
        """The same request, prepared for a shadowed candidate (traffic.py)."""
        prepared = prepare(body, candidate, self.state.settings)
        return [
            GenerationRequest(
                completion_id("shadow"),
                prepared.prompt_ids,
                sampling,
                guide=OutputGuide(candidate.vocabulary, prepared.spec, sampling.max_tokens),
                images=prepared.images,
            )
            for sampling in prepared.sampling
        ]


class _Run:
    """One chat request in flight: its choices, timing and record."""

    def __init__(
        self,
        service: ChatService,
        served: ServedModel,
        body: p.ChatCompletionRequest,
        prepared: PreparedChat,
        choices: list[ChoiceState],
        request: Request,
        started: float,
    ) -> None:
        self.service, self.served, self.body = service, served, body
        self.prepared: PreparedChat = prepared
        self.choices: list[ChoiceState] = choices
        self.request: Request = request
        self.id = completion_id("chatcmpl")
        self.accounting = Accounting(
            request,
            served,
            "chat.completions",
            self.id,
            body.stream,
            len(prepared.prompt_ids),
            started,
            user_text=user_text(prepared.messages),
            turns=len(prepared.messages),
            json_mode=body.response_format is not None
            and body.response_format.type in ("json_object", "json_schema"),
            label_fields=_label_fields(body),
        )
        self.created = int(time.time())
        self.model = request.state.route.answered_as  # the version that answers (traffic.py)
        self.mistral = MISTRAL_USER_AGENT in request.headers.get("user-agent", "").lower()
        self._text_events: dict[tuple[int, str], EventTemplate] = {}  # (choice, delta field)

    def submit(self) -> list[AsyncIterator[GenerationChunk]]:
        streams: list[AsyncIterator[GenerationChunk]] = []
        try:
            for index, (sampling, choice) in enumerate(
                zip(self.prepared.sampling, self.choices, strict=True)
            ):
                generation = GenerationRequest(
                    f"{self.id}-{index}",
                    self.prepared.prompt_ids,
                    sampling,
                    guide=choice.guide,
                    images=self.prepared.images,
                )
                streams.append(self.served.engine.generate(generation))
        except BaseException:
            for stream in streams:
                asyncio.get_running_loop().create_task(stream.aclose())
            raise
        return streams

    def _take(self, index: int, chunk: GenerationChunk) -> ChoiceState:
        self.accounting.token_arrived(chunk)
        choice = self.choices[index]
        choice.text += chunk.text
        choice.tokens = chunk.completion_tokens
        if chunk.finish_reason is not None:
            choice.finish_reason, choice.error = chunk.finish_reason, chunk.error
            choice.unavailable = chunk.unavailable
        return choice

    # --- whole responses ---------------------------------------------------------------------

    async def collect(self, streams: list[AsyncIterator[GenerationChunk]]) -> JSONResponse:
        status, error = 200, None
        try:
            async for index, chunk in merge(streams):
                self._take(index, chunk)
            failed = next((c for c in self.choices if c.finish_reason in ("error", "abort")), None)
            if failed is not None:
                failure = generation_failed(failed.error, failed.unavailable)
                status, error = failure.status, failed.error or "generation was aborted"
                raise failure
            response = p.ChatCompletionResponse(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[self._choice(i, c) for i, c in enumerate(self.choices)],
                usage=self._usage(),
            )
            return JSONResponse(response.model_dump(exclude_none=True))
        finally:
            self._record(status, error)

    def _choice(self, index: int, choice: ChoiceState) -> p.ChatChoice:
        content, reasoning, calls = ct.parse_assistant_output(choice.text)
        tool_calls = [p.ResponseToolCall(**call, index=i) for i, call in enumerate(calls)] or None
        message = p.ResponseMessage(
            content=content if content or not tool_calls else None, tool_calls=tool_calls
        )
        if reasoning is not None:
            if self.mistral:
                message.content = [_thinking_chunk(reasoning), {"type": "text", "text": content}]
            else:
                message.reasoning_content = reasoning
        return p.ChatChoice(
            index=index, message=message, finish_reason=_finish_reason(choice, bool(calls))
        )

    def _usage(self) -> p.Usage:
        completion = sum(choice.tokens for choice in self.choices)
        prompt = len(self.prepared.prompt_ids)
        reasoning = sum(choice.guide.reasoning_tokens for choice in self.choices)
        return p.Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            completion_tokens_details=p.CompletionTokensDetails(reasoning_tokens=reasoning),
        )

    # --- streams -----------------------------------------------------------------------------

    async def stream(self, streams: list[AsyncIterator[GenerationChunk]]) -> AsyncIterator[str]:
        status, error = 200, None
        try:
            for index in range(len(self.choices)):
                yield self._chunk(index, p.DeltaMessage(role="assistant", content=""))
            async for index, chunk in merge(streams):
                choice = self._take(index, chunk)
                for event in self._deltas(index, choice.parser.feed(chunk.text)):
                    yield event
                if chunk.finish_reason is None:
                    continue
                for event in self._deltas(index, choice.parser.finish()):
                    yield event
                if chunk.finish_reason in ("error", "abort"):
                    failure = generation_failed(chunk.error, chunk.unavailable)
                    status, error = failure.status, chunk.error or "generation was aborted"
                    yield sse(failure.body())
                    break
                done = p.ChunkChoice(
                    index=index,
                    delta=p.DeltaMessage(),
                    finish_reason=_finish_reason(choice, choice.parser.calls > 0),
                )
                usage = self._usage() if self.mistral and len(self.choices) == 1 else None
                yield sse(self._envelope([done], usage))
            else:
                options = self.body.stream_options
                if options is not None and options.include_usage:
                    yield sse(self._envelope([], self._usage()))
            yield DONE
        except APIError as api_error:
            status, error = api_error.status, api_error.message
            yield sse(api_error.body())
            yield DONE
        except ForgeError as failure:  # e.g. constrained decoding could not go on
            status, error = 500, failure.message
            yield sse(APIError(500, f"generation failed: {error}", "server_error").body())
            yield DONE
        finally:
            if status == 200 and any(c.finish_reason is None for c in self.choices):
                status, error = 499, "client closed the stream"
            self._record(status, error)

    def _deltas(self, index: int, parsed: ParsedDelta) -> list[str]:
        events = []
        if parsed.reasoning:
            if self.mistral:
                delta = p.DeltaMessage(content=[_thinking_chunk(parsed.reasoning)])
                events.append(self._chunk(index, delta))
            else:
                events.append(self._text_event(index, "reasoning_content", parsed.reasoning))
        if parsed.content:
            events.append(self._text_event(index, "content", parsed.content))
        if parsed.tool_calls:
            calls = [p.ResponseToolCall(**call) for call in parsed.tool_calls]
            events.append(self._chunk(index, p.DeltaMessage(tool_calls=calls)))
        return events

    def _text_event(self, index: int, field: str, text: str) -> str:
        """A chunk whose delta is one text field: nearly every token's, so pre-rendered."""
        template = self._text_events.get((index, field))
        if template is None:
            delta = p.DeltaMessage(**{field: HOLE})
            choices = [p.ChunkChoice(index=index, delta=delta)]
            template = self._text_events[index, field] = EventTemplate(self._envelope(choices))
        return template.render(text)

    def _chunk(self, index: int, delta: p.DeltaMessage) -> str:
        return sse(self._envelope([p.ChunkChoice(index=index, delta=delta)]))

    def _envelope(
        self, choices: list[p.ChunkChoice], usage: p.Usage | None = None
    ) -> dict[str, Any]:
        chunk = p.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        data = chunk.model_dump(exclude_none=True)
        for choice in data["choices"]:
            choice.setdefault("finish_reason", None)  # OpenAI sends an explicit null
        return data

    # --- accounting --------------------------------------------------------------------------

    def _record(self, status: int, error: str | None) -> None:
        tools = [tool.model_dump(exclude_none=True) for tool in self.body.tools or []]
        prompt = None
        if self.service.state.settings.log_prompts:
            prompt = {
                "messages": self.prepared.messages,
                "tools": tools,
                "reasoning_effort": self.prepared.reasoning_effort,
            }
        self.accounting.close(
            status,
            error,
            sum(choice.tokens for choice in self.choices),
            [choice.finish_reason or "" for choice in self.choices],
            prompt,
            [choice.text for choice in self.choices],
        )
        if status == 200:  # so /v1/feedback finds the conversation it rates
            caller = getattr(self.request.state, "caller", None)
            self.service.state.recent_completions.remember(
                self.id,
                RecentCompletion(
                    self.served.id,
                    self.served.artifact_ref,
                    self.prepared.messages,
                    tools,
                    [choice.text for choice in self.choices],
                    caller.key_id if caller else None,
                ),
            )


def _thinking_chunk(text: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}


def _finish_reason(choice: ChoiceState, called_tools: bool) -> str | None:
    if called_tools and choice.finish_reason == "stop":
        return "tool_calls"
    return choice.finish_reason


def _label_fields(body: p.ChatCompletionRequest) -> dict[str, set[str]]:
    """The answer's closed-set fields, whose values are a drift signal (monitor.signals)."""
    response_format = body.response_format
    if response_format is None or response_format.json_schema is None:
        return {}
    return enum_fields(response_format.json_schema.schema_)
