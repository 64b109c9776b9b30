"""Batch rows: created, claimed under a lease by one runner, counted, finished.

Status names are OpenAI's: `validating` (accepted, waiting for a runner), `in_progress`,
`finalizing` (writing the output files), `completed`, `failed`, `cancelling`,
`cancelled`. A runner holds a batch under a lease it renews (the jobs' lease rules,
forgeml.jobs.queue.lease_is_live); a batch whose runner died is claimed again and goes on
from its results file, so no finished request is asked twice.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from forgeml.core.errors import ConflictError, NotFoundError
from forgeml.core.schema import Batch, utcnow
from forgeml.core.workspace import Workspace
from forgeml.jobs.queue import lease_is_live

LEASE_SECONDS = 60.0
WORKING = ("validating", "in_progress", "finalizing", "cancelling")
ENDED = ("completed", "failed", "cancelled")


def create(
    workspace: Workspace,
    *,
    endpoint: str,
    input_file_id: str,
    total: int,
    api_key_id: int | None,
    details: dict[str, Any],
    audit: dict[str, Any] | None = None,
) -> Batch:
    with workspace.registry.session() as session:
        batch = Batch(
            id="batch_" + secrets.token_hex(12),
            endpoint=endpoint,
            input_file_id=input_file_id,
            status="validating",
            api_key_id=api_key_id,
            details=details,
            total=total,
        )
        session.add(batch)
        workspace.registry.audit(
            session, "batch.create", batch.id, endpoint=endpoint, input_file_id=input_file_id,
            requests=total, **(audit or {}),
        )  # fmt: skip
        session.flush()
        session.expunge(batch)
        return batch


def get(workspace: Workspace, batch_id: str) -> Batch:
    with workspace.registry.reading() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}", hint="GET /v1/batches lists them")
        session.expunge(batch)
        return batch


def list_batches(workspace: Workspace, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """Newest first; `after` pages on from a batch id."""
    with workspace.registry.reading() as session:
        query = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc())
        if after:
            anchor = session.get(Batch, after)
            if anchor is not None:
                query = query.where(Batch.created_at <= anchor.created_at, Batch.id != after)
        rows = list(session.scalars(query.limit(limit + 1)))
        for row in rows:
            session.expunge(row)
        return rows[:limit], len(rows) > limit


def find_unfinished(workspace: Workspace, input_sha256: str, model: str) -> Batch | None:
    """A batch `forgeml batch run` started on the same input and model and did not end."""
    with workspace.registry.reading() as session:
        for batch in session.scalars(select(Batch).where(Batch.status.in_(WORKING))):
            details = batch.details or {}
            if (
                details.get("input_sha256") == input_sha256
                and details.get("default_model") == model
            ):
                session.expunge(batch)
                return batch
    return None


def claim(workspace: Workspace, owner: str, batch_id: str | None = None) -> Batch | None:
    """Take a waiting batch (or one whose runner died), oldest first; one runner gets it."""
    with workspace.registry.session() as session:
        query = select(Batch).where(Batch.status.in_(WORKING)).order_by(Batch.created_at)
        if batch_id is not None:
            query = query.where(Batch.id == batch_id)
        if session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        batch = next((b for b in session.scalars(query) if not lease_is_live(b)), None)
        if batch is None:
            return None
        batch.lease_owner = owner
        batch.lease_expires_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
        if batch.status == "validating":
            batch.status, batch.started_at = "in_progress", utcnow()
        session.flush()
        session.expunge(batch)
        return batch


def progress(workspace: Workspace, batch_id: str, owner: str, completed: int, failed: int) -> bool:
    """Record the counts and renew the lease; True when the batch was asked to cancel."""
    with workspace.registry.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.lease_owner != owner:
            return True  # taken away: stop
        batch.completed, batch.failed = completed, failed
        batch.lease_expires_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
        return batch.cancel_requested


def release(workspace: Workspace, batch_id: str, owner: str) -> None:
    """Give a batch back (its server is stopping): the next runner takes it up at once."""
    with workspace.registry.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None and batch.lease_owner == owner and batch.status in WORKING:
            batch.lease_owner, batch.lease_expires_at = None, None


def finalizing(workspace: Workspace, batch_id: str) -> None:
    with workspace.registry.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None and batch.status == "in_progress":
            batch.status = "finalizing"
            batch.details = {**batch.details, "finalizing_at": utcnow().isoformat()}


def finish(
    workspace: Workspace,
    batch_id: str,
    status: str,
    *,
    completed: int = 0,
    failed: int = 0,
    output_file_id: str | None = None,
    error_file_id: str | None = None,
    error: str | None = None,
) -> None:
    with workspace.registry.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return
        batch.status, batch.finished_at = status, utcnow()
        batch.completed, batch.failed = completed, failed
        batch.output_file_id, batch.error_file_id = output_file_id, error_file_id
        batch.lease_owner, batch.lease_expires_at = None, None
        if error:
            batch.details = {**batch.details, "error": error}
        workspace.registry.audit(
            session, f"batch.{status}", batch_id, completed=completed, failed=failed,
            **({"error": error} if error else {}),
        )  # fmt: skip


def request_cancel(
    workspace: Workspace, batch_id: str, audit: dict[str, Any] | None = None
) -> Batch:
    with workspace.registry.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        if batch.status in ENDED:
            raise ConflictError(f"batch {batch_id} is already {batch.status}")
        batch.cancel_requested = True
        if lease_is_live(batch):
            batch.status = "cancelling"
            batch.details = {**batch.details, "cancelling_at": utcnow().isoformat()}
        else:  # no runner holds it: it ends now
            batch.status, batch.finished_at = "cancelled", utcnow()
        workspace.registry.audit(session, "batch.cancel", batch_id, **(audit or {}))
        session.flush()
        session.expunge(batch)
        return batch
