"""The chunks of one sequence, as the async iterator `Engine.generate` returns.

Shared by the engines whose worker thread decodes `Sequence`s (transformers, llama.cpp):
the worker puts chunks on the sequence's asyncio queue; the event loop reads them here.
"""

from __future__ import annotations

import asyncio
import threading

from forgeml.serve.engine.base import GenerationChunk
from forgeml.serve.engine.sequence import Sequence


class SequenceStream:
    """The chunks of one sequence; closing it early (or dropping it) aborts the sequence.

    A class rather than an async generator: a generator that was never iterated runs
    no cleanup when closed, and the sequence would decode for nobody.
    """

    def __init__(
        self,
        sequence: Sequence,
        queue: asyncio.Queue[GenerationChunk],
        wakeup: threading.Condition,
    ) -> None:
        self._sequence, self._queue, self._wakeup = sequence, queue, wakeup
        self._finished = False

    def __aiter__(self) -> SequenceStream:
        return self

    async def __anext__(self) -> GenerationChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await self._queue.get()
        except BaseException:
            await self.aclose()
            raise
        self._finished = chunk.finish_reason is not None
        return chunk

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            self._sequence.abort()
            with self._wakeup:
                self._wakeup.notify()

    def __del__(self) -> None:
        if not self._finished:
            self._sequence.abort()
