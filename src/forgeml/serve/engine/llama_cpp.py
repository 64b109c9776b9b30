"""The llama.cpp engine: a GGUF export decoded by llama-cpp-python, one sequence at a time.

    engine = LlamaCppEngine(Path("model-f16.gguf"), tokenizer, n_ctx=4096, threads=2)

llama.cpp runs the model; everything around it is shared with the transformers engine,
so both behave the same to a client:

- prompts arrive as our token ids (the GGUF's vocabulary is our tokenizer's; checked
  when the model loads), and text is decoded by our tokenizer (`Sequence`), so special
  tokens, stop strings and half characters are handled as everywhere else;
- the next token is picked by `sampling.sample` from llama.cpp's logits: the same
  greedy / temperature / top-p / seed rules and the same `TokenGuide` masking (JSON
  mode, tool calls, reasoning) as the transformers engine. Sampling ourselves instead
  of through llama.cpp's sampler chain (whose Python logits-processor hook copies the
  candidates into a record array per token) keeps one implementation of each rule.

One worker thread owns the `Llama` object and decodes one sequence at a time (llama.cpp
is built for a single stream: ~440 tokens/s for the tiny model on 2 cores, FACTS.md);
others wait in a bounded queue, and `generate` raises `QueueFullError` (429) when it is
full. The KV cache keeps the last sequence, so a prompt that extends it (the next turn
of a chat) only evaluates its new tokens. The cache is f32: llama.cpp's default f16
cache alone moves this model's logits by up to ~0.3, enough to change greedy tokens.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import torch

from forgeml.core.errors import ForgeError, InputError
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.engine.sampling import sample
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.engine.stream import sequence_stream
from forgeml.serve.engine.throughput import TokenRate

log = logging.getLogger("forgeml.serve.engine")
ONE_TOKEN = {None: 1}  # llama.cpp serves no adapters
# Checked at load: the GGUF must split text into the same ids as our tokenizer.
VOCABULARY_PROBE = "The for statement iterates over ORD-12345, 2024-05-01 and $1,234.50 [INST]"


def open_gguf(path: Path, n_ctx: int, threads: int):
    """A `llama_cpp.Llama` over `path` with an f32 KV cache; `n_ctx` 0: the trained context."""
    try:
        import llama_cpp
    except ImportError as error:
        raise ForgeError(
            "the llama.cpp engine needs llama-cpp-python, which is not installed",
            hint="make gguf (builds and installs it; see forgeml/export)",
        ) from error
    if not path.is_file():
        raise InputError(f"no GGUF file at {path}", path=path)
    try:
        return llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
            verbose=False,
        )
    except ValueError as error:  # llama-cpp-python's "Failed to load model from file"
        raise ForgeError(
            f"llama.cpp could not load {path.name}: {error}",
            hint="export the model again with the installed llama-cpp-python",
        ) from error


def check_vocabulary(llm, tokenizer, path: Path) -> None:
    """Fail unless the GGUF tokenizes like `tokenizer` (ids are passed through as they are)."""
    ours = tokenizer.encode(VOCABULARY_PROBE, add_special_tokens=False)
    theirs = llm.tokenize(VOCABULARY_PROBE.encode(), add_bos=False, special=True)
    if llm.n_vocab() < len(tokenizer) or ours != theirs:
        raise ForgeError(
            f"{path.name} does not use the tokenizer it is served with "
            f"({llm.n_vocab()} vs {len(tokenizer)} tokens; a probe text gives different ids)",
            hint="serve the GGUF with the tokenizer of the model it was exported from",
        )


class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(
        self,
        gguf_path: Path,
        tokenizer,
        *,
        n_ctx: int = 0,
        threads: int = 1,
        max_waiting: int = 256,
    ) -> None:
        self.llm = open_gguf(gguf_path, n_ctx, threads)
        from llama_cpp import llama_get_logits_ith  # importable: open_gguf succeeded

        self._logits_ith = llama_get_logits_ith
        check_vocabulary(self.llm, tokenizer, gguf_path)
        self.max_context = int(self.llm.n_ctx())
        self.max_waiting = max_waiting
        self.eos_token_ids = {int(self.llm.token_eos())}
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(int(tokenizer.eos_token_id))
        self._backend = tokenizer.backend_tokenizer
        self._vocab = int(self.llm.n_vocab())
        # Recurrent state cannot be cut back to a prefix: such models re-read every prompt.
        self._reuse_prefix = not (
            getattr(self.llm, "_is_recurrent", False) or getattr(self.llm, "_is_hybrid", False)
        )
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._wakeup = threading.Condition()
        self._running: Sequence | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rate = TokenRate()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="forgeml-llama-cpp", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def stats(self) -> EngineStats:
        return EngineStats(
            waiting=len(self._waiting),
            running=int(self._running is not None),
            tokens_per_second=self._rate.per_second(),
        )

    # --- the event-loop side ----------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if request.adapter is not None:
            raise InputError("the llama.cpp engine does not serve LoRA adapters", field="model")
        if self._thread is None or self._loop is None:
            raise RuntimeError("the engine is not started: await engine.start() first")
        sequence = Sequence(request, self._backend, self.eos_token_ids)
        sequence.outbox = queue = asyncio.Queue()
        with self._wakeup:
            idle = self._running is None and not self._waiting
            if not idle and len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {len(self._waiting)} requests are waiting",
                    hint="retry after a short wait",
                )
            self._waiting.append(sequence)
            self._wakeup.notify()
        return sequence_stream(sequence, queue, self._wakeup)

    def _send(self, sequence: Sequence, chunk: GenerationChunk) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(sequence.outbox.put_nowait, chunk)

    # --- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wakeup:
                    while not self._stopping and not self._waiting:
                        self._wakeup.wait()
                    if self._stopping:
                        break
                    self._running = self._waiting.popleft()
                sequence = self._running
                try:
                    self._decode(sequence)
                except Exception as error:  # keep serving: fail the request, not the server
                    log.exception("llama.cpp decoding failed")
                    self.llm.reset()  # the cache may be half written
                    if sequence.finish_reason is None:
                        self._send(
                            sequence, sequence.fail("error", f"{type(error).__name__}: {error}")
                        )
                finally:
                    self._running = None
        with self._wakeup:
            left, self._waiting = list(self._waiting), collections.deque()
        for sequence in left:
            self._send(sequence, sequence.fail("abort", "the server is shutting down"))

    def _decode(self, sequence: Sequence) -> None:
        """Prefill, then sample and feed back one token at a time until the sequence ends."""
        if sequence.aborted:
            self._send(sequence, sequence.fail("abort"))
            return
        prompt = sequence.prompt_ids
        if not prompt or len(prompt) >= self.max_context:
            message = f"the prompt has {len(prompt)} tokens; the context is {self.max_context}"
            self._send(sequence, sequence.fail("error", message))
            return
        self._prefill(prompt)
        while True:
            if self._stopping or sequence.aborted:
                self._send(sequence, sequence.fail("abort"))
                return
            token = self._next_token(sequence)
            chunk = sequence.append(token)
            self._rate.record(ONE_TOKEN)
            self._send(sequence, chunk)
            if chunk.finish_reason is not None:
                return
            if self.llm.n_tokens >= self.max_context:  # max_tokens within the context prevents it
                self._send(sequence, sequence.fail("length"))
                return
            self.llm.eval([token])

    def _prefill(self, prompt: list[int]) -> None:
        """Evaluate the prompt, keeping the cached tokens it starts with."""
        llm = self.llm
        keep = 0
        if self._reuse_prefix and llm.n_tokens:
            cached = llm.input_ids[: min(llm.n_tokens, len(prompt))]
            differ = np.flatnonzero(cached != np.asarray(prompt[: len(cached)]))
            keep = int(differ[0]) if len(differ) else len(cached)
            keep = min(keep, len(prompt) - 1)  # the last prompt token is run for its logits
        else:
            llm.reset()
        llm.n_tokens = keep  # eval() drops cached positions from here on
        llm.eval(prompt[keep:])

    def _next_token(self, sequence: Sequence) -> int:
        pointer = self._logits_ith(self.llm.ctx, -1)  # the last position's logits
        logits = np.ctypeslib.as_array(pointer, shape=(self._vocab,))
        if sequence.greedy and sequence.guide is None:
            return int(logits.argmax())  # the common case, without a tensor per token
        return sample(torch.from_numpy(logits.copy())[None], [sequence])[0]  # guides mask it
