"""`forgeml jobs worker`: executes queued fine-tuning jobs, one at a time, outside the server.

    forgeml jobs worker            # poll forever (`forgeml serve` starts one for you)
    forgeml jobs worker --once     # run what is queued, then exit

Each job becomes ordinary recorded runs: `data.ingest` of its training file, then the
method's training stage on the base model. The fine-tuned model is named
`ft-<base>-<suffix>-<job>` and can be used in chat completions as soon as it succeeds.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from forgeml.core.errors import ForgeError, RunCancelled
from forgeml.core.runs import run_stage
from forgeml.core.schema import FineTuningJob, StoredFile
from forgeml.core.stages import get_stage
from forgeml.jobs import integrations, policy, queue
from forgeml.jobs.lease import LeaseKeeper

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.jobs")

STAGE_FOR_METHOD = {
    "supervised": "train.sft",
    "dpo": "train.preference",
    "reinforcement": "train.rl",
    "classifier": "train.classify",  # Mistral's job_type "classifier"
}
# API hyperparameter names (OpenAI and Mistral) -> our stage parameter names.
HYPERPARAMETER_NAMES = {
    "n_epochs": "epochs",
    "epochs": "epochs",
    "training_steps": "max_steps",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "beta": "beta",
    "warmup_fraction": "warmup_fraction",
    "weight_decay": "weight_decay",
    "seq_len": "seq_len",
}


def model_name(job: FineTuningJob) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "-", job.base_model)
    suffix = job.spec.get("suffix")
    middle = f"-{re.sub(r'[^A-Za-z0-9._-]', '-', suffix)}" if suffix else ""
    return f"ft-{base}{middle}-{job.id.removeprefix('ftjob-')[:8]}"[:128]


def stage_params(job: FineTuningJob, stage_name: str) -> tuple[dict[str, Any], list[str]]:
    """Translate API hyperparameters to the stage's parameters; report what it ignores.

    The model's name is always the job's (policy.py): a `name` here is ignored."""
    fields = get_stage(stage_name).params.model_fields
    params: dict[str, Any] = {}
    ignored = []
    hyperparameters = job.spec.get("hyperparameters") or {}
    for key, value in hyperparameters.items():
        target = HYPERPARAMETER_NAMES.get(key, key)
        if value in (None, "auto") or target == "name":
            continue
        if target in fields:  # learning_rate_multiplier scales the chosen rate (params)
            params[target] = value
        else:
            ignored.append(key)
    if "name" in fields:
        params["name"] = model_name(job)
    if job.spec.get("integrations") and "integrations" in fields:
        params["integrations"] = integrations.stage_integrations(job.spec["integrations"], job.id)
    return params, ignored


def file_paths(workspace: Workspace, file_ids: list[str]) -> list[str]:
    with workspace.registry.session() as session:
        return [str(workspace.local_path(session.get(StoredFile, file_id))) for file_id in file_ids]


def run_job(workspace: Workspace, job: FineTuningJob) -> str:
    """Execute one claimed job; returns the fine-tuned model's name."""
    policy.check_job_spec(job.spec)  # again: the job may predate the API's checks
    seed = int(job.spec["seed"])
    files = job.spec["training_files"]
    if len({float(f.get("weight", 1.0)) for f in files}) > 1:
        raise ForgeError(
            "training files with different weights are not supported yet; use equal weights"
        )
    ingest = run_stage(
        workspace,
        "data.ingest",
        {
            "paths": file_paths(workspace, [f["file_id"] for f in files]),
            "name": f"{job.id}-training",
        },
        seed=seed,
        quiet=True,
        # Linked while it runs, so a worker that dies here leaves a job claim_next retakes.
        on_start=lambda run_id: queue.attach_run(workspace, job.id, run_id),
    )
    stage_name = STAGE_FOR_METHOD[job.method]
    params, ignored = stage_params(job, stage_name)
    inputs: dict[str, Any] = {
        "model": job.spec["base_sha256"],
        "dataset": ingest.outputs["dataset"],
    }
    if job.spec.get("validation_file") and "validation" in get_stage(stage_name).inputs:
        validation = run_stage(
            workspace,
            "data.ingest",
            {
                "paths": file_paths(workspace, [job.spec["validation_file"]]),
                "name": f"{job.id}-validation",
            },
            seed=seed,
            quiet=True,
            on_start=lambda run_id: queue.attach_run(workspace, job.id, run_id),
        )
        inputs["validation"] = validation.outputs["dataset"]
    if queue.stop_asked(workspace, job.id):  # cancelled or paused while ingesting
        raise RunCancelled(f"job {job.id} was stopped before training")
    if ignored:
        log.warning(
            "%s: hyperparameters not used by %s: %s", job.id, stage_name, ", ".join(ignored)
        )
    if "max_steps" in params and "checkpoint_every" in get_stage(stage_name).params.model_fields:
        # Three checkpoints over the run, so the last ones kept are worth serving.
        params["checkpoint_every"] = max(1, -(-int(params["max_steps"]) // 3))
    trained = run_stage(
        workspace,
        stage_name,
        params,
        inputs,
        seed=seed,
        quiet=True,
        on_start=lambda run_id: queue.attach_run(workspace, job.id, run_id),
    )
    checkpoint_models(workspace, job, trained.outputs["model"], seed)
    return model_name(job)


def checkpoint_name(job: FineTuningJob, step: int) -> str:
    return f"{model_name(job)}-step-{step}"


def checkpoint_models(workspace: Workspace, job: FineTuningJob, model, seed: int) -> list[str]:
    """Make a model of each checkpoint the run kept before its last step (OpenAI's job
    checkpoints), named `<fine_tuned_model>-step-N`: servable and promotable by name."""
    from forgeml.train.from_checkpoint import run_checkpoints, source_run

    if model.kind != "model":
        return []
    try:
        run = source_run(workspace, model)
    except ForgeError:  # a stage that keeps no checkpoints (a plug-in's own trainer)
        return []
    final = run.metrics.get("steps")
    names = []
    for step in sorted(run_checkpoints(workspace, run)):
        if final is not None and step >= final:
            continue
        name = checkpoint_name(job, step)
        try:
            run_stage(workspace, "train.from_checkpoint", {"step": step, "name": name},
                      {"model": model}, seed=seed, quiet=True)  # fmt: skip
        except ForgeError as exc:  # the job's model stands; only this checkpoint is missing
            log.warning("%s: checkpoint %d not made a model: %s", job.id, step, exc.message)
            continue
        names.append(name)
    return names


def work_once(workspace: Workspace, owner: str | None = None) -> FineTuningJob | None:
    """Claim and run one job; returns it (finished), or None if nothing was queued."""
    owner = owner or queue.worker_id()
    job = queue.claim_next(workspace, owner)
    if job is None:
        return None
    return execute_claimed(workspace, job, owner)


def execute_claimed(workspace: Workspace, job: FineTuningJob, owner: str) -> FineTuningJob:
    """Run a job `owner` holds, keeping its lease, and record how it ended."""
    with LeaseKeeper(workspace, job.id, owner):
        try:
            name = run_job(workspace, job)
        except (KeyboardInterrupt, SystemExit):  # the server is stopping its worker
            queue.requeue(workspace, job.id, owner)
            raise
        except RunCancelled:
            if not queue.paused(workspace, job.id, owner):
                queue.finish(workspace, job.id, "cancelled", owner=owner)
        except ForgeError as exc:
            queue.finish(workspace, job.id, "failed", owner=owner, error=exc.message)
        except Exception as exc:  # a bug: record it on the job, keep the worker alive
            log.exception("job %s failed", job.id)
            queue.finish(workspace, job.id, "failed", owner=owner, error=f"internal error: {exc!r}")
        else:
            queue.finish(workspace, job.id, "succeeded", owner=owner, model=name)
    return queue.get_job(workspace, job.id)


def work(workspace: Workspace, *, once: bool = False, poll_seconds: float = 2.0) -> int:
    """Run jobs until none is left (`once`) or forever; returns how many ran."""
    done, owner = 0, queue.worker_id()
    while True:
        if work_once(workspace, owner) is not None:
            done += 1
            continue
        if once:
            return done
        time.sleep(poll_seconds)
