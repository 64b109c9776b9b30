"""Fine-tuning jobs: a durable queue in the registry, executed by `forgeml jobs worker`.

A job is submitted by the API (OpenAI's or Mistral's shape, normalised by the server),
waits as `queued`, is claimed by exactly one worker, and becomes ordinary stage runs:
`data.ingest` of the uploaded training file, then the method's training stage. Because
the state lives in the database, a job survives a restart of the server or the worker;
a job whose worker died is claimed again and its run resumes from its checkpoints.

Leases: a worker claims a job for `LEASE_SECONDS` and renews the lease while it works
(lease.py). A job whose lease ran out, or whose worker on this host is gone, is taken
up again by the next worker; after `MAX_ATTEMPTS` claims it is `failed` with the reason
instead, so a job that kills its worker cannot crash-loop it. `cancel` always ends a
job: at once when no live worker holds it, else by the worker within
`CANCEL_GRACE_SECONDS` (its runs are asked to stop; the lease thread ends the job if a
run does not notice).

Pause: a queued job is `paused` at once; a running one is `pausing` while its run stops
at the next step boundary, after a checkpoint (the same stop as cancel), and then
`paused`. `resume` queues it again: the worker that claims it reruns the same stages,
whose runs have the same keys, so ingest is reused and training resumes from the
checkpoint it stopped at (core/runs.py).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from forgeml.core.errors import ConflictError, InputError, NotFoundError
from forgeml.core.runs import TERMINAL, mark_dead_runs
from forgeml.core.schema import FineTuningJob, Run, RunEvent, StoredFile, utcnow
from forgeml.core.store import _pid_alive

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

METHODS = ("supervised", "dpo", "reinforcement", "classifier")
# Job statuses are forgeml run statuses plus `created` (Mistral's auto_start=false) and
# `pausing` / `paused` (OpenAI's pause).
JOB_TERMINAL = ("succeeded", "failed", "cancelled")
WORKING = ("running", "pausing")  # a worker holds the job (while its lease is live)
LEASE_SECONDS = 60.0  # a worker renews its lease every LEASE_SECONDS / 4
MAX_ATTEMPTS = 3  # claims before a job whose worker keeps dying is failed
CANCEL_GRACE_SECONDS = 30.0  # a running job's worker ends it within this after cancel


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
    audit: dict[str, Any] | None = None,
) -> FineTuningJob:
    """Validate the request against the registry and queue it (or hold it as `created`).

    `api` is the dialect the job was created in (openai | mistral): the server answers
    about the job in that shape. `metadata` is the caller's, echoed back. `audit` adds
    details to the audit entry (the API key that asked).
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
        workspace.registry.audit(
            session, "job.create", job.id, method=method, base=base_model, **(audit or {})
        )
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


def start(workspace: Workspace, job_id: str, audit: dict[str, Any] | None = None) -> FineTuningJob:
    """Queue a job held as `created` (Mistral's `auto_start: false`) or `paused` (which
    Mistral's API shows as VALIDATED, so its /start resumes it)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status not in ("created", "paused"):
            raise ConflictError(
                f"job {job_id} is {job.status}; only a created or paused job can be started"
            )
        job.status = "queued"
        workspace.registry.audit(session, "job.start", job_id, **(audit or {}))
        return job


def cancel(workspace: Workspace, job_id: str, audit: dict[str, Any] | None = None) -> FineTuningJob:
    """End a job: at once unless a live worker holds it, which then ends it (see module)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status in JOB_TERMINAL:
            raise ConflictError(f"job {job_id} already {job.status}")
        job.cancel_requested = True
        if job.status not in WORKING or not lease_is_live(job):
            _end(job, "cancelled")
        _cancel_runs(session, job)
        workspace.registry.audit(session, "job.cancel", job_id, **(audit or {}))
    return get_job(workspace, job_id)


def pause(workspace: Workspace, job_id: str, audit: dict[str, Any] | None = None) -> FineTuningJob:
    """Stop a job where its training can resume: at once unless a live worker holds it,
    which then stops its run after a checkpoint (see module)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status not in ("queued", "running"):
            raise ConflictError(
                f"job {job_id} is {job.status}; only a queued or running job can be paused"
            )
        if job.status == "running" and lease_is_live(job):
            job.status = "pausing"
            _cancel_runs(session, job)  # the runs checkpoint and stop; the worker records it
        else:
            job.status, job.lease_owner, job.lease_expires_at = "paused", None, None
        workspace.registry.audit(session, "job.pause", job_id, **(audit or {}))
    return get_job(workspace, job_id)


def resume(workspace: Workspace, job_id: str, audit: dict[str, Any] | None = None) -> FineTuningJob:
    """Queue a paused job again; its training continues from where it stopped."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFoundError(f"no fine-tuning job {job_id!r}")
        if job.status != "paused":
            hint = " (it is still stopping: resume once it is paused)" * (job.status == "pausing")
            raise ConflictError(
                f"job {job_id} is {job.status}; only a paused job can be resumed{hint}"
            )
        job.status = "queued"
        workspace.registry.audit(session, "job.resume", job_id, **(audit or {}))
    return get_job(workspace, job_id)


