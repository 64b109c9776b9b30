"""API keys: created by `forgeml keys create`, checked on every request but /health.

A key is `fml-` + 32 random URL-safe characters, shown once. The registry keeps its
sha256 (keys are random, so no salt is needed) and a short prefix people can
recognise. Scopes: `inference` (chat, completions, models), `viewer` (reads every page
of the web console, changes nothing, calls no API route) and `admin` (everything,
including admin routes such as /metrics, and /v1/files and /v1/fine_tuning: uploaded
training data may hold personal data, and a job spends compute and adds models to the
registry, so an application's inference key can do neither).

On the request path a key costs a dictionary lookup: verified keys are cached for a
few seconds (so a revocation takes effect within `cache_seconds`) in a cache of at most
`cache_size` keys, least recently used dropped first. A key that fails is never cached:
random wrong keys cannot fill memory, and each costs one indexed read, which runs in a
deferred SQLite transaction that never waits on a writer. `last_used_at` is written at
most once a minute per key, off the event loop. The check runs in guard.py's middleware,
before the request body is read; `require` then checks the route's scope.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.registry import check_name
from forgeml.core.schema import ApiKey, utcnow
from forgeml.core.workspace import Workspace
from forgeml.serve.errors import APIError

log = logging.getLogger("forgeml.serve")

KEY_PREFIX = "fml-"
INTERNAL_PREFIX = "fml-internal-"  # acting_as secrets: in memory, never stored or sent out
SHOWN_PREFIX_LENGTH = 12  # "fml-" + 8 characters
SCOPES = ("inference", "viewer", "admin")
TOUCH_INTERVAL_SECONDS = 60.0


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(workspace: Workspace, name: str, scope: str) -> tuple[ApiKey, str]:
    """Make a key; returns its row and the secret, which is never stored or shown again."""
    check_name(name)
    if scope not in SCOPES:
        raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}", field="scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)  # 24 bytes -> 32 characters
    registry = workspace.registry
    with registry.session() as session:
        row = ApiKey(
            name=name, prefix=secret[:SHOWN_PREFIX_LENGTH], key_hash=hash_key(secret), scope=scope
        )
        session.add(row)
        session.flush()
        registry.audit(
            session,
            "api_key.create",
            f"api_key/{row.id}",
            name=name,
            scope=scope,
            prefix=row.prefix,
        )
    return row, secret


def list_keys(workspace: Workspace, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    with workspace.registry.reading() as session:
        return list(session.scalars(query))


def revoke_key(workspace: Workspace, key: str) -> ApiKey:
    """Revoke by id, prefix or name (a name must match exactly one active key)."""
    conditions = [ApiKey.prefix == key, ApiKey.name == key]
    if key.isdigit():
        conditions.append(ApiKey.id == int(key))
    registry = workspace.registry
    with registry.session() as session:
        rows = list(
            session.scalars(select(ApiKey).where(or_(*conditions), ApiKey.revoked_at.is_(None)))
        )
        if not rows:
            raise NotFoundError(
                f"no active API key matches {key!r}", hint="See `forgeml keys list`."
            )
        if len(rows) > 1:
            ids = ", ".join(str(row.id) for row in rows)
            raise InputError(f"{key!r} matches several keys (ids {ids})", hint="Revoke by id.")
        row = rows[0]
        row.revoked_at = utcnow()
        registry.audit(
            session, "api_key.revoke", f"api_key/{row.id}", name=row.name, prefix=row.prefix
        )
    return row


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id, name, prefix and scope."""

    key_id: int
    name: str
    prefix: str
    scope: str

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope


