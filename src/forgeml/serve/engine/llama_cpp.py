"""The llama.cpp engine: a GGUF export decoded by llama.cpp, many sequences at once.

    engine = LlamaCppEngine(Path("model-f16.gguf"), tokenizer, slots=32, threads=2)

llama.cpp runs the model; everything around it is shared with the transformers engine,
so both behave the same to a client:

- prompts arrive as our token ids (the GGUF's vocabulary is our tokenizer's; checked
  when the model loads), and text is decoded by our tokenizer (`Sequence`), so special
  tokens, stop strings and half characters are handled as everywhere else;
- the next token is picked from llama.cpp's logits by the same greedy / temperature /
  top-p / seed rules and the same `TokenGuide` masking (JSON mode, tool calls,
  reasoning) as the transformers engine (`sampling.sample`). Sampling ourselves instead
  of through llama.cpp's sampler chain keeps one implementation of each rule.

Continuous batching, as `llama-server` does it: every admitted request holds a slot
(llama_cpp_slots.py: a sequence id with its own part of the KV cache), and one worker
thread runs one `llama_decode` per step over the next token of every decoding slot
plus chunks of the prompts being read, so a new request starts while others decode.
Requests beyond the slots wait in a bounded queue, and `generate` raises
`QueueFullError` (429) when it is full. A slot keeps its cache after its request ends,
so a prompt that extends one (the next turn of a chat) only evaluates its new tokens.

A vision-language export (`mmproj` beside the GGUF) takes images: each is encoded by
llama.cpp's own vision code when its request is admitted (llama_cpp_images.py), and
its embeddings are read into the slot in place of the image's span of the prompt, in
chunks like prompt text. Encoding runs on the worker thread, so other slots pause for
it (as in llama-server).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forgeml.core.errors import ForgeError, InputError
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.engine.llama_cpp_images import ImageReader
from forgeml.serve.engine.llama_cpp_slots import DecodeError, Feed, SlotContext, load_llama_cpp
from forgeml.serve.engine.numpy_sampling import sample
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.engine.stream import sequence_stream
from forgeml.serve.engine.throughput import TokenRate

log = logging.getLogger("forgeml.serve.engine")
ONE_TOKEN = {None: 1}  # llama.cpp serves no adapters
# Checked at load: the GGUF must split text into the same ids as our tokenizer.
VOCABULARY_PROBE = "The for statement iterates over ORD-12345, 2024-05-01 and $1,234.50 [INST]"


def open_gguf(path: Path, n_ctx: int, threads: int):
    """llama-cpp-python's own `Llama` over `path` (f32 KV cache): the reference the
    engine's outputs are compared with in tests and benchmarks."""
    load_llama_cpp()  # a clear error when it is missing
    import llama_cpp  # the whole package: its high-level Llama

    return llama_cpp.Llama(
        str(path),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        verbose=False,
    )


def check_vocabulary(slots: SlotContext, tokenizer, path: Path) -> None:
    """Fail unless the GGUF tokenizes like `tokenizer` (ids are passed through as they are)."""
    ours = tokenizer.encode(VOCABULARY_PROBE, add_special_tokens=False)
    if slots.n_vocab < len(tokenizer) or ours != slots.tokenize(VOCABULARY_PROBE):
        raise ForgeError(
            f"{path.name} does not use the tokenizer it is served with "
            f"({slots.n_vocab} vs {len(tokenizer)} tokens; a probe text gives different ids)",
            hint="serve the GGUF with the tokenizer of the model it was exported from",
        )


@dataclass
class Running:
    """A sequence holding a slot: the prompt tokens still to read, or the token to feed."""

    sequence: Sequence
    slot: int
    position: int  # tokens in the slot's cache
    unread: list[int]  # prompt tokens not yet evaluated
    next_token: int | None = None  # sampled, not yet evaluated
    # Each image's first prompt position and its embeddings, which fill the positions
    # from there (the image's tokens and the breaks between their rows).
    images: list[tuple[int, np.ndarray]] = field(default_factory=list)


