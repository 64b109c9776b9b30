"""Console sessions: a random cookie naming a key that logged in, kept in the registry.

The cookie (`forgeml_session`: HttpOnly, SameSite=Strict, Path=/ui) holds a random
token, never the key. The registry keeps sha256(token) -> (sha256 of the key, CSRF token,
expiry), so a session survives a server restart and every replica sharing the registry
knows it, and a copy of the database yields no usable cookie. Every request re-checks
the key through the same `KeyChecker` as the API, so revoking a key ends its sessions
within the key cache's few seconds. A session lasts `idle_seconds` after its last
request; the expiry is written at most once a minute (TOUCH_SECONDS), and a session
read is cached for CACHE_SECONDS, so a page view costs no database write.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from forgeml.core.schema import ConsoleSession, utcnow
from forgeml.core.workspace import Workspace

COOKIE = "forgeml_session"
COOKIE_PATH = "/ui"
IDLE_SECONDS = 8 * 3600.0
CACHE_SECONDS = 5.0  # a logout on another replica takes effect here within this
TOUCH_SECONDS = 60.0
MAX_CACHED = 10_000


@dataclass
class Session:
    token: str
    key_digest: str
    csrf: str
    expires: datetime  # UTC


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, workspace: Workspace, idle_seconds: float = IDLE_SECONDS) -> None:
        self.workspace = workspace
        self.idle = timedelta(seconds=idle_seconds)
        self._cache: dict[str, tuple[float, Session]] = {}  # token -> (read at, session)
        self._lock = threading.Lock()

    def create(self, key_digest: str) -> Session:
        session = Session(
            secrets.token_urlsafe(32), key_digest, secrets.token_urlsafe(32), utcnow() + self.idle
        )
        with self.workspace.registry.session() as db:
            db.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= utcnow()))
            db.add(
                ConsoleSession(
                    token_hash=_hash(session.token),
                    key_hash=key_digest,
                    csrf=session.csrf,
                    expires_at=session.expires,
                )
            )
        self._remember(session)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session for `token` (its idle time restarts), or None. Blocking: call
        it from a thread in async code."""
        if not token:
            return None
        now = utcnow()
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            session = cached[1]
        else:
            session = self._load(token)
            if session is None:
                self._forget(token)
                return None
        if session.expires <= now:
            self.end(token)
            return None
        if now + self.idle - session.expires >= timedelta(seconds=TOUCH_SECONDS):
            session.expires = now + self.idle
            with self.workspace.registry.session() as db:
                row = db.get(ConsoleSession, _hash(token))
                if row is not None:
                    row.expires_at = session.expires
        self._remember(session, keep_time=cached is not None and cached[1] is session)
        return session

    def end(self, token: str | None) -> None:
        if not token:
            return
        self._forget(token)
        with self.workspace.registry.session() as db:
            db.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _hash(token)))

    def expire(self, token: str) -> None:
        """End a session as if its time ran out (tests; an operator's "log out all")."""
        self._forget(token)
        with self.workspace.registry.session() as db:
            row = db.get(ConsoleSession, _hash(token))
            if row is not None:
                row.expires_at = utcnow() - timedelta(seconds=1)

    def _load(self, token: str) -> Session | None:
        with self.workspace.registry.reading() as db:
            row = db.get(ConsoleSession, _hash(token))
            if row is None:
                return None
            expires = row.expires_at
            if expires.tzinfo is None:  # SQLite gives datetimes back without their zone
                expires = expires.replace(tzinfo=utcnow().tzinfo)
            return Session(token, row.key_hash, row.csrf, expires)

    def _remember(self, session: Session, keep_time: bool = False) -> None:
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            read_at = self._cache[session.token][0] if keep_time else time.monotonic()
            self._cache[session.token] = (read_at, session)

    def _forget(self, token: str) -> None:
        with self._lock:
            self._cache.pop(token, None)
