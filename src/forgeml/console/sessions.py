"""Console sessions: a random cookie naming a key that logged in, held in memory.

The cookie (`forgeml_session`: HttpOnly, SameSite=Strict, Path=/ui) holds a random
token, never the key. The server keeps token -> (sha256 of the key, CSRF token,
expiry); every request re-checks that key through the same `KeyChecker` as the API, so
revoking a key ends its sessions within the key cache's few seconds. A session lasts
`idle_seconds` after its last request; a restart ends them all (log in again).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "forgeml_session"
COOKIE_PATH = "/ui"
IDLE_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass
class Session:
    token: str
    key_digest: str
    csrf: str
    expires: float  # time.monotonic()


class SessionStore:
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, key_digest: str) -> Session:
        session = Session(
            secrets.token_urlsafe(32),
            key_digest,
            secrets.token_urlsafe(32),
            time.monotonic() + self.idle_seconds,
        )
        with self._lock:
            self._drop_expired()
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest first: dicts keep order
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session for `token` (its idle time restarts), or None."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires <= now:
                del self._sessions[token]
                return None
            session.expires = now + self.idle_seconds
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def expire(self, token: str) -> None:
        """End a session as if its time ran out (tests; an operator's "log out all")."""
        with self._lock:
            if token in self._sessions:
                self._sessions[token].expires = 0.0

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
