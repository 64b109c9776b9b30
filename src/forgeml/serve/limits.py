"""Per-key limits: requests started per minute and requests open at once.

    limits = KeyLimits(per_minute=600, max_concurrent=64)
    limits.acquire(caller)   # APIError 429 with Retry-After when over either limit
    ...                      # the request, a stream until its last byte
    limits.release(caller)

The rate is a token bucket per key: `per_minute` requests in a burst, refilled evenly
(one every 60/per_minute seconds), so a client that backs off for Retry-After seconds
gets in. State is per server process and keyed by key id, so it is as large as the
number of valid keys in use: a wrong key never reaches here.
"""

from __future__ import annotations

import math
import time
from collections import Counter

from forgeml.serve.errors import APIError


class KeyLimits:
    def __init__(self, per_minute: int | None, max_concurrent: int | None) -> None:
        self.per_minute = per_minute
        self.max_concurrent = max_concurrent
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._open: Counter[int] = Counter()

    def acquire(self, key_id: int) -> None:
        """Count a request starting for this key, or refuse it (429) without counting."""
        if self.max_concurrent is not None and self._open[key_id] >= self.max_concurrent:
            raise _too_many(
                f"this API key has {self._open[key_id]} requests open, its limit; "
                "wait for one to finish",
                "concurrency_limit_exceeded",
                1,
            )
        if self.per_minute is not None:
            now = time.monotonic()
            rate = self.per_minute / 60.0  # tokens per second
            tokens, at = self._buckets.get(key_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise _too_many(
                    f"this API key has used its {self.per_minute} requests per minute",
                    "rate_limit_exceeded",
                    wait,
                )
            self._buckets[key_id] = (tokens - 1.0, now)
        self._open[key_id] += 1

    def release(self, key_id: int) -> None:
        self._open[key_id] -= 1
        if self._open[key_id] <= 0:
            del self._open[key_id]


def _too_many(message: str, code: str, retry_after: int) -> APIError:
    return APIError(
        429,
        f"{message} (retry after {retry_after} s)",
        "rate_limit_error",
        code=code,
        headers={"Retry-After": str(max(1, retry_after))},
    )