def paused(workspace: Workspace, job_id: str, owner: str) -> bool:
    """The worker's run stopped because the job is pausing: record it paused. False when
    the job is not pausing (a cancel, which wins)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job.status != "pausing" or job.lease_owner != owner or job.cancel_requested:
            return False
        job.status, job.lease_owner, job.lease_expires_at = "paused", None, None
        job.attempts = max(0, job.attempts - 1)  # a stop asked for is not a failed attempt
        workspace.registry.audit(session, "job.paused", job_id)
        return True


def stop_asked(workspace: Workspace, job_id: str) -> bool:
    """Cancel or pause asked: the worker starts no further stage of the job."""
    job = get_job(workspace, job_id)
    return job.cancel_requested or job.status == "pausing"


def _cancel_runs(session, job: FineTuningJob) -> None:
    """Ask every unfinished run of the job to stop (a run checks between steps)."""
    for run_id in {*(job.run_ids or []), *([job.run_id] if job.run_id else [])}:
        run = session.get(Run, run_id)
        if run is not None and run.status not in TERMINAL:
            run.cancel_requested = True
            if run.status == "queued":
                run.status, run.finished_at = "cancelled", utcnow()


def _end(job: FineTuningJob, status: str, error: str | None = None) -> None:
    job.status, job.finished_at = status, utcnow()
    job.error = error if error is not None else job.error
    job.lease_owner = job.lease_expires_at = None


def worker_id() -> str:
    """This worker's lease owner: host, pid (to see it die on this host) and a token."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:128]


# Cluster backends a dispatcher hands jobs to; a lease owner `backend:id` is that
# cluster's job (see `hand_over`).
CLUSTER_BACKENDS = ("slurm", "ray")


def _cluster_of(owner: str) -> str | None:
    backend = owner.partition(":")[0]
    return backend if backend in CLUSTER_BACKENDS else None


def lease_is_live(job: FineTuningJob, cluster_holds: set[str] | None = None) -> bool:
    """A worker holds the job: its lease has not run out, and its process lives if local.
    `cluster_holds`: the lapsed `slurm:`/`ray:` owners their cluster still runs, asked
    beforehand (see `claim_next`); without it the cluster is asked here."""
    if not job.lease_owner or job.lease_expires_at is None:
        return False
    expires = _aware(job.lease_expires_at)
    if _cluster_of(job.lease_owner):  # handed to a cluster (`hand_over`)
        if expires > utcnow():
            return True
        if cluster_holds is not None:
            return job.lease_owner in cluster_holds
        return _cluster_still_has(job)
    if expires <= utcnow():
        return False
    host, _, rest = job.lease_owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    return True  # another machine's worker: trust its lease until it runs out


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their (UTC) zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


def _cluster_leases_still_held(workspace: Workspace) -> set[str]:
    """The `slurm:`/`ray:` lease owners that have lapsed, or are about to, whose cluster
    job is still queued or running. Asked before `claim_next` takes its write lock, so no
    cluster call (seconds, more if a controller is down) holds up other writers."""
    soon = utcnow() + timedelta(seconds=LEASE_SECONDS / 4)
    handed = or_(*(FineTuningJob.lease_owner.startswith(f"{b}:") for b in CLUSTER_BACKENDS))
    with workspace.registry.reading() as session:
        lapsing = [
            job
            for job in session.scalars(
                select(FineTuningJob).where(FineTuningJob.status.in_(WORKING)).where(handed)
            )
            if job.lease_expires_at is not None and _aware(job.lease_expires_at) <= soon
        ]
    return {job.lease_owner for job in lapsing if _cluster_still_has(job)}


def _cluster_still_has(job: FineTuningJob) -> bool:
    """A cluster job whose lease no dispatcher renewed (none runs): it is still the
    cluster's while it has it queued or running, so no worker takes it up a second time."""
    backend, _, external_id = job.lease_owner.partition(":")
    if backend == "slurm":
        from forgeml.jobs import slurm  # late: those modules build on this one

        return slurm.still_has(external_id)
    from forgeml.jobs import on_ray

    return on_ray.still_has(external_id, (job.spec or {}).get("dispatched", {}))


