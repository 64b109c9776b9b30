"""The registry: one SQL database holding artifacts, runs, lineage, versions and audit.

`Registry.session()` gives a short transaction; every write in forgeml goes through
one and records who did it in the append-only audit log. `Registry.reading()` gives
one that only reads: on SQLite it never takes (or waits for) the write lock, and it
refuses to flush a change.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from forgeml.core.database import READ_ONLY
from forgeml.core.errors import ConflictError, InputError, NotFoundError
from forgeml.core.schema import Alias, AliasMove, Artifact, AuditEntry, Version, utcnow

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HEX_PATTERN = re.compile(r"^[0-9a-f]{6,64}$")


_ACTING: ContextVar[str | None] = ContextVar("forgeml_acting", default=None)


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Audit the writes made in this context (and threads started from it with
    `asyncio.to_thread`, which copies the context) as `actor`: the console's key."""
    token = _ACTING.set(actor)
    try:
        yield
    finally:
        _ACTING.reset(token)


def current_actor() -> str:
    """Who is acting: `acting_as`'s actor, else FORGEML_ACTOR if set (servers, job
    workers), else user@host."""
    if actor := _ACTING.get() or os.environ.get("FORGEML_ACTOR"):
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@event.listens_for(Session, "before_flush")
def _refuse_audit_rewrites(session: Session, _context, _instances) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a registry.reading() session cannot write: use registry.session()")
    for entry in list(session.dirty) + list(session.deleted):
        if isinstance(entry, AuditEntry):
            raise PermissionError("the audit log is append-only")


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(
            engine.execution_options(**{READ_ONLY: True}),
            expire_on_commit=False,
            info={READ_ONLY: True},
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads (a deferred BEGIN on SQLite: no write lock)."""
        with self._readers.begin() as session:
            yield session

    # --- audit ---------------------------------------------------------------------------

    def audit(self, session: Session, action: str, target: str = "", **details: Any) -> AuditEntry:
        entry = AuditEntry(actor=current_actor(), action=action, target=target, details=details)
        session.add(entry)
        return entry

    def audit_entries(
        self, limit: int = 100, action: str | None = None, target: str | None = None
    ) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if action:
            query = query.where(AuditEntry.action.like(f"{action}%"))
        if target:
            query = query.where(AuditEntry.target.like(f"%{target}%"))
        with self.reading() as session:
            return list(session.scalars(query))[::-1]

    # --- artifacts -----------------------------------------------------------------------

    def list_artifacts(self, kind: str | None = None, limit: int = 200) -> list[Artifact]:
        query = select(Artifact).order_by(Artifact.id.desc()).limit(limit)
        if kind:
            query = query.where(Artifact.kind == kind)
        with self.reading() as session:
            return list(session.scalars(query))[::-1]

    def artifact_by_id(self, artifact_id: int) -> Artifact:
        with self.reading() as session:
            artifact = session.get(Artifact, artifact_id)
            if artifact is None:
                raise NotFoundError(f"no artifact with id {artifact_id}")
            return artifact

    def resolve(self, ref: str, kind: str | None = None, *, purpose: str | None = None) -> Artifact:
        """Find an artifact by any of the ways a user names one.

        - `dataset/3fa2b1c0` or `3fa2b1c0` (a sha256 prefix of at least 6 hex digits)
        - `support-docs` (latest version of a name), `support-docs:2`, `my-model@prod`

        Every command that *uses* an artifact (serve, promote, export, train on, ...) passes
        `purpose`, and a forgotten artifact is refused here (`ForgottenError`, naming the
        deletion request). Only looking at one (lineage, `artifacts show`) leaves it out.
        """
        ref = ref.strip()
        with self.reading() as session:
            artifact = self._resolve(session, ref, kind)
        if kind and artifact.kind != kind:
            raise InputError(
                f"{ref!r} is a {artifact.kind}, but a {kind} is needed here",
                hint=f"List {kind}s with `forgeml artifacts list --kind {kind}`.",
            )
        if purpose:
            _refuse_forgotten(artifact, purpose)
        return artifact

    def ensure_usable(self, artifacts: Artifact | Iterable[Artifact], purpose: str) -> None:
        """Refuse forgotten artifacts, reading their rows afresh: an `Artifact` held in
        memory (a recipe's earlier step, a server's cache) may predate the deletion."""
        items = [artifacts] if isinstance(artifacts, Artifact) else list(artifacts)
        forgotten = self.forgotten_among(a.id for a in items)
        for artifact in items:
            if artifact.id in forgotten:
                raise forgotten_error(artifact.ref, forgotten[artifact.id], purpose)

    def forgotten_among(self, artifact_ids: Iterable[int]) -> dict[int, str]:
        """{artifact id: deletion reason} for those of `artifact_ids` that are forgotten."""
        ids = sorted({i for i in artifact_ids if i is not None})
        if not ids:
            return {}
        query = select(Artifact.id, Artifact.forgotten_reason).where(
            Artifact.id.in_(ids), Artifact.forgotten_at.is_not(None)
        )
        with self.session() as session:
            return {row.id: row.forgotten_reason or "" for row in session.execute(query)}

    def _resolve(self, session: Session, ref: str, kind: str | None) -> Artifact:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = self._aliased_version(session, name, alias)
            return session.get(Artifact, version.artifact_id)
        if "/" in ref:
            ref_kind, prefix = ref.split("/", 1)
            return self._by_prefix(session, prefix, ref_kind, ref)
        name, _, number = ref.partition(":")
        versions = select(Version).where(Version.name == name)
        if number:
            if not number.isdigit():
                raise InputError(f"{ref!r}: a version number must be an integer, like {name}:2")
            versions = versions.where(Version.version == int(number))
        version = session.scalars(versions.order_by(Version.version.desc()).limit(1)).first()
        if version is not None:
            return session.get(Artifact, version.artifact_id)
        if not number and HEX_PATTERN.match(ref):
            return self._by_prefix(session, ref, kind, ref)
        raise NotFoundError(
            f"no artifact or version named {ref!r}",
            hint="See `forgeml artifacts list` and `forgeml models list` for what exists.",
        )

    def _by_prefix(self, session: Session, prefix: str, kind: str | None, ref: str) -> Artifact:
        if not HEX_PATTERN.match(prefix):
            raise InputError(
                f"{ref!r} is not an artifact reference",
                hint="Use KIND/SHA256-PREFIX (at least 6 hex digits), a name, NAME:VERSION or NAME@ALIAS.",
            )
        query = select(Artifact).where(Artifact.sha256.like(f"{prefix}%"))
        if kind:
            query = query.where(Artifact.kind == kind)
        matches = list(session.scalars(query.limit(5)))
        if not matches:
            raise NotFoundError(f"no artifact matches {ref!r}")
        if len(matches) > 1:
            refs = ", ".join(m.ref for m in matches)
            raise InputError(f"{ref!r} is ambiguous: {refs}", hint="Give more hex digits.")
        return matches[0]

    # --- versions and aliases ------------------------------------------------------------

    def add_version(
        self, session: Session, name: str, artifact: Artifact, run_id: str | None = None
    ) -> Version:
        """Name an artifact; a name already pointing at this artifact keeps its version."""
        check_name(name)
        existing = session.scalars(
            select(Version)
            .where(Version.name == name, Version.artifact_id == artifact.id)
            .order_by(Version.version.desc())
        ).first()
        if existing is not None:
            return existing
        latest = session.scalar(select(func.max(Version.version)).where(Version.name == name))
        version = Version(
            name=name, version=(latest or 0) + 1, artifact_id=artifact.id, run_id=run_id
        )
        session.add(version)
        session.flush()
        self.audit(session, "version.create", f"{name}:{version.version}", artifact=artifact.ref)
        return version

    def list_versions(self, name: str | None = None, kind: str | None = None) -> list[dict]:
        query = (
            select(Version, Artifact)
            .join(Artifact, Version.artifact_id == Artifact.id)
            .order_by(Version.name, Version.version)
        )
        if name:
            query = query.where(Version.name == name)
        if kind:
            query = query.where(Artifact.kind == kind)
        with self.reading() as session:
            aliases: dict[int, list[str]] = {}
            for alias in session.scalars(select(Alias)):
                aliases.setdefault(alias.version_id, []).append(alias.alias)
            return [
                {
                    "name": version.name,
                    "version": version.version,
                    "artifact": artifact.ref,
                    "kind": artifact.kind,
                    "sha256": artifact.sha256,
                    "run_id": version.run_id,
                    "created_at": version.created_at.isoformat(),
                    "aliases": sorted(aliases.get(version.id, [])),
                }
                for version, artifact in session.execute(query)
            ]

    def set_alias(
        self, name: str, alias: str, version_number: int, reason: str = "", action: str = "set"
    ) -> None:
        """Move NAME@ALIAS to NAME:VERSION; `action` (set, rollback) goes to its history."""
        check_name(alias)
        with self.session() as session:
            version = session.scalars(
                select(Version).where(Version.name == name, Version.version == version_number)
            ).first()
            if version is None:
                raise NotFoundError(f"{name}:{version_number} does not exist")
            _refuse_forgotten(session.get(Artifact, version.artifact_id), f"become {name}@{alias}")
            row = session.scalars(
                select(Alias).where(Alias.name == name, Alias.alias == alias)
            ).first()
            previous = None
            if row is None:
                session.add(Alias(name=name, alias=alias, version_id=version.id))
            else:
                previous = row.version_id
                row.version_id, row.updated_at = version.id, utcnow()
            session.add(
                AliasMove(
                    name=name,
                    alias=alias,
                    version_id=version.id,
                    previous_version_id=previous,
                    action=action,
                    actor=current_actor(),
                    reason=reason,
                )
            )
            self.audit(
                session,
                "alias.set",
                f"{name}@{alias}",
                version=version_number,
                previous_version_id=previous,
                reason=reason,
            )

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Every move of NAME@ALIAS, oldest first: action, version number, actor, time."""
        query = (
            select(AliasMove, Version)
            .join(Version, AliasMove.version_id == Version.id)
            .where(AliasMove.name == name, AliasMove.alias == alias)
            .order_by(AliasMove.id)
        )
        with self.reading() as session:
            return [
                {
                    "action": move.action,
                    "version": version.version,
                    "actor": move.actor,
                    "time": move.time.isoformat(),
                    "reason": move.reason,
                }
                for move, version in session.execute(query)
            ]

    def alias_target(self, name: str, alias: str, *, purpose: str) -> tuple[int, Artifact]:
        """(version number, artifact) NAME@ALIAS points at now; a forgotten one is refused."""
        with self.reading() as session:
            version = self._aliased_version(session, name, alias)
            artifact = session.get(Artifact, version.artifact_id)
        _refuse_forgotten(artifact, purpose)
        return version.version, artifact

    def _aliased_version(self, session: Session, name: str, alias: str) -> Version:
        row = session.scalars(select(Alias).where(Alias.name == name, Alias.alias == alias)).first()
        if row is None:
            raise NotFoundError(
                f"{name}@{alias} is not set",
                hint=f"Set it with `forgeml models alias {name} VERSION {alias}`.",
            )
        return session.get(Version, row.version_id)


class ForgottenError(ConflictError):
    """The artifact was, or derives from, data a deletion request removed."""


def forgotten_error(ref: str, reason: str, purpose: str) -> ForgottenError:
    return ForgottenError(
        f"{ref} cannot {purpose}: it was forgotten by the deletion request {reason!r}",
        hint="Retrain without the forgotten data, then use the new model "
        "(`forgeml lineage REF` shows what it was made from).",
    )


def _refuse_forgotten(artifact: Artifact, purpose: str) -> None:
    if artifact.forgotten_at is not None:
        raise forgotten_error(artifact.ref, artifact.forgotten_reason or "", purpose)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InputError(
            f"{name!r} is not a valid name",
            hint="Names start with a letter or digit and use only letters, digits, '.', '_' and '-'.",
        )
    return name
