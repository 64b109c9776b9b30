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

A rank that fails before training (bad input, run already running) exits non-zero and
the launcher (torchrun, accelerate launch) stops the whole group, so no rank waits
forever on a collective. Checkpoints are written to the run directory by all ranks, so
multi-node training needs the workspace on a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from forgeml.core.runs import RunResult, find_reusable, prepare, run_stage

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


def launch_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment, before any process group."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


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
        return self.workspace.root / self.inputs[name].path

    def artifact_path(self, artifact) -> Path:
        return self.workspace.root / artifact.path

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
    rank, _ = launch_rank()
    if rank == 0:
        result = run_stage(workspace, stage_name, params, inputs, seed=seed, quiet=quiet)
        leave_process_group()
        return result
    stage, validated, resolved, _sources, key = prepare(workspace, stage_name, params, inputs, seed)
    if reused := find_reusable(workspace, key):
        return reused
    context = WorkerContext(workspace, "run-" + key[:16], key, seed, resolved)
    stage.fn(context, validated)
    leave_process_group()
    return None


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
