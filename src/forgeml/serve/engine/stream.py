"""The chunks of one request, as the async iterator `Engine.generate` returns.

Shared by the engines that hand chunks to an asyncio queue: the worker thread of the
transformers and llama.cpp engines (`sequence_stream`), and the reader of the engine
process's pipe (process.py). Closing a stream early, or dropping it, aborts its request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from forgeml.serve.engine.base import GenerationChunk
from forgeml.serve.engine.sequence import Sequence


class ChunkStream:
    """The chunks of one request until its last (the one with a finish reason).

    A class rather than an async generator: a generator that was never iterated runs
    no cleanup when closed, and the request would decode for nobody.
    """

    def __init__(self, queue: asyncio.Queue[GenerationChunk], abort: Callable[[], None]) -> None:
        self._queue, self._abort = queue, abort
        self._finished = False

    def __aiter__(self) -> ChunkStream:
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
            self._abort()

    def __del__(self) -> None:
        if not self._finished:
            self._abort()


def sequence_stream(
    sequence: Sequence, queue: asyncio.Queue[GenerationChunk], wakeup: threading.Condition
) -> ChunkStream:
    """The stream of a sequence decoded by a worker thread waiting on `wakeup`."""

    def abort() -> None:
        sequence.abort()  # the worker drops it at its next step
        with wakeup:  # re-entrant: safe even from __del__ on the worker thread
            wakeup.notify()

    return ChunkStream(queue, abort)
