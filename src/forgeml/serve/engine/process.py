"""The transformers engine in a process of its own, behind the same `Engine` interface.

Why: in one process, the HTTP event loop and the decoding thread take turns on Python's
GIL. A decode step is a few hundred short tensor calls, each taking the GIL back when
it returns, so every burst of event-loop work (parsing a request, rendering an SSE
event) stalls decoding. Measured on 2 cores: a thread spending ~35% of a core in Python
cuts the engine at 32 concurrent requests from ~1,100 to ~770 tokens/s, while the same
load in another process costs it nothing. With the engine here, the server's process
keeps only the HTTP work (benchmarks/serve.py).

    parent (the server)                         child (spawned, owns the model)
    ProcessEngine.generate ── ("generate", …) ─>  reader thread -> TransformersEngine.enqueue
    reader thread <──── ("chunks", [...]) ─────  worker thread, once per decode step
      -> loop.call_soon_threadsafe -> each request's asyncio queue

The child's side is process_child.py. One message per decode step carries every row's
new chunk. Constrained decoding runs in the child: a request's `OutputGuide` is rebuilt
there from its `OutputSpec`, over the child's own vocabulary tables, and the
reasoning-token count the chat layer reports comes back with the last chunk. LoRA adapters load into the child's model
(`add_adapter` waits for it).

A message the child cannot handle fails that one request, never the child. If the
child dies anyway (killed, out of memory), every open request ends with an error the
server answers 503, new requests get 503 with Retry-After while a new child starts
(with the same adapters), and `health()` says "restarting" until it is ready.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import multiprocessing
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from forgeml.core.errors import ForgeError, InputError
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    EngineUnavailable,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.engine.process_child import child_main
from forgeml.serve.engine.stream import ChunkStream
from forgeml.serve.engine.throughput import TokenRate

log = logging.getLogger("forgeml.serve.engine")

DOWN_HINT = "the engine process is restarting (see the server log); retry in a few seconds"
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between failed restarts, then the last


@dataclass
class _Open:
    """A request the child is decoding (or will): where its chunks go."""

    request: GenerationRequest
    queue: asyncio.Queue[GenerationChunk]
    started: bool = False  # a first chunk arrived: it is in the batch, not waiting


class ProcessEngine(Engine):
    """A `TransformersEngine` over the model in `model_dir`, run in a child process."""

    name = "transformers"
    serves_adapters = True

    def __init__(
        self,
        model_dir: Path,
        tokenizer_dir: Path | None = None,
        *,
        max_batch_size: int = 32,
        max_waiting: int = 256,
        threads: int = 1,
        start_timeout: float = 600.0,
    ) -> None:
        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        # A vision-language model (mistral3): the text model's context, and images.
        self.takes_images = config.get("model_type") == "mistral3"
        text_config = config.get("text_config") or config
        self.max_context = int(text_config.get("max_position_embeddings") or 0)
        self.max_batch_size, self.max_waiting = max_batch_size, max_waiting
        self._options = {
            "model_dir": str(self.model_dir),
            "tokenizer_dir": str(tokenizer_dir or self.model_dir),
            "max_batch_size": max_batch_size,
            "max_waiting": max_waiting,
            "threads": threads,
        }
        self.start_timeout = start_timeout
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # _open, _adapters_open, _jobs
        self._open: dict[str, _Open] = {}
        self._adapters_open: set[str] = set()
        self._adapter_dirs: dict[str, str] = {}  # loaded again into a restarted child
        self._jobs: dict[int, Future[None]] = {}
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._state = "stopped"  # starting, ready, restarting, stopped
        self._down: str = "the engine is not started"  # why it is not ready
        self._restarter: asyncio.Task[None] | None = None
        self._stopping = False
        self._rate = TokenRate()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._process is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._state, self._stopping = "starting", False
        await self._spawn()
        self._state = "ready"

    async def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        parent, child = context.Pipe()
        process = context.Process(
            target=child_main, args=(child, self._options), name="forgeml-engine", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        ready = await asyncio.to_thread(self._await_ready)
        if ready[0] != "ready":
            await asyncio.to_thread(process.join, 10)
            self._process = None
            raise ForgeError(f"the engine process failed to start: {ready[1]}")
        self._reader = threading.Thread(
            target=self._read, name="forgeml-engine-reader", daemon=True
        )
        self._reader.start()

    async def _restart(self) -> None:
        """Start a new child after one died, with the adapters the old one held."""
        attempt = 0
        while not self._stopping:
            try:
                await self._spawn()
            except ForgeError as error:
                delay = RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)]
                log.error("%s; trying again in %.0f s", error, delay)
                self._down = str(error)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            await asyncio.to_thread(self._reload_adapters)
            if not self._stopping:
                self._state = "ready"
                log.warning("the engine process for %s restarted", self.model_dir.name)
            return

    def _reload_adapters(self) -> None:
        with self._lock:
            adapters = dict(self._adapter_dirs)
        for name, directory in adapters.items():
            try:
                self._job("add_adapter", name, directory, check=False)
            except Exception as error:  # requests naming it get "not loaded" (400)
                log.error("adapter %s did not load into the new engine process: %s", name, error)
                with self._lock:
                    self._adapters_open.discard(name)
                    self._adapter_dirs.pop(name, None)

    def _await_ready(self) -> tuple[str, Any]:
        assert self._conn is not None
        if not self._conn.poll(self.start_timeout):
            self._process.kill()
            return ("error", f"no answer in {self.start_timeout:.0f} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return ("error", f"it exited with code {self._process.exitcode}")

    async def stop(self) -> None:
        self._stopping = True
        restarter, self._restarter = self._restarter, None
        if restarter is not None and not restarter.done():
            restarter.cancel()
            try:
                await restarter
            except (asyncio.CancelledError, ForgeError):
                pass
        process = self._process
        self._state, self._down = "stopped", "the engine process stopped"
        if process is None:
            return
        self._post(("stop",))
        await asyncio.to_thread(process.join, 30)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 10)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 10)
        self._process = None

    # --- requests ---------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> ChunkStream:
        if self._loop is None or self._process is None:
            raise RuntimeError("the engine is not started: await engine.start() first")
        if self._state != "ready":
            raise EngineUnavailable(f"cannot generate: {self._down}", hint=DOWN_HINT)
        key = str(next(self._ids))
        queue: asyncio.Queue[GenerationChunk] = asyncio.Queue()
        with self._lock:
            if request.adapter is not None and request.adapter not in self._adapters_open:
                raise InputError(
                    f"the adapter {request.adapter!r} is not loaded in this engine", field="model"
                )
            # The child's own rule counts batch slots free; here every open request counts.
            if len(self._open) >= self.max_batch_size + self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {len(self._open)} requests are open",
                    hint="retry after a short wait",
                )
            self._open[key] = _Open(request, queue)
        guide = request.guide
        spec = (guide.spec, guide.max_tokens) if guide is not None else None
        self._post(
            (
                "generate",
                key,
                request.prompt_ids,
                request.sampling,
                spec,
                request.adapter,
                request.images,
            )
        )
        return ChunkStream(queue, lambda: self.abort(key))

    def abort(self, key: str) -> None:
        with self._lock:
            still_open = key in self._open
        if still_open:
            self._post(("abort", key))

    def stats(self) -> EngineStats:
        return self._stats(lambda adapter: True)

    def health(self) -> str:
        return self._state

    def adapter_stats(self, adapter: str) -> EngineStats:
        return self._stats(lambda name: name == adapter)

    def _stats(self, counted) -> EngineStats:
        with self._lock:
            entries = [entry for entry in self._open.values() if counted(entry.request.adapter)]
        running = sum(entry.started for entry in entries)
        return EngineStats(
            waiting=len(entries) - running,
            running=running,
            tokens_per_second=self._rate.per_second(counted),
        )

    # --- LoRA adapters (blocking: call from a thread) ---------------------------------------

    def add_adapter(self, name: str, directory: Path) -> None:
        self._job("add_adapter", name, str(directory))
        with self._lock:
            self._adapters_open.add(name)
            self._adapter_dirs[name] = str(directory)

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            self._adapters_open.discard(name)
            self._adapter_dirs.pop(name, None)
        self._job("remove_adapter", name)

    def _job(self, kind: str, *args: str, check: bool = True) -> None:
        if check and self._state != "ready":
            what = kind.replace("_", " ")
            raise EngineUnavailable(f"cannot {what}: {self._down}", hint=DOWN_HINT)
        number = next(self._ids)
        future: Future[None] = Future()
        with self._lock:
            self._jobs[number] = future
        self._post(("job", number, kind, args))
        future.result()

    # --- the pipe -----------------------------------------------------------------------------

    def _post(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError, AttributeError):  # the child is gone: the reader says why
            pass

    def _read(self) -> None:
        """The reader thread: hand the child's chunks to the event loop, settle jobs."""
        assert self._conn is not None
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "chunks":
                self._loop.call_soon_threadsafe(self._deliver, message[1])
            elif message[0] == "job":
                _, number, error = message
                with self._lock:
                    future = self._jobs.pop(number)
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self._died()

    def _deliver(self, chunks: list[tuple[str, GenerationChunk, int | None]]) -> None:
        adapters: collections.Counter[str | None] = collections.Counter()
        with self._lock:
            for key, chunk, reasoning_tokens in chunks:
                entry = self._open.get(key)
                if entry is None:
                    continue
                entry.started = True
                adapters[entry.request.adapter] += len(chunk.token_ids)
                if chunk.finish_reason is not None:
                    del self._open[key]
                    if reasoning_tokens is not None and entry.request.guide is not None:
                        entry.request.guide.reasoning_tokens = reasoning_tokens
                entry.queue.put_nowait(chunk)
        self._rate.record(adapters)

    def _died(self) -> None:
        """The reader thread saw the pipe close: fail what was open, start a new child."""
        process = self._process
        code = process.exitcode if process is not None else None
        if process is not None and code is None:
            process.join(5)
            code = process.exitcode
        stopping = self._stopping
        if stopping:
            reason = "the engine process stopped"
        else:
            reason = f"the engine process exited (code {code})"
            log.error("%s; starting a new one", reason)
            self._state = "restarting"
        self._down = reason
        with self._lock:
            jobs, self._jobs = self._jobs, {}
            entries, self._open = list(self._open.values()), {}
        for future in jobs.values():
            future.set_exception(EngineUnavailable(reason, hint=DOWN_HINT))
        failed = GenerationChunk(text="", finish_reason="error", error=reason, unavailable=True)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if entries:
            loop.call_soon_threadsafe(_fail, [entry.queue for entry in entries], failed)
        if not stopping:
            loop.call_soon_threadsafe(self._schedule_restart)

    def _schedule_restart(self) -> None:
        if not self._stopping and (self._restarter is None or self._restarter.done()):
            self._restarter = asyncio.get_running_loop().create_task(self._restart())


def _fail(queues: list[asyncio.Queue[GenerationChunk]], chunk: GenerationChunk) -> None:
    for queue in queues:
        queue.put_nowait(chunk)
