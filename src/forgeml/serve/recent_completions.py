"""Recent chat completions, in memory only, so feedback can name what it rates.

Prompts are not logged unless `log_prompts` is on, yet a rating is only worth training
on with the conversation it rates. So the server keeps the last `capacity` completions
(least recently used dropped first) for `ttl_seconds`; `/v1/feedback` takes the
conversation from here. Nothing here is written anywhere, and it is gone on restart.

Only the event loop touches the cache (the chat route records, the feedback route
reads), so it needs no lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecentCompletion:
    model: str  # as served
    artifact: str  # model/<sha256 prefix>
    messages: list[dict[str, Any]]  # the request's conversation, as rendered
    tools: list[dict[str, Any]]
    outputs: list[str]  # one generated text per choice, control tokens included
    api_key_id: int | None


class RecentCompletions:
    def __init__(self, capacity: int, ttl_seconds: float) -> None:
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._items: OrderedDict[str, tuple[float, RecentCompletion]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, completion_id: str, completion: RecentCompletion) -> None:
        if self.capacity <= 0:
            return
        now = time.monotonic()
        self._items[completion_id] = (now, completion)
        self._items.move_to_end(completion_id)
        while len(self._items) > self.capacity or (
            now - next(iter(self._items.values()))[0] > self.ttl_seconds
        ):  # the least recently used first: over capacity, or expired (text not kept longer)
            self._items.popitem(last=False)

    def get(self, completion_id: str) -> RecentCompletion | None:
        item = self._items.get(completion_id)
        if item is None:
            return None
        if time.monotonic() - item[0] > self.ttl_seconds:
            del self._items[completion_id]
            return None
        self._items.move_to_end(completion_id)
        return item[1]