def claim_next(workspace: Workspace, owner: str | None = None) -> FineTuningJob | None:
    """Take the oldest queued job, or one whose worker died; exactly one worker gets it.

    The status change happens in one write transaction (SQLite: BEGIN IMMEDIATE; other
    databases: SELECT ... FOR UPDATE SKIP LOCKED), so two workers never share a job. A
    job taken up `MAX_ATTEMPTS` times already is failed instead, and one whose cancel
    came while no worker held it is cancelled.
    """
    owner = owner or worker_id()
    mark_dead_runs(workspace)
    cluster_holds = _cluster_leases_still_held(workspace)
    while True:
        with workspace.registry.session() as session:
            query = (
                select(FineTuningJob)
                .where(
                    or_(
                        FineTuningJob.status == "queued",
                        FineTuningJob.status == "running",
                        FineTuningJob.status == "pausing",
                    )
                )
                .order_by(FineTuningJob.created_at)
            )
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            job = next(
                (
                    j
                    for j in session.scalars(query)
                    if j.status == "queued" or not lease_is_live(j, cluster_holds)
                ),
                None,
            )
            if job is None:
                return None
            if job.status == "pausing":  # its worker died while it stopped: it is paused
                job.status, job.lease_owner, job.lease_expires_at = "paused", None, None
                workspace.registry.audit(session, "job.paused", job.id)
                continue
            if job.cancel_requested:
                _end(job, "cancelled")
                workspace.registry.audit(session, "job.cancelled", job.id)
                continue
            if job.attempts >= MAX_ATTEMPTS:
                error = (
                    f"its worker stopped {job.attempts} times before the job finished "
                    "(killed, out of memory, or the machine went away); see "
                    "serving/job-workers.log in the workspace"
                )
                _end(job, "failed", error)
                workspace.registry.audit(session, "job.failed", job.id, error=error)
                continue
            job.status, job.started_at = "running", job.started_at or utcnow()
            job.attempts += 1
            job.lease_owner = owner
            job.lease_expires_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
            return job


def renew_lease(workspace: Workspace, job_id: str, owner: str) -> FineTuningJob | None:
    """Extend the lease; None when the job is no longer this worker's (ended, retaken)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None or job.status not in WORKING or job.lease_owner != owner:
            return None
        job.lease_expires_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
        return job


def finish(
    workspace: Workspace,
    job_id: str,
    status: str,
    *,
    owner: str | None = None,
    model: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome, unless the job ended meanwhile or another worker holds it."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job.status in JOB_TERMINAL or (owner is not None and job.lease_owner != owner):
            return False
        _end(job, status, error)
        job.fine_tuned_model = model
        workspace.registry.audit(session, f"job.{status}", job_id, model=model)
        return True


def requeue(workspace: Workspace, job_id: str, owner: str | None = None) -> None:
    """Put a job whose worker is stopping back in the queue (its run resumes later); a
    stop asked for is not a failed attempt."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job.status in WORKING and (owner is None or job.lease_owner == owner):
            if job.cancel_requested:
                _end(job, "cancelled")
            elif job.status == "pausing":
                job.status, job.lease_owner, job.lease_expires_at = "paused", None, None
            else:
                job.status, job.lease_owner, job.lease_expires_at = "queued", None, None
                job.attempts = max(0, job.attempts - 1)
            workspace.registry.audit(session, "job.requeue", job_id, status=job.status)


def hand_over(
    workspace: Workspace,
    job_id: str,
    owner: str,
    backend: str,
    external_id: str,
    details: dict | None = None,
) -> bool:
    """Pass a claimed job's lease from `owner` (a dispatcher) to the cluster job that will
    run it, `backend:external_id` (`slurm:1234`), and record where it went (with
    `details`, e.g. the Ray cluster's address): the lease then outlives the dispatcher
    (see `lease_is_live`). False if `owner` no longer holds it."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        if job.status not in WORKING or job.lease_owner != owner:
            return False
        where = {"backend": backend, "job": external_id, **(details or {})}
        job.spec = {**job.spec, "dispatched": where}
        job.lease_owner = f"{backend}:{external_id}"
        job.lease_expires_at = utcnow() + timedelta(seconds=LEASE_SECONDS)
        workspace.registry.audit(
            session, "job.dispatched", job_id, backend=backend, job=external_id
        )
        return True


def dispatched(workspace: Workspace, backend: str) -> list[FineTuningJob]:
    """The working jobs a cluster holds (their lease owner is `backend:...`), whichever
    dispatcher handed them over: a restarted dispatcher watches them on."""
    with workspace.registry.session() as session:
        query = (
            select(FineTuningJob)
            .where(FineTuningJob.status.in_(WORKING))
            .where(FineTuningJob.lease_owner.startswith(f"{backend}:"))
            .order_by(FineTuningJob.created_at)
        )
        return list(session.scalars(query))


def held_by(workspace: Workspace, job_id: str, owner: str) -> FineTuningJob:
    """The job, if `owner` holds it and it is still working; else an error saying why."""
    job = get_job(workspace, job_id)
    if job.status not in WORKING or job.lease_owner != owner:
        raise ConflictError(
            f"job {job_id} is {job.status} and not held by {owner}: nothing to run",
            hint="a dispatcher hands jobs over with their owner; see `forgeml jobs list`",
        )
    return job


def attach_run(workspace: Workspace, job_id: str, run_id: str) -> None:
    """Link a run the job started (every one, so cancel reaches each)."""
    with workspace.registry.session() as session:
        job = session.get(FineTuningJob, job_id)
        job.run_id = run_id
        if run_id not in (job.run_ids or []):
            job.run_ids = [*(job.run_ids or []), run_id]
        run = session.get(Run, run_id)
        stopping = job.cancel_requested or job.status == "pausing"
        if stopping and run is not None and run.status not in TERMINAL:
            run.cancel_requested = True  # cancelled or paused between two runs: stop this one


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
