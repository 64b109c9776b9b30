"""Fine-tuning jobs: a durable queue in the registry, executed by `forgeml jobs worker`.

A job is submitted by the API (OpenAI's or Mistral's shape, normalised by the server),
waits as `queued`, is claimed by exactly one worker, and becomes ordinary stage runs:
`data.ingest` of the uploaded training file, then the method's training stage. Because
the state lives in the database, a job survives a restart of the server or the worker;
a job whose worker died is claimed again and its run resumes from its checkpoints.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import ConflictError, InputError, NotFoundError
from forgeml.core.runs import TERMINAL, mark_dead_runs, request_cancel
from forgeml.core.schema import FineTuningJob, Run, RunEvent, StoredFile, utcnow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

METHODS = ("supervised", "dpo", "reinforcement")
# Job statuses are forgeml run statuses plus `created` (Mistral's auto_start=false).
JOB_TERMINAL = ("succeeded", "failed", "cancelled")


def submit(
    workspace: Workspace,
    *,
    method: str,
    base_model: str,
    training_files: list[dict[str, Any]],
    validation_file: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    auto_start: bool = True,
    integrations: list[Any] | None = None,
    api: str = "openai",
    metadata: dict[str, str] | None = None,
) -> FineTuningJob:
    """Validate the request against the registry and queue it (or hold it as `created`).

    `api` is the dialect the job was created in (openai | mistral): the server answers
    about the job in that shape. `metadata` is the caller's, echoed back.
    """
    if method not in METHODS:
        raise InputError(
            f"method.type must be one of {', '.join(METHODS)}, got {method!r}", field="method"
        )
    base = workspace.registry.resolve(base_model, kind="model", purpose="be fine-tuned")
    with workspace.registry.session() as session:
        for entry in training_files + ([{"file_id": validation_file}] if validation_file else []):
            stored = session.get(StoredFile, entry["file_id"])
            if stored is None or stored.deleted_at is not None:
                raise NotFoundError(
                    f"no file {entry['file_id']!r}", hint="Upload it to /v1/files first."
                )
        job = FineTuningJob(
            id="ftjob-" + secrets.token_hex(12),
            method=method,
            base_model=base_model,
            spec={
                "base_sha256": base.sha256,
                "training_files": training_files,
                "validation_file": validation_file,
                "hyperparameters": hyperparameters or {},
                "suffix": suffix,
                "seed": seed if seed is not None else secrets.randbelow(2**31),
                "integrations": integrations or [],
                "auto_start": auto_start,
                "api": api,
                "metadata": metadata,
            },
            status="queued" if auto_start else "created",
        )
        session.add(job)
        workspace.registry.audit(session, "job.create", job.id, method=method, base=base_model)
        return job


def get_job(workspace: Workspace, job_id: str) -> FineTuningJob:
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        return job


def list_jobs(
    workspace: Workspace, limit: int = 20, after: str | None = None
) -> list[FineTuningJob]:
    with workspace.registry.session() as session:
        query = select(FineTuningJob).order_by(FineTuningJob.created_at.desc(), FineTuningJob.id)
        if after:
            anchor = session.get(FineTuningJob, after)
            if anchor is not None:
                query = query.where(FineTuningJob.created_at < anchor.created_at)
        return list(session.scalars(query.limit(limit)))


def start(workspace: Workspace, job_id: str) -> FineTuningJob:
    """Queue a job held as `created` (Mistral's `auto_start: false`)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status != "created":
            raise ConflictError(f"job {job_id} is {job.status}; only a created job can be started")
        job.status = "queued"
        workspace.registry.audit(session, "job.start", job_id)
        return job


def cancel(workspace: Workspace, job_id: str) -> FineTuningJob:
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status in JOB_TERMINAL:
            raise ConflictError(f"job {job_id} already {job.status}")
        job.cancel_requested = True
        if job.status in ("queued", "created"):
            job.status, job.finished_at = "cancelled", utcnow()
        run_id = job.run_id
        workspace.registry.audit(session, "job.cancel", job_id)
    if run_id:
        try:
            request_cancel(workspace, run_id)
        except ConflictError:
            pass  # the run finished in the meantime; the worker records the outcome
    return get_job(workspace, job_id)


def claim_next(workspace: Workspace) -> FineTuningJob | None:
    """Take the oldest queued job, or one whose worker died; exactly one worker gets it.

    The status change happens in one write transaction (SQLite: BEGIN IMMEDIATE; other
    databases: SELECT ... FOR UPDATE SKIP LOCKED), so two workers never share a job.
    """
    mark_dead_runs(workspace)
    with workspace.registry.session() as session:
        orphaned = (
            select(FineTuningJob)
            .join(Run, Run.id == FineTuningJob.run_id)
            .where(FineTuningJob.status == "running", Run.status == "interrupted")
        )
        queued = select(FineTuningJob).where(FineTuningJob.status == "queued")
        for query in (orphaned, queued):
            query = query.order_by(FineTuningJob.created_at).limit(1)
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            job = session.scalars(query).first()
            if job is not None:
                job.status, job.started_at = "running", job.started_at or utcnow()
                return job
    return None


def finish(
    workspace: Workspace,
    job_id: str,
    status: str,
    *,
    model: str | None = None,
    error: str | None = None,
) -> None:
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        job.status, job.finished_at = status, utcnow()
        job.fine_tuned_model, job.error = model, error
        workspace.registry.audit(session, f"job.{status}", job_id, model=model)


def requeue(workspace: Workspace, job_id: str) -> None:
    """Put a job whose worker is stopping back in the queue (its run resumes later)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job.status == "running":
            job.status = "cancelled" if job.cancel_requested else "queued"
            if job.cancel_requested:
                job.finished_at = utcnow()
            workspace.registry.audit(session, "job.requeue", job_id, status=job.status)


def attach_run(workspace: Workspace, job_id: str, run_id: str) -> None:
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        job.run_id = run_id
        run = session.get(Run, run_id)
        if job.cancel_requested and run is not None and run.status not in TERMINAL:
            run.cancel_requested = True  # cancelled between two runs: stop this one too


def job_events(workspace: Workspace, job: FineTuningJob, limit: int = 100) -> list[RunEvent]:
    """The training run's events (status changes, metrics, checkpoints), oldest first."""
    if not job.run_id:
        return []
    with workspace.registry.session() as session:
        query = (
            select(RunEvent)
            .where(RunEvent.run_id == job.run_id)
            .order_by(RunEvent.id.desc())
            .limit(limit)
        )
        return list(session.scalars(query))[::-1]


def is_finished(status: str) -> bool:
    return status in JOB_TERMINAL or status in TERMINAL
