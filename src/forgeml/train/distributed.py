"""Running a training stage in several processes: rank 0 owns the run, the others train.

    torchrun --nproc_per_node 2 -m forgeml train pretrain --mixture docs --tokenizer tok
    accelerate launch --multi_gpu --num_processes 2 -m forgeml train pretrain --mixture docs ...

(`--multi_gpu` is accelerate's name for its torchrun launcher; without a GPU it runs
the processes on CPU with gloo. Plain `accelerate launch --num_processes 2` on a
CPU-only machine starts a single process.)

Every process of a launch runs the same command. Only one of them may record the run:
the registry row, its status, events, metrics and the output artifact. So rank 0 calls
`run_stage` as usual, and every other rank computes the same run key (validation,
input resolution and key are read-only), derives the run's directory from it (run ids
are `run-<key prefix>`), and calls the stage function with a `WorkerContext`: the same
inputs, seed and checkpoint directory, and no registry writes. The stage itself must
leave artifact writing to `accelerator.is_main_process`.

`forgeml run RECIPE` under a launcher goes step by step the same way
(`run_step_on_this_rank`): rank 0 runs every step; the other ranks train in the steps
whose stage trains on every rank (`@stage(..., every_rank=True)`) and wait for rank 0
in the others (ingest, evaluation, export), taking its outputs from the registry.

A rank that fails before training (bad input, run already running) exits non-zero and
the launcher (torchrun, accelerate launch) stops the whole group, so no rank waits
forever on a collective. Checkpoints are written to the run directory by all ranks, so
multi-node training needs the workspace on a shared filesystem.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from forgeml.core.runs import RunResult, find_reusable, launch_rank, prepare, run_stage

log = logging.getLogger("forgeml.train")


def rank_zero_says(flag: bool) -> bool:
    """Rank 0's `flag` on every rank: one scalar broadcast when a process group runs, so
    a decision only rank 0 can make (the registry says the run was cancelled) stops
    every rank at the same step instead of leaving the others waiting in a collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())


def is_rank_zero() -> bool:
    """Whether this process writes the run's outputs (rank 0, or the only process)."""
    return launch_rank()[0] == 0


class WorkerContext:
    """What a stage sees on ranks > 0: a StageContext that never writes the registry."""

    def __init__(self, workspace, run_id: str, key: str, seed: int, inputs: dict[str, Any]):
        self.workspace = workspace
        self.run_id = run_id
        self.key = key
        self.seed = seed
        self.inputs = inputs
        self.quiet = True
        self.work_dir = workspace.run_dir(run_id)

    @property
    def checkpoint_dir(self) -> Path:
        path = self.work_dir / "checkpoints"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def input_path(self, name: str) -> Path:
        return self.workspace.local_path(self.inputs[name])

    def artifact_path(self, artifact) -> Path:
        return self.workspace.local_path(artifact)

    def log(self, message: str, **data: Any) -> None:
        log.debug("%s (worker): %s", self.run_id, message)

    def warn(self, message: str, **data: Any) -> None:
        log.debug("%s (worker): %s", self.run_id, message)

    def event(self, kind: str, message: str = "", step: int | None = None, **data: Any) -> None:
        pass

    def metric(self, step: int, **values: float) -> None:
        pass

    def set_metrics(self, **values: Any) -> None:
        pass

    def cancelled(self) -> bool:
        return False  # rank 0 polls the registry and tells the others (see loop.py)

    def raise_if_cancelled(self) -> None:
        pass

    def new_artifact(self, kind: str):
        raise RuntimeError("only rank 0 writes artifacts")

    commit = name = new_artifact


def run_stage_on_this_rank(
    workspace,
    stage_name: str,
    params: dict | Any,
    inputs: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> RunResult | None:
    """`run_stage` on rank 0 (and in a plain single process); a worker elsewhere.

    Returns the run's result on rank 0, and on other ranks only when the run was
    reused (then no rank trains); otherwise None.
    """
    if launch_rank()[0] == 0:
        result = run_stage(workspace, stage_name, params, inputs, seed=seed, quiet=quiet)
        leave_process_group()
        return result
    reused, _key = _beside_rank_zero(workspace, stage_name, params, inputs, seed)
    if reused:
        return reused
    leave_process_group()
    return None


def run_step_on_this_rank(
    workspace,
    stage_name: str,
    params: dict | Any,
    inputs: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    poll_seconds: float = 0.5,
    **run_options: Any,
) -> RunResult:
    """A recipe step under a launcher: rank 0 runs it as `run_stage` does; the other ranks
    train beside it when the stage trains on every rank, else only wait, and take rank
    0's result from the registry, so every rank goes on to the next step with its
    outputs. The process group stays up between steps (`leave_process_group` at the end
    of the recipe): a second training step trains in the same group."""
    if launch_rank()[0] == 0:
        return run_stage(workspace, stage_name, params, inputs, seed=seed, **run_options)
    reused, key = _beside_rank_zero(workspace, stage_name, params, inputs, seed)
    return reused or wait_for_run(workspace, key, poll_seconds)


def _beside_rank_zero(
    workspace, stage_name: str, params: dict | Any, inputs: dict[str, Any] | None, seed: int
) -> tuple[RunResult | None, str]:
    """A rank > 0's part of a run: (its succeeded run, key) when it can be reused, else
    (None, key) after training as a worker if the stage trains on every rank."""
    stage, validated, resolved, _sources, key = prepare(workspace, stage_name, params, inputs, seed)
    if reused := find_reusable(workspace, key):
        return reused, key
    if stage.every_rank:
        stage.fn(WorkerContext(workspace, "run-" + key[:16], key, seed, resolved), validated)
    return None, key


def wait_for_run(workspace, key: str, poll_seconds: float = 0.5) -> RunResult:
    """The succeeded run with this key, once rank 0 has recorded it. Should rank 0's run
    fail, its process exits and the launcher stops this one; a run seen running and then
    failed (another launcher, or none) is an error here too."""
    from sqlalchemy import select

    from forgeml.core.errors import ForgeError
    from forgeml.core.schema import Run

    seen_running = False
    while True:
        if found := find_reusable(workspace, key):
            return found
        with workspace.registry.session() as session:
            status = session.scalar(select(Run.status).where(Run.key == key))
        if status == "running":
            seen_running = True
        elif seen_running and status in ("failed", "cancelled"):
            raise ForgeError(f"rank 0's run of this step ({key[:12]}) ended {status}")
        time.sleep(poll_seconds)


def leave_process_group() -> None:
    """Destroy the process group the trainer made, once this rank's work is done.

    A process that exits with gloo's process group alive can abort (SIGABRT, "terminate
    called without an active exception") while the interpreter shuts down: gloo's threads
    still hold work whose tensors need the GIL (pytorch/pytorch#179291). One launch in
    six failed that way on 2 cores. Only on success: a rank that failed mid-collective
    could wait forever here, and the launcher stops the group anyway."""
    if "torch.distributed" not in sys.modules:  # this stage never trained with torch
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
