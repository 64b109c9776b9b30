"""A classifier model behind the engine interface: it classifies, it does not generate.

The pool (loading on demand, eviction, holds, withdrawal of forgotten models) treats a
classifier like any served model; `/v1/classifications` calls `classify`, and the chat
and completion endpoints get a clear 400 from `generate`. Forward passes run in a
thread, one at a time (torch already uses every core for one), with at most
`max_waiting` requests queued behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from forgeml.models.classifier import Classifier
from forgeml.serve.engine.base import (
    Engine,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    QueueFullError,
)
from forgeml.serve.errors import APIError


class ClassifierEngine(Engine):
    name = "classifier"

    def __init__(self, classifier: Classifier, served_id: str, max_waiting: int) -> None:
        self.classifier = classifier
        self.served_id = served_id
        self.max_context = classifier.max_tokens
        self.max_waiting = max_waiting
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._running = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise APIError(
            400,
            f"{self.served_id} is a classifier: it answers /v1/classifications and "
            "/v1/chat/classifications, not text generation",
            param="model",
            code="model_is_classifier",
        )

    def stats(self) -> EngineStats:
        return EngineStats(waiting=self._waiting, running=self._running)

    async def classify(self, texts: list[str]) -> list[dict[str, dict[str, float]]]:
        if self._waiting >= self.max_waiting:
            raise QueueFullError(f"{self.served_id} has {self._waiting} requests waiting")
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        self._running = len(texts)
        work = asyncio.ensure_future(asyncio.to_thread(self.classifier.scores, texts))
        work.add_done_callback(self._finished)
        # A client that goes away does not stop the forward pass already in its thread;
        # the lock is released when that pass ends, not before.
        return await asyncio.shield(work)

    def _finished(self, _work: asyncio.Future) -> None:
        self._running = 0
        self._lock.release()

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.classifier.token_counts(texts)
