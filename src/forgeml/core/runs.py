"""Executing a stage as a recorded, reusable, resumable run.

A run's key is the hash of everything that determines its output: stage, validated
parameters, input artifact hashes, raw source file hashes, forgeml version and seed.
A key that already succeeded is reused, not repeated. A key whose last attempt died
(crash, kill -9, power loss) is run again in the same run directory, where the stage
finds its checkpoints and resumes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml import __version__
from forgeml.core.context import StageContext
from forgeml.core.errors import ConflictError, ForgeError, InputError, NotFoundError, RunCancelled
from forgeml.core.hashing import sha256_file, sha256_json
from forgeml.core.schema import Artifact, LineageEdge, Run, RunEvent, utcnow
from forgeml.core.stages import Stage, get_stage
from forgeml.core.store import _pid_alive

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.run")

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
RECORDED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
    "safetensors", "numpy", "pyarrow",
)  # fmt: skip


@dataclass
class RunResult:
    run_id: str
    key: str
    stage: str
    status: str
    reused: bool
    outputs: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def run_key(
    stage: str, params: dict, inputs: dict[str, Any], sources: list[dict], seed: int, code: str
) -> str:
    """Everything that determines a run's output; `code` hashes the stage's module."""
    return sha256_json(
        {
            "stage": stage,
            "code": code,
            "params": params,
            "inputs": inputs,
            "sources": [source["sha256"] for source in sources],
            "forgeml_version": __version__,
            "seed": seed,
        }
    )


def hash_sources(paths: list[Path]) -> list[dict]:
    """Hash every raw file a stage will read (directories are walked, sorted)."""
    sources = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise InputError(f"{root}: no such file or directory")
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            sources.append(
                {"path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size}
            )
    return sources


def resolve_inputs(workspace: Workspace, stage: Stage, given: dict[str, Any]) -> dict[str, Any]:
    """Turn refs into registry artifacts and check each against the stage's declared kinds."""
    unknown = set(given) - set(stage.inputs)
    if unknown:
        raise InputError(
            f"stage {stage.name} has no input named {', '.join(sorted(unknown))}",
            hint=f"Its inputs: {', '.join(stage.inputs) or 'none'}.",
        )
    resolved: dict[str, Any] = {}
    for name, spec in stage.inputs.items():
        value = given.get(name)
        if value is None or value == []:
            if not spec.optional:
                raise InputError(f"stage {stage.name} needs input {name!r} ({spec.describe()})")
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > 1 and not spec.many:
            raise InputError(f"input {name!r} of stage {stage.name} takes one {spec.kind}")
        artifacts = [
            item if isinstance(item, Artifact) else workspace.registry.resolve(str(item))
            for item in values
        ]
        for artifact in artifacts:
            if artifact.kind != spec.kind:
                raise InputError(
                    f"input {name!r} of stage {stage.name} must be a {spec.kind}, "
                    f"got {artifact.ref} (a {artifact.kind})"
                )
        resolved[name] = artifacts if spec.many else artifacts[0]
    # The one gate for every stage (training, eval, data, export, jobs, recipes): no
    # input may derive from forgotten data. Rows are read afresh, as an Artifact passed
    # in (a recipe's earlier step) may predate a deletion.
    workspace.registry.ensure_usable(_flat(resolved), f"be an input of {stage.name}")
    return resolved


def _flat(inputs: dict[str, Any]) -> list[Artifact]:
    return [a for value in inputs.values() for a in (value if isinstance(value, list) else [value])]


def _input_hashes(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        name: [a.sha256 for a in value] if isinstance(value, list) else value.sha256
        for name, value in inputs.items()
    }


def environment_record() -> dict[str, Any]:
    packages = {}
    for name in RECORDED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    record = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "forgeml": __version__,
    }
    if launch := launch_record(os.environ):
        record["launch"] = launch
    return record


