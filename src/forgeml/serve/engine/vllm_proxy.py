"""The vLLM engine: generation forwarded to a vLLM server over its OpenAI HTTP API.

    engine = VllmProxyEngine(model_dir, url="http://gpu-host:8000")            # running
    engine = VllmProxyEngine(model_dir, command="/opt/vllm/bin/vllm", ...)     # child

forgeml still renders prompts, tokenizes, parses reasoning and tool calls and does the
accounting; vLLM only continues token ids. Each request becomes one streaming
`POST /v1/completions` with the prompt as token ids (exactly what our template
rendered, special tokens included) and vLLM's extensions that make its output what
our chat layer reads: `skip_special_tokens: false` (reasoning and tool calls are split
on control tokens), `return_token_ids` (exact token counts), `ignore_eos`,
`stop_token_ids`, and `structured_outputs.grammar` for a constrained request (see
vllm_grammar.py for what carries over and what does not).

vLLM batches and queues on its own; this side only bounds how many requests it has in
flight (`max_in_flight`, beyond which `generate` raises `QueueFullError`: 429) and
closes the HTTP stream when a client goes away, which makes vLLM abort the request.
`stats()` reports requests in flight as running: vLLM's own queue is not visible here.

With `url`, the server must serve this model with the same tokenizer (token ids are
passed through); with `command`, forgeml starts `vllm serve` on the model directory
(vllm_process.py) and stops it with the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from forgeml.core.errors import ForgeError, InputError
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.engine.throughput import TokenRate
from forgeml.serve.engine.vllm_grammar import completion_grammar
from forgeml.serve.engine.vllm_process import VllmProcess, free_port, healthy, serve_command

log = logging.getLogger("forgeml.serve.engine")
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


class VllmProxyEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        model_dir: Path,
        *,
        url: str | None = None,
        command: str | None = None,
        args: Sequence[str] = (),
        api_key: str | None = None,
        served_name: str = "forgeml",
        log_path: Path | None = None,
        start_timeout: float = 600.0,
        max_in_flight: int = 288,
    ) -> None:
        if (url is None) == (command is None):
            raise ForgeError(
                "the vLLM engine needs exactly one of serving.vllm_url (a running vLLM "
                "server) and serving.vllm_command (the `vllm` executable to start one)",
                hint="e.g. `serving: {engine: vllm, vllm_command: /opt/vllm/bin/vllm}` in "
                "forgeml.yaml",
            )
        self.model_dir = model_dir
        self.max_context = _trained_context(model_dir)  # until the server says its own
        self.max_in_flight = max_in_flight
        self.start_timeout = start_timeout
        self.url = url.rstrip("/") if url else None
        self.process: VllmProcess | None = None
        self.served_name = served_name
        if command is not None:
            self._port = free_port()
            self.url = f"http://127.0.0.1:{self._port}"
            self.process = VllmProcess(
                serve_command(command, model_dir, self._port, served_name, list(args)),
                log_path or Path("vllm.log"),
            )
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.AsyncClient | None = None
        self._in_flight = 0
        self._rate = TokenRate()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            # No read timeout: a long completion streams for as long as it takes.
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=self.max_in_flight),
        )
        try:
            if self.process is not None:
                self.process.start()
                await self.process.wait_ready(self._client, self.start_timeout)
            elif not await healthy(self._client):
                raise ForgeError(
                    f"no vLLM server answers at {self.url}/health",
                    hint="start it first, or set serving.vllm_command so forgeml starts one",
                )
            await self._find_model()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.process is not None:
            await self.process.stop()

    async def _find_model(self) -> None:
        """The model name to send (the one the server serves) and its context length."""
        response = await self._client.get("/v1/models")
        if response.status_code != 200:
            raise ForgeError(
                f"{self.url}/v1/models answered {response.status_code}: {_error_text(response)}",
                hint="if the server needs an API key, set serving.vllm_api_key",
            )
        models = response.json().get("data", [])
        chosen = [m for m in models if m.get("id") == self.served_name] or models
        if len(chosen) != 1:
            names = ", ".join(str(m.get("id")) for m in models) or "none"
            raise ForgeError(
                f"cannot tell which model of {self.url} to use for {self.served_name} "
                f"(it serves: {names})",
                hint="point serving.vllm_url at a vLLM server that serves this one model",
            )
        self.served_name = chosen[0]["id"]
        # vLLM says max_model_len; a forgeml (or Mistral-style) server max_context_length.
        context = chosen[0].get("max_model_len") or chosen[0].get("max_context_length")
        if context:
            self.max_context = int(context)

    def stats(self) -> EngineStats:
        return EngineStats(
            waiting=0,
            running=self._in_flight,
            tokens_per_second=self._rate.per_second(),
        )

    # --- generation -------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if request.adapter is not None:
            raise InputError("the vLLM engine does not serve LoRA adapters yet", field="model")
        if self._client is None:
            raise RuntimeError("the engine is not started: await engine.start() first")
        body = self._body(request)  # a guide vLLM cannot enforce fails here, before any work
        if self._in_flight >= self.max_in_flight:
            raise QueueFullError(
                f"the server is busy: {self._in_flight} requests are in flight",
                hint="retry after a short wait",
            )
        self._in_flight += 1
        return _ProxyStream(self._stream(request, body), self._release)

    def _release(self) -> None:
        self._in_flight -= 1

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.served_name,
            "prompt": list(request.prompt_ids),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": sampling.ignore_eos,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "return_token_ids": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.stop_token_ids:
            body["stop_token_ids"] = list(sampling.stop_token_ids)
        grammar = completion_grammar(request.guide)
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        return body

    async def _stream(
        self, request: GenerationRequest, body: dict[str, Any]
    ) -> AsyncIterator[GenerationChunk]:
        prompt_tokens = len(request.prompt_ids)
        completion_tokens = 0
        finished: GenerationChunk | None = None

        def failed(message: str) -> GenerationChunk:
            return GenerationChunk(
                text="",
                finish_reason="error",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                error=f"vLLM: {message}",
            )

        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    yield failed(f"{response.status_code} {_error_text(response)}")
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event or event.get("object") == "error":
                        yield failed(_event_error(event))
                        return
                    for choice in event.get("choices") or []:
                        # Without return_token_ids (not vLLM?), count an event as a token.
                        token_ids = choice.get("token_ids")
                        count = len(token_ids) if token_ids is not None else 1
                        completion_tokens += count
                        self._count(count)
                        chunk = GenerationChunk(
                            text=choice.get("text") or "",
                            token_ids=list(token_ids or []),
                            prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens,
                        )
                        reason = choice.get("finish_reason")
                        if reason is None:
                            yield chunk
                        else:  # held until the usage event that may follow
                            chunk.finish_reason = FINISH_REASONS.get(reason, "stop")
                            finished = chunk
                    if usage := event.get("usage"):  # the server's count is the true one
                        completion_tokens = int(usage.get("completion_tokens", completion_tokens))
        except httpx.HTTPError as error:
            yield failed(f"cannot reach {self.url}: {type(error).__name__}: {error}")
            return
        if finished is None:
            yield failed("the stream ended before the completion did")
            return
        finished.completion_tokens = completion_tokens
        yield finished

    def _count(self, tokens: int) -> None:
        self._rate.record({None: tokens})


class _ProxyStream:
    """One request's chunks; closing it early closes the HTTP stream (vLLM aborts).

    A class around the generator so that the in-flight slot taken by `generate` is given
    back however the stream ends, even if it is closed before it is ever iterated.
    """

    def __init__(self, chunks: AsyncIterator[GenerationChunk], release) -> None:
        self._chunks = chunks
        self._release = release
        self._open = True

    def __aiter__(self) -> _ProxyStream:
        return self

    async def __anext__(self) -> GenerationChunk:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self._done()
        await self._chunks.aclose()

    def _done(self) -> None:
        if self._open:
            self._open = False
            self._release()

    def __del__(self) -> None:
        self._done()


def _trained_context(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 2048
    text = config.get("text_config") or config
    return int(text.get("max_position_embeddings") or 2048)


def _error_text(response: httpx.Response) -> str:
    try:
        return _event_error(response.json())
    except ValueError:
        return response.text[:500]


def _event_error(event: dict[str, Any]) -> str:
    error = event.get("error", event)
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