class KeyChecker:
    def __init__(
        self, workspace: Workspace, cache_seconds: float = 10.0, cache_size: int = 10_000
    ) -> None:
        self.workspace = workspace
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, Caller]] = OrderedDict()  # oldest use first
        self._used: dict[int, datetime] = {}
        self._written: dict[int, float] = {}
        self._acting: dict[str, int] = {}  # in-process secret -> the key id it acts as

    def acting_as(self, key_id: int) -> str:
        """A secret for this process's own calls into the app on a key's behalf (a batch
        runs as the key that created it). It lives in memory only, never leaves the
        process, and passes only while the key itself is valid: revoke the key and its
        batches stop."""
        secret = INTERNAL_PREFIX + secrets.token_urlsafe(32)
        self._acting[secret] = key_id
        return secret

    def stop_acting(self, secret: str) -> None:
        self._acting.pop(secret, None)

    async def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, secret = (authorization or "").partition(" ")
        if secret in self._acting:
            return await self._acting_caller(self._acting[secret])
        if scheme.lower() != "bearer" or not secret.strip():
            raise APIError(
                401,
                "missing API key: send 'Authorization: Bearer fml-...'",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await self.authenticate_digest(hash_key(secret.strip()))

    async def authenticate_digest(self, digest: str) -> Caller:
        """The caller whose key hashes to `digest` (a console session keeps only that)."""
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_seconds:
            self._cache.move_to_end(digest)
            caller = cached[1]
        else:
            caller = await self._verify(digest)
            if caller is None:
                self._cache.pop(digest, None)  # revoked since it was cached
                raise APIError(
                    401,
                    "invalid or revoked API key",
                    "authentication_error",
                    code="invalid_api_key",
                )
            self._cache[digest] = (now, caller)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._touch(caller, now)
        return caller

    async def _verify(self, digest: str) -> Caller | None:
        try:
            return await asyncio.to_thread(self._lookup, digest)
        except SQLAlchemyError as error:  # no statement parameters in the log (database.py)
            log.error("cannot check an API key: the registry failed: %s", error)
            raise APIError(
                503,
                "cannot check the API key: the registry is unavailable; retry shortly",
                "server_error",
                code="registry_unavailable",
                headers={"Retry-After": "5"},
            ) from error

    async def _acting_caller(self, key_id: int) -> Caller:
        digest = await asyncio.to_thread(self._digest_of, key_id)
        if digest is None:
            raise APIError(
                401, "the API key this work runs as was revoked", "authentication_error",
                code="invalid_api_key",
            )  # fmt: skip
        return await self.authenticate_digest(digest)

    def _digest_of(self, key_id: int) -> str | None:
        with self.workspace.registry.reading() as session:
            row = session.get(ApiKey, key_id)
            return None if row is None or row.revoked_at is not None else row.key_hash

    def _lookup(self, digest: str) -> Caller | None:
        with self.workspace.registry.reading() as session:
            row = session.scalars(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            ).first()
            return None if row is None else Caller(row.id, row.name, row.prefix, row.scope)

    def _touch(self, caller: Caller, now: float) -> None:
        self._used[caller.key_id] = utcnow()
        if (
            now - self._written.get(caller.key_id, -TOUCH_INTERVAL_SECONDS)
            >= TOUCH_INTERVAL_SECONDS
        ):
            self._written[caller.key_id] = now
            asyncio.get_running_loop().run_in_executor(None, self.flush)

    def flush(self) -> None:
        """Write pending `last_used_at` times (also called at shutdown)."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            with self.workspace.registry.session() as session:
                for key_id, when in used.items():
                    session.execute(
                        update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
                    )
        except SQLAlchemyError as error:  # a later flush writes them
            log.warning("could not record when API keys were last used: %s", error)
            self._used = {**used, **self._used}


def scope_error(caller: Caller, scope: str) -> APIError:
    return APIError(
        403,
        f"this API key has scope {caller.scope!r}; this route needs {scope!r}",
        "permission_error",
        code="insufficient_scope",
    )


def require(scope: str):
    """A FastAPI dependency: the caller, if its key has `scope`; 401/403 otherwise."""

    async def dependency(request: Request) -> Caller:
        caller: Caller | None = getattr(request.state, "caller", None)  # guard.py's check
        if caller is None:
            checker: KeyChecker = request.app.state.keys
            caller = await checker.authenticate(request.headers.get("authorization"))
        if not caller.allows(scope):
            raise scope_error(caller, scope)
        request.state.caller = caller
        return caller

    return dependency