class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(
        self,
        gguf_path: Path,
        tokenizer,
        *,
        n_ctx: int = 0,
        threads: int = 1,
        slots: int = 32,
        max_waiting: int = 256,
        batch_tokens: int = 512,
        mmproj: Path | None = None,
    ) -> None:
        self.slots = SlotContext(
            gguf_path, slots=slots, slot_context=n_ctx, threads=threads, batch_tokens=batch_tokens
        )
        self.images: ImageReader | None = None
        try:
            check_vocabulary(self.slots, tokenizer, gguf_path)
            if mmproj is not None:
                self.images = ImageReader(mmproj, self.slots, threads)
                self._image_ids = image_marker_ids(tokenizer)
        except ForgeError:
            self.slots.close()
            raise
        self.takes_images = self.images is not None
        self.max_context = self.slots.slot_context
        self.max_waiting = max_waiting
        self.eos_token_ids = {self.slots.eos_token_id}
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(int(tokenizer.eos_token_id))
        self._backend = tokenizer.backend_tokenizer
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._wakeup = threading.Condition()
        self._running: list[Running] = []
        self._free = set(range(self.slots.slots))
        # Requests taken off the queue for a free slot whose images are being encoded
        # (outside the lock): those slots count as taken for the queue's bound.
        self._admitting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: list[tuple[Sequence, GenerationChunk]] = []  # the worker's, per step
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rate = TokenRate()

    # --- lifecycle ------------------------------------------------------------------------

    def __del__(self) -> None:
        # The vision context points into the text model: free it before the slots go.
        if getattr(self, "images", None) is not None:
            self.images.close()

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
            running=len(self._running),
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
            # Requests beyond the free slots wait; at most max_waiting of them.
            free = len(self._free) - self._admitting
            if len(self._waiting) + 1 - free > self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {len(self._waiting)} requests are waiting",
                    hint="retry after a short wait",
                )
            self._waiting.append(sequence)
            self._wakeup.notify()
        return sequence_stream(sequence, queue, self._wakeup)

    def _send(self, sequence: Sequence, chunk: GenerationChunk) -> None:
        """Queue a chunk for its stream; `_flush` hands a step's chunks over at once."""
        self._outgoing.append((sequence, chunk))

    def _flush(self) -> None:
        """Everything this step produced, to the event loop in one call: one wake-up of
        the loop per step instead of one per sequence (32 self-pipe writes a step at 32
        streams, each taking a core from the ggml threads on a small machine)."""
        if not self._outgoing:
            return
        outgoing, self._outgoing = self._outgoing, []
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_deliver, outgoing)

    # --- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._admit():
                self._drop_aborted()
                if self._running:
                    try:
                        self._step()
                    except Exception as error:  # keep serving: fail the batch, not the server
                        log.exception("llama.cpp engine step failed")
                        self._fail_running(f"{type(error).__name__}: {error}")
                self._flush()
        finally:
            with self._wakeup:
                left, self._waiting = list(self._waiting), collections.deque()
            for sequence in left + [running.sequence for running in self._running]:
                self._send(sequence, sequence.fail("abort", "the server is shutting down"))
            self._running = []
            self._flush()

    def _admit(self) -> bool:
        """Give waiting requests free slots (sleeping while there is nothing to do);
        False once the engine stops."""
        with self._wakeup:
            while not self._stopping and not self._waiting and not self._running:
                self._wakeup.wait()
            if self._stopping:
                return False
            admitted = []
            while self._waiting and len(admitted) < len(self._free):
                admitted.append(self._waiting.popleft())
            self._admitting = len(admitted)
        # Outside the lock: encoding images takes a while, and new requests must not wait
        # on it to be queued (or refused) by the event loop.
        for sequence in admitted:
            self._start(sequence)
        return True

    def _start(self, sequence: Sequence) -> None:
        """Claim a slot for `sequence`, or fail it; either way it is no longer admitting."""
        running = None
        try:
            running = self._prepare(sequence)
        finally:
            with self._wakeup:
                if running is not None:
                    self._free.discard(running.slot)
                    self._running.append(running)
                self._admitting -= 1

    def _prepare(self, sequence: Sequence) -> Running | None:
        prompt = sequence.prompt_ids
        if sequence.aborted:
            self._send(sequence, sequence.fail("abort"))
            return None
        if not prompt or len(prompt) >= self.max_context:
            message = f"the prompt has {len(prompt)} tokens; the context is {self.max_context}"
            self._send(sequence, sequence.fail("error", message))
            return None
        try:
            images = self._read_images(sequence)
        except (InputError, RuntimeError) as error:
            self._send(sequence, sequence.fail("error", str(error)))
            return None
        reusable = images[0][0] if images else None
        slot, keep = self.slots.claim(prompt, self._free, reusable)
        return Running(sequence, slot, keep, list(prompt[keep:]), None, images)

    def _read_images(self, sequence: Sequence) -> list[tuple[int, np.ndarray]]:
        """Where each of the request's images sits in the prompt, and its embeddings."""
        pixels = sequence.request.images
        if not pixels:
            return []
        if self.images is None:
            raise InputError("this GGUF export was served without its vision tower (mmproj)")
        spans = image_spans(sequence.prompt_ids, *self._image_ids)
        if len(spans) != len(pixels):
            raise InputError(f"{len(spans)} images in the prompt for {len(pixels)} images")
        return [
            (start, self.images.embeddings(image, length))
            for (start, length), image in zip(spans, pixels, strict=True)
        ]

    def _release(self, running: Running) -> None:
        self._running.remove(running)
        self._free.add(running.slot)

    def _fail_running(self, message: str) -> None:
        for running in list(self._running):
            self.slots.truncate(running.slot, 0)  # the cache may be half written
            if running.sequence.finish_reason is None:
                self._send(running.sequence, running.sequence.fail("error", message))
            self._release(running)

    def _drop_aborted(self) -> None:
        for running in [r for r in self._running if r.sequence.aborted]:
            self._send(running.sequence, running.sequence.fail("abort"))
            self._release(running)

    def _step(self) -> None:
        """One llama_decode over every slot's next token and as much prompt as fits."""
        plan = self._plan_batch()
        feeds = [feed for _, feed in plan]
        try:
            rows = self.slots.decode(feeds)
        except DecodeError as error:  # keep serving: fail these requests, not the server
            log.error("llama.cpp decoding failed: %s", error)
            self._fail_running(str(error))
            return
        for running, feed in plan:
            running.position += len(feed.tokens)
        # Logits rows come back in the order of the feeds that asked for them.
        sampled = [running for running, feed in plan if feed.logits]
        if sampled:
            self._take_tokens(sampled, rows)

    def _plan_batch(self) -> list[tuple[Running, Feed]]:
        """Decoding slots first (one token each), then prompt chunks in arrival order."""
        budget = self.slots.batch_tokens
        plan: list[tuple[Running, Feed]] = []
        for running in self._running:
            if running.next_token is not None:
                plan.append(
                    (running, Feed(running.slot, [running.next_token], running.position, True))
                )
                running.next_token = None
                budget -= 1
        for running in self._running:
            if not running.unread or budget <= 0:
                continue
            feed = prompt_feed(running, budget)
            plan.append((running, feed))
            budget -= len(feed.tokens)
        return plan

    def _take_tokens(self, sampled: list[Running], rows: np.ndarray) -> None:
        """Pick each sampled sequence's next token from its logits row and send it on."""
        tokens = pick_tokens(rows, [running.sequence for running in sampled])
        for running, token in zip(sampled, tokens, strict=True):
            chunk = running.sequence.append(token)
            self._rate.record(ONE_TOKEN)
            if chunk.finish_reason is None and running.position >= self.max_context:
                # The slot's cache is full (max_tokens within the context prevents it).
                self._send(running.sequence, chunk)
                chunk = running.sequence.fail("length")
            self._send(running.sequence, chunk)
            if chunk.finish_reason is not None:
                self._release(running)
            else:
                running.next_token = token


