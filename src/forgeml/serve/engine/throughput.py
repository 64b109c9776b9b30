"""Tokens generated per second over the last few seconds: what `/metrics` reports.

Recorded by an engine's worker (per step or per token), read from the event loop; the
read copies the deque, so no lock is needed. Counts are keyed by LoRA adapter (`None`
is the base model) so an engine shared by adapters can report each one apart.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping

WINDOW_SECONDS = 5.0


class TokenRate:
    def __init__(self, window_seconds: float = WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._events: collections.deque[tuple[float, Mapping[str | None, int]]] = (
            collections.deque()
        )

    def record(self, counts: Mapping[str | None, int]) -> None:
        """`counts`: tokens just generated, per adapter."""
        now = time.monotonic()
        self._events.append((now, counts))
        while self._events and now - self._events[0][0] > self.window_seconds:
            self._events.popleft()

    def per_second(self, counted: Callable[[str | None], bool] = lambda _adapter: True) -> float:
        now = time.monotonic()
        tokens = sum(
            count
            for at, counts in list(self._events)
            if now - at <= self.window_seconds
            for adapter, count in counts.items()
            if counted(adapter)
        )
        return tokens / self.window_seconds
