"""Helpers shared by the generation endpoints: server-sent events, merged streams, ids."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")
DONE = "data: [DONE]\n\n"
HOLE = "\x00forgeml-text\x00"  # stands for the text in an EventTemplate's payload
_END = object()
# Characters JSON leaves raw that line readers (Python's str.splitlines, httpx's
# aiter_lines) take as line breaks: raw, they cut an event in two mid-JSON.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event_json(value: Any) -> str:
    """JSON for one SSE data line: UTF-8 kept, every character a reader could split on escaped."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


def sse(payload: BaseModel | dict[str, Any]) -> str:
    """One `data: {...}` event (None fields dropped, as OpenAI's stream does)."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(exclude_none=True)
    return f"data: {event_json(payload)}\n\n"


class EventTemplate:
    """An `sse` event rendered once with one string field left open.

    Streaming sends one event per token per request, nearly all alike but for their
    text: `render` JSON-encodes only that text between a pre-rendered prefix and
    suffix, instead of building and serialising the whole payload (pydantic models,
    nested dicts) every time. The output is byte for byte what `sse` gives.
    """

    def __init__(self, payload: BaseModel | dict[str, Any]) -> None:
        """`payload` holds `HOLE` where the text goes, exactly once."""
        self._prefix, self._suffix = sse(payload).split(json.dumps(HOLE))

    def render(self, text: str) -> str:
        return self._prefix + event_json(text) + self._suffix


def completion_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as they come, tagged with the iterator's index.

    Closing the merged iterator cancels the pumps, which closes every source (for an
    engine stream, that aborts the sequence and frees its batch slot).
    """
    if len(streams) == 1:  # the common case: no pump task, no second queue hop per token
        try:
            async for item in streams[0]:
                yield 0, item
        finally:
            close = getattr(streams[0], "aclose", None)
            if close is not None:
                await close()
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except Exception as error:  # re-raised in the consumer
            await queue.put((index, error))
        finally:
            await queue.put((index, _END))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    open_streams = len(tasks)
    try:
        while open_streams:
            index, item = await queue.get()
            if item is _END:
                open_streams -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
