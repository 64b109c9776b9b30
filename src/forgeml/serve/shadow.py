"""Shadow traffic: a copy of each request runs on the candidate, and only its numbers stay.

The request handler calls `send`, which never waits: the copy goes on a bounded queue
(`serving.canary[].shadow_queue`) and is dropped, and counted, when the queue is full,
so a slow candidate cannot slow prod's answers or grow memory. A few worker tasks
take copies off the queue and run them on the candidate's engine (its own process by
default), discarding the text. Each copy is counted in `/metrics`:
`forgeml_shadow_copies_total{model,outcome}` (queued, dropped, answered, failed), and
its latency and tokens in the per-version series with `traffic="shadow"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from forgeml.serve.streaming import merge

if TYPE_CHECKING:
    from forgeml.serve.metrics import ServerMetrics
    from forgeml.serve.served_models import ServedModel

log = logging.getLogger("forgeml.serve")

WORKERS = 4  # copies in flight at once: the candidate's engine batches them

Resolve = Callable[[], Awaitable[tuple["ServedModel", Any]]]
Generations = Callable[["ServedModel"], list[Any]]


class Shadow:
    def __init__(self, model: str, size: int, metrics: ServerMetrics) -> None:
        self.model, self.size, self.metrics = model, size, metrics
        self._queue: asyncio.Queue[tuple[Resolve, Generations]] | None = None
        self._workers: list[asyncio.Task] = []

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.size)
        self._workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def send(self, resolve: Resolve, generations: Generations) -> None:
        """Queue a copy; drop it (counted) if the queue is full or not started."""
        try:
            if self._queue is None:
                raise asyncio.QueueFull
            self._queue.put_nowait((resolve, generations))
        except asyncio.QueueFull:
            self._count("dropped")
            return
        self._count("queued")

    def _count(self, outcome: str) -> None:
        self.metrics.shadow_copies.labels(self.model, outcome).inc()

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            resolve, generations = await self._queue.get()
            try:
                await self._run(resolve, generations)
            except asyncio.CancelledError:
                raise
            except Exception:  # a shadow must never take the server down
                log.exception("shadow copy for %s failed", self.model)
                self._count("failed")

    async def _run(self, resolve: Resolve, generations: Generations) -> None:
        started = time.perf_counter()
        served, route = await resolve()
        requests = await asyncio.to_thread(generations, served)
        streams = [served.engine.generate(request) for request in requests]
        tokens, status = {}, 200
        async for index, chunk in merge(streams):
            tokens[index] = chunk.completion_tokens
            if chunk.finish_reason in ("error", "abort"):
                status = 503 if chunk.unavailable else 500
        prompt = sum(len(request.prompt_ids) for request in requests)
        self.metrics.version_request(route, status, time.perf_counter() - started)
        self.metrics.version_usage(route, prompt, sum(tokens.values()))
        self._count("answered" if status == 200 else "failed")
