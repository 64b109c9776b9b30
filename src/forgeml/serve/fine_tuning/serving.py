"""A fine-tuning job as OpenAI and as Mistral describe it.

    view = load_view(workspace, job)          # blocking: the job's run, events, outputs
    openai_job(view) / mistral_job(view)      # the two job objects

Statuses (ours → OpenAI / Mistral):

    created     → queued    / VALIDATED   (Mistral's auto_start=false: waits for /start)
    queued      → queued    / QUEUED
    running     → running   / RUNNING     (CANCELLATION_REQUESTED once cancel is asked)
    succeeded   → succeeded / SUCCESS
    failed      → failed    / FAILED
    cancelled   → cancelled / CANCELLED
    pausing     → running   / RUNNING     (OpenAI's pause asked; the run is checkpointing)
    paused      → paused    / VALIDATED   (waits for OpenAI's /resume or Mistral's /start)

Files are validated at upload, so no job is ever `validating_files`/`FAILED_VALIDATION`.
Which shape a request gets (`wants_mistral`): the mistralai SDK's User-Agent or
Mistral's paging parameters mean Mistral's, the openai SDK's User-Agent OpenAI's, and
otherwise the shape the job was created in (lists: OpenAI's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.schema import FineTuningJob, Run, RunEvent, unix_time
from forgeml.core.workspace import Workspace
from forgeml.jobs import integrations, queue
from forgeml.plan.hardware import HARDWARE
from forgeml.serve.chat.serving import MISTRAL_USER_AGENT
from forgeml.serve.fine_tuning import protocol as p
from forgeml.serve.fine_tuning.submission import PARAMS_FOR_METHOD, training_params
from forgeml.train.finetune_params import FinetuneParams

OPENAI_STATUS = {"created": "queued", "pausing": "running"}
MISTRAL_STATUS = {
    "created": "VALIDATED",
    "paused": "VALIDATED",
    "queued": "QUEUED",
    "running": "RUNNING",
    "succeeded": "SUCCESS",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}


def wants_mistral(request: Request, job: FineTuningJob | None = None) -> bool:
    agent = request.headers.get("user-agent", "").lower()
    if MISTRAL_USER_AGENT in agent:
        return True
    if agent.startswith("openai/"):
        return False
    if {"page", "page_size"} & set(request.query_params):
        return True
    return job is not None and job.spec.get("api") == "mistral"


def openai_status(job: FineTuningJob) -> str:
    return OPENAI_STATUS.get(job.status, job.status)


def mistral_status(job: FineTuningJob) -> str:
    if job.status == "running" and job.cancel_requested:
        return "CANCELLATION_REQUESTED"
    return MISTRAL_STATUS.get(job.status, "RUNNING")


@dataclass
class Event:
    id: str
    created_at: int
    message: str
    level: str = "info"  # info | warn | error
    type: str = "message"  # message | metrics
    data: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # set on the job's own status changes


@dataclass
class JobView:
    job: FineTuningJob
    params: FinetuneParams  # what it trains with, defaults filled in
    run_metrics: dict[str, Any]
    trained_tokens: int | None
    events: list[Event]  # oldest first
    estimate: dict[str, Any] | None = None  # a created job's plan (Mistral's `metadata`)
    # Models made of the run's earlier kept checkpoints: (name, checkpoint.json), by step.
    earlier_checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def load_view(
    workspace: Workspace, job: FineTuningJob, events: bool = True, hardware: str = "cpu-2"
) -> JobView:
    run_metrics: dict[str, Any] = {}
    if job.run_id:
        with workspace.registry.session() as session:
            run = session.get(Run, job.run_id)
            run_metrics = dict(run.metrics or {}) if run is not None else {}
    record = _training_record(workspace, job)
    return JobView(
        job=job,
        params=_resolved(workspace, job, _params(job), record),
        run_metrics=run_metrics,
        trained_tokens=(record or {}).get("data", {}).get("trained_tokens"),
        events=_events(workspace, job) if events else [],
        estimate=_estimate(workspace, job, hardware) if job.status == "created" else None,
        earlier_checkpoints=_earlier_checkpoints(workspace, job),
    )


def _earlier_checkpoints(
    workspace: Workspace, job: FineTuningJob
) -> list[tuple[str, dict[str, Any]]]:
    """The `<fine_tuned_model>-step-N` models the worker made (jobs/worker.py)."""
    if job.status != "succeeded" or not job.fine_tuned_model:
        return []
    prefix = f"{job.fine_tuned_model}-step-"
    found = []
    for row in workspace.registry.list_versions(kind="model"):
        if not row["name"].startswith(prefix) or not row["name"][len(prefix) :].isdigit():
            continue
        try:
            model = workspace.registry.resolve(f"{row['name']}:{row['version']}", kind="model")
            record = json.loads((workspace.local_path(model) / "checkpoint.json").read_text())
        except (ForgeError, OSError, ValueError):
            continue
        found.append((row["name"], record))
    return sorted(found, key=lambda item: item[1].get("step") or 0)


def _estimate(workspace: Workspace, job: FineTuningJob, hardware: str) -> dict[str, Any] | None:
    from forgeml.plan.estimate import estimate_job  # torch: not for a server that lacks it

    try:
        return estimate_job(workspace, job, HARDWARE[hardware])
    except (ForgeError, OSError, KeyError, ValueError):  # a plan is a courtesy, not a gate
        return None


def _params(job: FineTuningJob) -> FinetuneParams:
    try:
        return training_params(job.method, job.spec.get("hyperparameters") or {})
    except InputError:  # queued by other means than the API: show the defaults
        return PARAMS_FOR_METHOD[job.method]()


def _resolved(
    workspace: Workspace, job: FineTuningJob, params: FinetuneParams, record: dict | None
) -> FinetuneParams:
    """What the job trained with (its model's training record), or before that the
    parameters with the learning rate the stage will choose for the base model's size
    (its weight files' bytes over the bytes a weight takes)."""
    try:
        chosen = {key: record["params"][key] for key in ("epochs", "batch_size", "learning_rate")}
        return params.model_copy(update=chosen)
    except (KeyError, TypeError):  # no record yet, or one without these
        pass
    if params.learning_rate is not None:
        return params
    try:
        directory = (
            workspace.root
            / workspace.registry.resolve(
                f"model/{job.spec['base_sha256']}", purpose="be fine-tuned"
            ).path
        )
        config = json.loads((directory / "config.json").read_text())
        width = 2 if str(config.get("torch_dtype") or config.get("dtype")) in BF16 else 4
        size = sum(path.stat().st_size for path in directory.glob("*.safetensors"))
        return params.resolved(size // width)
    except (ForgeError, OSError, KeyError, ValueError):
        return params


BF16 = ("bfloat16", "float16")


def _training_record(workspace: Workspace, job: FineTuningJob) -> dict[str, Any] | None:
    """The fine-tuned model's training.json (resolved parameters, trained tokens), read
    once per job view; None before the job has a model."""
    if not job.fine_tuned_model:
        return None
    try:
        model = workspace.registry.resolve(job.fine_tuned_model, kind="model")
        record = json.loads((workspace.local_path(model) / "training.json").read_text())
    except (ForgeError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _events(workspace: Workspace, job: FineTuningJob) -> list[Event]:
    """The job's own status changes around the events of its current run."""
    short = job.id.removeprefix("ftjob-")[:12]
    first = "created" if job.spec.get("auto_start") is False else "queued"
    created = unix_time(job.created_at)
    events = [Event(f"ftevent-{short}-created", created, "Created fine-tuning job", status=first)]
    if job.started_at:
        started = unix_time(job.started_at)
        events.append(Event(f"ftevent-{short}-started", started, "Fine-tuning job started"))
        events[-1].status = "running"
    events += [_run_event(row) for row in queue.job_events(workspace, job, limit=1000)]
    if job.finished_at:
        done, last = unix_time(job.finished_at), f"ftevent-{short}-finished"
        if job.status == "succeeded":
            model = f"New fine-tuned model created: {job.fine_tuned_model}"
            events.append(Event(f"ftevent-{short}-model", done, model))
            events.append(Event(last, done, "The job has successfully completed"))
        elif job.status == "failed":
            events.append(Event(last, done, f"The job failed: {job.error}", level="error"))
        else:
            events.append(Event(last, done, f"The job was {job.status}"))
        events[-1].status = job.status
    events.sort(key=lambda event: event.created_at)  # stable: equal times keep their order
    return events


def _run_event(row: RunEvent) -> Event:
    event = Event(f"ftevent-{row.id}", unix_time(row.time), row.message, data=dict(row.data or {}))
    if row.kind == "metric":  # OpenAI calls the training loss train_loss
        event.type = "metrics"
        event.data = {"step": row.step, **event.data}
        shown = [f"{k}={v:.4g}" for k, v in event.data.items() if isinstance(v, float)]
        if "loss" in event.data:
            event.data["train_loss"] = event.data["loss"]
        event.message = f"Step {row.step}: " + ", ".join(shown)
    elif row.kind == "warning":
        event.level = "warn"
    elif row.kind == "status":
        status = event.data.get("status", "")
        event.level = "error" if status == "failed" else "info"
        event.message = f"Run {row.run_id} {status}" + (f": {row.message}" if row.message else "")
    return event


def _checkpoint(view: JobView) -> p.CheckpointMetrics | None:
    """A succeeded job's one usable checkpoint: its final model."""
    if view.job.status != "succeeded" or not view.job.fine_tuned_model:
        return None
    metrics = view.run_metrics
    return p.CheckpointMetrics(
        step=metrics.get("steps"),
        train_loss=metrics.get("train_loss"),
        valid_loss=metrics.get("val_loss"),
        full_valid_loss=metrics.get("val_loss"),
    )


# --- OpenAI --------------------------------------------------------------------------------


def openai_hyperparameters(view: JobView) -> dict[str, Any]:
    params = view.params
    epochs: Any = params.epochs
    if epochs is None:  # chosen from the data's size when the job trains
        epochs = "auto"
    elif float(epochs).is_integer():
        epochs = int(epochs)
    shown: dict[str, Any] = {
        "batch_size": "auto" if params.batch_size is None else params.batch_size,
        "learning_rate_multiplier": params.learning_rate_multiplier,
        "n_epochs": epochs,
    }
    if view.job.method == "dpo":
        shown["beta"] = params.beta  # type: ignore[attr-defined]
    return shown


def openai_job(view: JobView) -> p.OpenAIJob:
    job, spec = view.job, view.job.spec
    hyperparameters = openai_hyperparameters(view)
    method: dict[str, Any] = {"type": job.method, job.method: {"hyperparameters": hyperparameters}}
    if job.method == "reinforcement":
        method[job.method]["grader"] = (spec.get("hyperparameters") or {}).get("rewards", [None])[0]
    return p.OpenAIJob(
        id=job.id,
        created_at=unix_time(job.created_at),
        error=p.OpenAIJobError(code="job_failed", message=job.error or "failed")
        if job.status == "failed"
        else None,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=unix_time(job.finished_at) if job.finished_at else None,
        hyperparameters=hyperparameters,
        model=job.base_model,
        seed=spec.get("seed", 0),
        status=openai_status(job),
        trained_tokens=view.trained_tokens,
        training_file=spec["training_files"][0]["file_id"],
        validation_file=spec.get("validation_file"),
        integrations=integrations.openai_view(spec.get("integrations") or []) or None,
        metadata=spec.get("metadata"),
        method=method,
    )


def openai_events(view: JobView, after: str | None, limit: int) -> p.OpenAIEventList:
    newest_first = view.events[::-1]
    ids = [event.id for event in newest_first]
    start = ids.index(after) + 1 if after in ids else 0
    shown = newest_first[start : start + limit]
    return p.OpenAIEventList(
        data=[
            p.OpenAIEvent(
                id=e.id,
                created_at=e.created_at,
                level=e.level,
                message=e.message,
                data=e.data or None,
                type=e.type,
            )
            for e in shown
        ],
        has_more=start + limit < len(newest_first),
    )


def openai_checkpoints(view: JobView) -> p.OpenAICheckpointList:
    """The final model and the models made of earlier kept checkpoints, newest first
    (as OpenAI lists them); each `fine_tuned_model_checkpoint` is a servable model name."""
    metrics = _checkpoint(view)
    if metrics is None:
        return p.OpenAICheckpointList(data=[])
    job = view.job
    created = unix_time(job.finished_at or job.created_at)
    short = job.id.removeprefix("ftjob-")
    found = [
        p.OpenAICheckpoint(
            id=f"ftckpt-{short}-step-{record.get('step')}",
            created_at=created,
            fine_tuned_model_checkpoint=name,
            fine_tuning_job_id=job.id,
            metrics=p.CheckpointMetrics(
                step=record.get("step"),
                train_loss=record.get("train_loss"),
                valid_loss=record.get("valid_loss"),
                full_valid_loss=record.get("valid_loss"),
            ),
            step_number=int(record.get("step") or 0),
        )
        for name, record in view.earlier_checkpoints
    ]
    final = p.OpenAICheckpoint(
        id="ftckpt-" + short,
        created_at=created,
        fine_tuned_model_checkpoint=job.fine_tuned_model,
        fine_tuning_job_id=job.id,
        metrics=metrics,
        step_number=int(metrics.step or 0),
    )
    data = [final, *reversed(found)]
    return p.OpenAICheckpointList(data=data, first_id=data[0].id, last_id=data[-1].id)


# --- Mistral -------------------------------------------------------------------------------


def mistral_job(view: JobView, details: bool = True) -> p.MistralJob:
    job, spec, params = view.job, view.job.spec, view.params
    times = [job.created_at, job.started_at, job.finished_at]
    return p.MistralJob(
        id=job.id,
        job_type="classifier" if job.method == "classifier" else "completion",
        auto_start=spec.get("auto_start", True),
        model=job.base_model,
        status=mistral_status(job),
        created_at=unix_time(job.created_at),
        modified_at=max(unix_time(t) for t in times if t is not None),
        training_files=[entry["file_id"] for entry in spec["training_files"]],
        validation_files=[spec["validation_file"]] if spec.get("validation_file") else None,
        hyperparameters=p.MistralHyperparameters(
            training_steps=params.max_steps,
            learning_rate=params.learning_rate,
            weight_decay=params.weight_decay,
            warmup_fraction=params.warmup_fraction,
            epochs=params.epochs,
            seq_len=params.seq_len,
        ),
        fine_tuned_model=job.fine_tuned_model,
        suffix=spec.get("suffix"),
        integrations=integrations.mistral_view(spec.get("integrations") or []),
        trained_tokens=view.trained_tokens,
        metadata=view.estimate,
        events=[
            p.MistralEvent(
                name="status-updated",
                created_at=e.created_at,
                data={"status": MISTRAL_STATUS[e.status]},
            )
            for e in view.events
            if e.status in MISTRAL_STATUS
        ]
        if details
        else None,
        checkpoints=[
            p.MistralCheckpoint(
                metrics=item.metrics,
                step_number=item.step_number,
                created_at=item.created_at,
            )
            for item in openai_checkpoints(view).data
        ]
        if details
        else None,
    )
