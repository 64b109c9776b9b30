"""The default engine: a transformers model decoding many requests in one batch.

One worker thread owns the model. Its loop:

    admit waiting requests (up to max_batch_size)
    one forward pass for every running sequence     -> sample a token per row
      (with `mistral4` the admitted prompts are prefilled in that same pass;
       otherwise they are prefilled together first, then merged)
    hand each new piece of text to its request      -> one loop.call_soon_threadsafe
    drop finished or abandoned rows, trim the cache

so requests join and leave between decode steps (continuous batching) and the event
loop never waits on the model: it only reads asyncio queues. For `mistral4` the pass
is mla_step.py's lean forward (absorbed MLA attention, no per-step cache copy), not
`model(...)`: the same logits at a fraction of the cost on CPU. On 2 CPU cores one
batched step costs little more than a single-sequence step (the weights are read
once per step either way), which is where the throughput comes from (FACTS.md:
~68 tokens/s one at a time, ~830 tokens/s as one static batch of 32).

LoRA adapters load into the same model (`add_adapter`, lora.py): a request naming one
decodes in the same batch as everyone else's, its rows getting the adapter's `B @ A`
in each adapted layer. Loading and unloading rewrite the model, so they run on the
worker thread too, between two steps.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path

import torch

from forgeml.core.errors import InputError
from forgeml.models.vision import is_vision_language, text_view
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.engine.batch import DecodeBatch, prefill
from forgeml.serve.engine.lora import LoraAdapters
from forgeml.serve.engine.sampling import sample
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.engine.stream import sequence_stream
from forgeml.serve.engine.throughput import TokenRate
from forgeml.serve.engine.vision import ImageEncoder

log = logging.getLogger("forgeml.serve.engine")


class TransformersEngine(Engine):
    name = "transformers"
    serves_adapters = True  # LoRA adapters load into its model (add_adapter)

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_batch_size: int = 32,
        max_waiting: int = 256,
        max_prefill_tokens: int = 4096,
    ) -> None:
        # A vision-language model decodes with its text model; images enter at prefill.
        self.images = ImageEncoder(model.eval()) if is_vision_language(model.config) else None
        self.takes_images = self.images is not None
        model = text_view(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_context = int(model.config.max_position_embeddings)
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.max_prefill_tokens = max_prefill_tokens
        eos = model.config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._backend = tokenizer.backend_tokenizer
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._wakeup = threading.Condition()
        self._batch: DecodeBatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rate = TokenRate()  # tokens per adapter (None = the base), for /metrics
        self.adapters = LoraAdapters(self.model)
        self._adapters_open: set[str] = set()  # adapters requests may name (under _wakeup)
        self._jobs: list[tuple[Callable[[], None], Future[None]]] = []  # for the worker

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.start_worker()

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_worker)

    def start_worker(self) -> None:
        """Start the decoding thread. `start` does this from an event loop; a host with no
        event loop (process.py's child) calls it directly and overrides `_send`."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="forgeml-engine", daemon=True)
        self._thread.start()

    def stop_worker(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def stats(self) -> EngineStats:
        """The whole engine: requests for its adapters count too (they share the batch)."""
        return self._stats(lambda adapter: True)

    def adapter_stats(self, adapter: str) -> EngineStats:
        """The requests for one adapter only."""
        return self._stats(lambda name: name == adapter)

    def _stats(self, counted: Callable[[str | None], bool]) -> EngineStats:
        batch = self._batch
        running = list(batch.sequences) if batch is not None else []
        return EngineStats(
            waiting=sum(counted(s.request.adapter) for s in list(self._waiting)),
            running=sum(counted(s.request.adapter) for s in running),
            tokens_per_second=self._rate.per_second(counted),
        )

    # --- LoRA adapters (blocking: call these from a thread, never the event loop) ----------

    def add_adapter(self, name: str, directory: Path) -> None:
        """Load a PEFT LoRA directory over this engine's model; requests may then name it.

        Decoding pauses while the weights go in (a LoRA file is ~1% of the model).
        """

        if self.images is not None:
            raise InputError(
                "LoRA adapters are not served over vision-language models yet",
                hint="merge the adapter into the model (fine-tune with --lora --merge)",
            )

        def load() -> None:
            if name not in self.adapters.names:
                self.adapters.load(name, directory)
            with self._wakeup:
                self._adapters_open.add(name)

        self._on_worker(load)

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter; its requests still waiting or running end with `abort`."""
        self._on_worker(lambda: self._remove_adapter(name))

    def _on_worker(self, job: Callable[[], None]) -> None:
        """Run `job` on the worker thread between two steps (it owns the model) and wait;
        with no worker running, run it here."""
        future: Future[None] | None = None
        with self._wakeup:
            worker = self._thread
            if worker is not None and not self._stopping:
                future = Future()
                self._jobs.append((job, future))
                self._wakeup.notify()
        if future is not None:
            future.result()  # the job's error, if any, is raised here
            return
        if worker is not None:
            worker.join()  # stopping: run after its last step
        job()

    def _remove_adapter(self, name: str) -> None:
        with self._wakeup:
            self._adapters_open.discard(name)
            dropped = [s for s in self._waiting if s.request.adapter == name]
            self._waiting = collections.deque(s for s in self._waiting if s.request.adapter != name)
        batch = self._batch
        if batch is not None:
            dropped += [s for s in batch.sequences if s.request.adapter == name]
            rows = [row for row, s in enumerate(batch.sequences) if s.request.adapter != name]
            if not rows:
                self._batch = None
            elif len(rows) < len(batch):
                batch.keep(rows)
        self.adapters.unload(name)
        self._send([(s, s.fail("abort", "the adapter was unloaded")) for s in dropped])

    # --- the event-loop side ----------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if self._thread is None or self._loop is None:
            raise RuntimeError("the engine is not started: await engine.start() first")
        sequence = Sequence(request, self._backend, self.eos_token_ids)
        sequence.outbox = queue = asyncio.Queue()
        self.enqueue(sequence)
        return sequence_stream(sequence, queue, self._wakeup)

    def enqueue(self, sequence: Sequence) -> None:
        """Queue a sequence for the worker; raises if its adapter is not loaded or the
        queue is full."""
        request = sequence.request
        with self._wakeup:
            if request.adapter is not None and request.adapter not in self._adapters_open:
                raise InputError(
                    f"the adapter {request.adapter!r} is not loaded in this engine", field="model"
                )
            # Waiting requests that free batch slots will take at the next step do not
            # count against max_waiting: only those that would really queue do.
            running = len(self._batch) if self._batch is not None else 0
            if len(self._waiting) >= self.max_waiting + max(0, self.max_batch_size - running):
                raise QueueFullError(
                    f"the server is busy: {len(self._waiting)} requests are waiting",
                    hint="retry after a short wait",
                )
            self._waiting.append(sequence)
            self._wakeup.notify()

    @staticmethod
    def _deliver(outputs: list[tuple[Sequence, GenerationChunk]]) -> None:
        for sequence, chunk in outputs:
            sequence.outbox.put_nowait(chunk)

    def _send(self, outputs: list[tuple[Sequence, GenerationChunk]]) -> None:
        if outputs and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, outputs)

    # --- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wakeup:
                    while self._idle():
                        self._wakeup.wait()
                    if self._stopping:
                        break
                    jobs, self._jobs = self._jobs, []
                # Before admitting: a removed adapter's requests must never reach a forward.
                self._run_jobs(jobs)
                with self._wakeup:
                    admitted = self._take_waiting()
                try:
                    self._advance(admitted)
                except Exception as error:  # keep serving: fail the batch, not the server
                    log.exception("engine step failed")
                    self._fail_all(admitted, f"{type(error).__name__}: {error}")
        self._fail_all([], "the server is shutting down", reason="abort")
        with self._wakeup:
            jobs, self._jobs = self._jobs, []
        self._run_jobs(jobs)

    def _idle(self) -> bool:
        busy = self._stopping or self._jobs or self._waiting or self._batch is not None
        return not busy

    @staticmethod
    def _run_jobs(jobs: list[tuple[Callable[[], None], Future[None]]]) -> None:
        for job, future in jobs:
            try:
                job()
            except Exception as error:  # the caller waiting on the future gets it
                future.set_exception(error)
            else:
                future.set_result(None)

    def _take_waiting(self) -> list[Sequence]:
        running = len(self._batch) if self._batch is not None else 0
        taken: list[Sequence] = []
        tokens = 0
        while self._waiting and running + len(taken) < self.max_batch_size:
            sequence = self._waiting[0]
            if taken and tokens + len(sequence.prompt_ids) > self.max_prefill_tokens:
                break  # prefill the rest next step, so decoding is not stalled long
            self._waiting.popleft()
            if sequence.aborted:
                self._send([(sequence, sequence.fail("abort"))])
                continue
            taken.append(sequence)
            tokens += len(sequence.prompt_ids)
        return taken

    def _advance(self, admitted: list[Sequence]) -> None:
        """One step of the running batch, prefilling `admitted` in the same forward pass
        where the batch can (mla_step.py); else prefill them first, on their own."""
        batch = self._batch
        if admitted and batch is not None:
            names = self.adapters.row_names(batch.sequences + admitted)
            if batch.can_join(self.adapters.model, names, admitted):
                self._step(admitted)
                return
        if admitted:
            self._admit(admitted)
        if self._batch is not None:
            self._step([])

    def _admit(self, sequences: list[Sequence]) -> None:
        names = self.adapters.row_names(sequences)
        batch, logits = prefill(self.adapters.model, sequences, self.pad_id, names, self.images)
        tokens = sample(logits, batch.sequences)
        batch.last_tokens = torch.tensor(tokens, dtype=torch.long)
        outputs = self._take(batch.sequences, tokens)
        if self._batch is None:
            self._batch = batch
        else:
            self._batch.merge(batch)
        self._send(outputs)  # after the merge: a client that sees a token sees it running
        self._drop_finished()

    def _step(self, joining: list[Sequence]) -> None:
        batch = self._batch
        assert batch is not None
        sequences = batch.sequences + joining
        names = self.adapters.row_names(sequences)
        logits, joined = batch.step(self.adapters.model, names, joining, self.pad_id, self.images)
        tokens = sample(logits, sequences)
        batch.last_tokens = torch.tensor(tokens[: len(batch)], dtype=torch.long)
        outputs = self._take(sequences, tokens)
        if joined is not None:
            joined.last_tokens = torch.tensor(tokens[len(batch) :], dtype=torch.long)
            batch.merge(joined)
        self._send(outputs)
        self._drop_finished()

    def _take(
        self, sequences: list[Sequence], tokens: list[int]
    ) -> list[tuple[Sequence, GenerationChunk]]:
        self._rate.record(collections.Counter(s.request.adapter for s in sequences))
        # Every token is sent, even one that decodes to no text yet (half a character):
        # clients count tokens, and the time to the first token is the first token's.
        return [(s, s.append(token)) for s, token in zip(sequences, tokens, strict=True)]

    def _drop_finished(self) -> None:
        batch = self._batch
        assert batch is not None
        outputs = []
        rows = []
        for row, sequence in enumerate(batch.sequences):
            if sequence.finish_reason is not None:
                continue
            if sequence.aborted:
                outputs.append((sequence, sequence.fail("abort")))
                continue
            rows.append(row)
        self._send(outputs)
        if not rows:
            self._batch = None
        elif len(rows) < len(batch):
            batch.keep(rows)

    def _fail_all(self, admitted: list[Sequence], message: str, reason: str = "error") -> None:
        sequences = list(admitted)
        if self._batch is not None:
            sequences += [s for s in self._batch.sequences if s not in sequences]
            self._batch = None
        if reason == "abort":
            with self._wakeup:
                sequences += list(self._waiting)
                self._waiting.clear()
        self._send([(s, s.fail(reason, message)) for s in sequences if s.finish_reason is None])