def _deliver(outgoing: list[tuple[Sequence, GenerationChunk]]) -> None:
    for sequence, chunk in outgoing:
        sequence.outbox.put_nowait(chunk)


def prompt_feed(running: Running, budget: int) -> Feed:
    """The next chunk of a prompt, at most `budget` positions: text up to the next image,
    or the part of an image's embeddings that fits."""
    start = running.position
    for image_start, embeddings in running.images:
        if image_start <= start < image_start + len(embeddings):
            offset = start - image_start
            count = min(budget, len(embeddings) - offset)
            tokens, running.unread = running.unread[:count], running.unread[count:]
            return Feed(running.slot, tokens, start, False, embeddings[offset : offset + count])
        if image_start > start:
            budget = min(budget, image_start - start)
            break
    chunk, running.unread = running.unread[:budget], running.unread[budget:]
    return Feed(running.slot, chunk, start, not running.unread)


def image_marker_ids(tokenizer) -> tuple[int, int]:
    """The ids of `[IMG]` and `[IMG_END]` in the served tokenizer."""
    from forgeml.models.image_inputs import vision_token_ids

    image, _, end = vision_token_ids(tokenizer)
    return image, end


def image_spans(prompt: list[int], image_id: int, end_id: int) -> list[tuple[int, int]]:
    """(start, length) of each image in a prompt the chat layer expanded: from an image's
    first `[IMG]` up to its `[IMG_END]` (which stays a token)."""
    spans, position = [], 0
    while image_id in prompt[position:]:
        start = prompt.index(image_id, position)
        if end_id not in prompt[start:]:
            raise InputError("an image in the prompt has no [IMG_END]")
        end = prompt.index(end_id, start)
        spans.append((start, end - start))
        position = end + 1
    return spans


def pick_tokens(rows: np.ndarray, sequences: list[Sequence]) -> list[int]:
    """The next token of each row: argmax where greedy and unguided (no copy), else
    numpy_sampling (temperature, top-p, seeds, guides)."""
    if all(sequence.greedy and sequence.guide is None for sequence in sequences):
        return rows.argmax(axis=1).tolist()
    return sample(rows, sequences)
