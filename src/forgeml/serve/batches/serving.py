"""Create, show, list and cancel batches (the router's work, off the event loop)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.schema import Batch, unix_time
from forgeml.core.workspace import Workspace
from forgeml.jobs import files
from forgeml.serve.batches import store
from forgeml.serve.batches.protocol import (
    ENDPOINTS,
    BatchError,
    BatchErrors,
    BatchObject,
    CreateBatchRequest,
    RequestCounts,
)
from forgeml.serve.batches.requests import read_requests

WINDOW = timedelta(hours=24)


def create_batch(
    workspace: Workspace,
    body: CreateBatchRequest,
    api_key_id: int | None,
    audit: dict[str, Any] | None = None,
    default_model: str | None = None,
) -> Batch:
    if body.endpoint not in ENDPOINTS:
        raise InputError(
            f"endpoint must be one of {', '.join(ENDPOINTS)}; got {body.endpoint!r}",
            field="endpoint",
        )
    try:
        stored = files.get_file(workspace, body.input_file_id)
    except NotFoundError as error:
        raise InputError(
            f"no file {body.input_file_id!r}; upload it to /v1/files with purpose 'batch'",
            field="input_file_id",
        ) from error
    if stored.purpose != "batch":
        raise InputError(
            f"{stored.id} was uploaded with purpose {stored.purpose!r}; a batch's input needs "
            "purpose 'batch'",
            field="input_file_id",
        )
    requests = read_requests(workspace.local_path(stored), body.endpoint, default_model)
    details = {
        "metadata": body.metadata,
        "completion_window": body.completion_window,
        "input_sha256": stored.sha256,
        "default_model": default_model,
    }
    return store.create(
        workspace, endpoint=body.endpoint, input_file_id=stored.id, total=len(requests),
        api_key_id=api_key_id, details=details, audit=audit,
    )  # fmt: skip


def batch_object(batch: Batch) -> BatchObject:
    details = batch.details or {}
    ended = unix_time(batch.finished_at) if batch.finished_at else None
    error = details.get("error")
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=BatchErrors(data=[BatchError(code="batch_failed", message=error)])
        if error
        else None,
        input_file_id=batch.input_file_id,
        completion_window=details.get("completion_window", "24h"),
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=unix_time(batch.created_at),
        in_progress_at=unix_time(batch.started_at) if batch.started_at else None,
        expires_at=unix_time(batch.created_at + WINDOW),
        finalizing_at=_at(details.get("finalizing_at")),
        completed_at=ended if batch.status == "completed" else None,
        failed_at=ended if batch.status == "failed" else None,
        cancelling_at=_at(details.get("cancelling_at")),
        cancelled_at=ended if batch.status == "cancelled" else None,
        request_counts=RequestCounts(
            total=batch.total, completed=batch.completed, failed=batch.failed
        ),
        metadata=details.get("metadata"),
    )


def _at(iso: str | None) -> int | None:
    return unix_time(datetime.fromisoformat(iso)) if iso else None