def launch_rank() -> tuple[int, int]:
    """(rank, world size) from a launcher's environment (torchrun, accelerate launch),
    before any process group; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def launch_record(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Where a launched run ran: the Slurm job, the Kubernetes pod (`forgeml launch` sets
    FORGEML_LAUNCH), the launch's processes and nodes; None outside a launcher."""
    found: dict[str, Any] = {}
    if "SLURM_JOB_ID" in environ:
        found["slurm_job"] = environ["SLURM_JOB_ID"]
        found["slurm_nodes"] = environ.get("SLURM_JOB_NODELIST", "")
    if environ.get("FORGEML_LAUNCH") == "kubernetes":
        found["kubernetes_pod"] = environ.get("HOSTNAME", "")
    if environ.get("FORGEML_LAUNCH") == "ray":  # Ray gives a job's entrypoint its config
        found["ray_job"] = _ray_submission_id(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", ""))
    if environ.get("FORGEML_LAUNCH"):
        found["by"] = environ["FORGEML_LAUNCH"]
    world = environ.get("WORLD_SIZE", "1")  # recorded for every run: a stray value is skipped
    if world.isdigit() and int(world) > 1:
        found["processes"] = int(world)
        nodes = environ.get("GROUP_WORLD_SIZE", "1")
        found["nodes"] = int(nodes) if nodes.isdigit() else 1
    return found or None


def _ray_submission_id(config: str) -> str:
    try:
        metadata = json.loads(config[:100_000]).get("metadata") or {}
        return str(metadata.get("job_submission_id", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def prepare(
    workspace: Workspace,
    stage_name: str,
    params: dict | Any,
    inputs: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[Stage, Any, dict[str, Any], list[dict], str]:
    """Validate everything a run needs and compute its key, without running it."""
    stage = get_stage(stage_name)
    validated = stage.validate_params(params or {})
    resolved = resolve_inputs(workspace, stage, inputs or {})
    sources = hash_sources(stage.sources(validated)) if stage.sources else []
    if stage.registry_sources:  # e.g. the feedback rows a dataset is built from
        sources += stage.registry_sources(workspace, validated)
    key = run_key(
        stage.name,
        validated.model_dump(mode="json"),
        _input_hashes(resolved),
        sources,
        seed,
        stage.code_sha256,
    )
    return stage, validated, resolved, sources, key


def find_reusable(workspace: Workspace, key: str) -> RunResult | None:
    """The outputs of a succeeded run with this key, if they are all still in the store."""
    with workspace.registry.session() as session:
        run = session.scalars(select(Run).where(Run.key == key)).first()
        if run is None or run.status != "succeeded":
            return None
        rows = session.execute(
            select(LineageEdge.role, Artifact)
            .join(Artifact, LineageEdge.artifact_id == Artifact.id)
            .where(LineageEdge.run_id == run.id, LineageEdge.direction == "output")
        ).all()
        outputs = {role: artifact for role, artifact in rows}
        if not all(workspace.store.exists(a.kind, a.sha256) for a in outputs.values()):
            return None
        return RunResult(run.id, key, run.stage, run.status, True, outputs, dict(run.metrics))


def run_stage(
    workspace: Workspace,
    stage_name: str,
    params: dict | Any = None,
    inputs: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    recipe: str | None = None,
    step: str | None = None,
    force: bool = False,
    quiet: bool = False,
    on_start: Callable[[str], None] | None = None,
) -> RunResult:
    """Run a stage, or reuse its succeeded run. `on_start(run_id)` is called once the run
    is recorded and before it works (the job queue links a job to its run there)."""
    stage, validated, resolved, sources, key = prepare(workspace, stage_name, params, inputs, seed)
    if not force and (reused := find_reusable(workspace, key)):
        if on_start:
            on_start(reused.run_id)
        return reused
    if workspace.remote_store is not None:  # a shared store it cannot write: said before work
        workspace.remote_store.check_writable()
    run = _claim(workspace, stage, validated, resolved, sources, key, seed, recipe, step)
    if on_start:
        on_start(run.id)
    ctx = StageContext(workspace, run, resolved, quiet=quiet)
    _set_status(workspace, run.id, "running", f"attempt {run.attempt} started")
    try:
        outputs = stage.fn(ctx, validated) or {}
        _check_outputs(stage, outputs)
        _record_outputs(workspace, run.id, outputs)
        _refuse_if_forgotten_meanwhile(workspace, resolved, outputs)
    except RunCancelled as exc:
        _set_status(workspace, run.id, "cancelled", str(exc))
        raise
    except ForgeError as exc:
        _set_status(workspace, run.id, "failed", str(exc), error=str(exc))
        raise
    except (KeyboardInterrupt, SystemExit):
        _set_status(workspace, run.id, "interrupted", "stopped before it finished")
        raise
    except Exception as exc:
        _set_status(workspace, run.id, "failed", repr(exc), error=traceback.format_exc())
        raise
    _set_status(workspace, run.id, "succeeded", "finished")
    with workspace.registry.session() as session:
        metrics = dict(session.get(Run, run.id).metrics or {})
    return RunResult(run.id, key, stage.name, "succeeded", False, outputs, metrics)


def _refuse_if_forgotten_meanwhile(
    workspace: Workspace, inputs: dict[str, Any], outputs: dict[str, Artifact]
) -> None:
    """An input forgotten while the stage ran: its outputs are forgotten too."""
    forgotten = workspace.registry.forgotten_among(a.id for a in _flat(inputs))
    if not forgotten:
        return
    reason = next(iter(forgotten.values()))
    with workspace.registry.session() as session:
        for artifact in outputs.values():
            row = session.get(Artifact, artifact.id)
            if row.forgotten_at is None:
                row.forgotten_at, row.forgotten_reason = utcnow(), reason
    workspace.registry.ensure_usable(_flat(inputs), "be an input of this run")


def _claim(workspace, stage, params, inputs, sources, key, seed, recipe, step) -> Run:
    """Create the run row, or take over a dead or finished attempt of the same key."""
    host, pid = socket.gethostname(), os.getpid()
    with workspace.registry.session() as session:
        run = session.scalars(select(Run).where(Run.key == key)).first()
        if run is None:
            run = Run(
                id="run-" + key[:16],
                key=key,
                stage=stage.name,
                params=params.model_dump(mode="json"),
                seed=seed,
                status="queued",
                sources=sources,
                recipe=recipe,
                step=step,
                forgeml_version=__version__,
            )
            session.add(run)
            session.flush()
            for name, value in inputs.items():
                for position, artifact in enumerate(value if isinstance(value, list) else [value]):
                    session.add(
                        LineageEdge(
                            run_id=run.id,
                            artifact_id=artifact.id,
                            direction="input",
                            role=name,
                            position=position,
                        )
                    )
            workspace.registry.audit(session, "run.create", run.id, stage=stage.name)
        elif run.status == "running" and _is_alive(run):
            raise ConflictError(
                f"run {run.id} ({run.stage}) is already running (pid {run.pid} on {run.host})",
                hint="Wait for it, or stop it with `forgeml runs cancel " + run.id + "`.",
            )
        elif run.status == "running":
            session.add(_status_event(run, "interrupted", "previous attempt died; resuming"))
        run.attempt += 1
        run.host, run.pid = host, pid
        run.started_at, run.heartbeat_at, run.finished_at = utcnow(), utcnow(), None
        run.error, run.cancel_requested = None, False
        run.environment = {**environment_record(), "stage_code_sha256": stage.code_sha256}
        return run


def _status_event(run: Run, status: str, message: str) -> RunEvent:
    return RunEvent(
        run_id=run.id, attempt=run.attempt, kind="status", message=message, data={"status": status}
    )


def _is_alive(run: Run) -> bool:
    if run.host == socket.gethostname():
        return run.pid is not None and _pid_alive(run.pid)
    return True  # another machine's run: trust it (`forgeml runs cancel` stops it)


def _set_status(
    workspace, run_id: str, status: str, message: str, error: str | None = None
) -> None:
    with workspace.registry.session() as session:
        run = session.get(Run, run_id)
        run.status = status
        if status in TERMINAL:
            run.finished_at = utcnow()
        if error is not None:
            run.error = error
        session.add(_status_event(run, status, message))
        if status in TERMINAL:
            workspace.registry.audit(session, f"run.{status}", run_id, stage=run.stage)


def _check_outputs(stage: Stage, outputs: dict[str, Any]) -> None:
    missing = set(stage.outputs) - set(outputs)
    extra = set(outputs) - set(stage.outputs)
    if missing or extra:
        raise RuntimeError(
            f"stage {stage.name} returned outputs {sorted(outputs)}, declared {sorted(stage.outputs)}"
        )
    for name, artifact in outputs.items():
        if artifact.kind != stage.outputs[name]:
            raise RuntimeError(
                f"stage {stage.name} output {name} is a {artifact.kind}, declared {stage.outputs[name]}"
            )


def _record_outputs(workspace, run_id: str, outputs: dict[str, Artifact]) -> None:
    with workspace.registry.session() as session:
        for role, artifact in outputs.items():
            exists = session.scalars(
                select(LineageEdge).where(
                    LineageEdge.run_id == run_id,
                    LineageEdge.artifact_id == artifact.id,
                    LineageEdge.direction == "output",
                    LineageEdge.role == role,
                )
            ).first()
            if exists is None:
                session.add(
                    LineageEdge(
                        run_id=run_id, artifact_id=artifact.id, direction="output", role=role
                    )
                )


# --- queries used by the CLI -------------------------------------------------------------


def mark_dead_runs(workspace: Workspace) -> int:
    """Mark runs on this host whose process is gone as interrupted; returns how many."""
    host = socket.gethostname()
    with workspace.registry.session() as session:
        dead = [
            run
            for run in session.scalars(select(Run).where(Run.status == "running", Run.host == host))
            if not (run.pid and _pid_alive(run.pid))
        ]
        for run in dead:
            run.status, run.finished_at = "interrupted", utcnow()
            session.add(_status_event(run, "interrupted", "process died; rerun to resume"))
        return len(dead)


def get_run(workspace: Workspace, run_id: str) -> Run:
    with workspace.registry.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            matches = list(session.scalars(select(Run).where(Run.id.like(f"{run_id}%")).limit(2)))
            if len(matches) != 1:
                raise NotFoundError(f"no run {run_id!r}", hint="See `forgeml runs list`.")
            run = matches[0]
        return run


def request_cancel(workspace: Workspace, run_id: str) -> Run:
    run = get_run(workspace, run_id)
    with workspace.registry.session() as session:
        row = session.get(Run, run.id)
        if row.status in TERMINAL:
            raise ConflictError(f"run {row.id} already {row.status}")
        row.cancel_requested = True
        if row.status == "queued":
            row.status, row.finished_at = "cancelled", utcnow()
        workspace.registry.audit(session, "run.cancel", row.id)
        return row
