"""Training checkpoints that a killed run resumes from exactly.

    path = save_checkpoint(accelerator, ctx.checkpoint_dir, step, state)
    if (latest := latest_checkpoint(ctx.checkpoint_dir)) is not None:
        state = load_checkpoint(accelerator, latest)

A checkpoint is a directory `step-N/` holding what `Accelerator.save_state` writes —
`model.safetensors`, `optimizer.bin`, `scheduler.bin`, `random_states_<rank>.pkl`
(python, numpy, torch and CUDA generators) — plus `trainer_state.json`: the step, the
data position, the loss history so far and the run's resolved parameters. A run with
`distributed: fsdp` (sharding.py) has its model and optimizer in `sharded/` instead
(torch.distributed.checkpoint: one file per process) and its schedule in `scheduler.pt`;
accelerate still writes every process's RNG states.

Atomic: every process writes into `.step-N.tmp/`, then the main process adds
`trainer_state.json`, fsyncs and renames it to `step-N/`. A `step-N/` directory is
therefore always complete; a leftover `.tmp` is a crash mid-save and is deleted. Only
the newest `KEEP` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from forgeml.core.atomic import fsync_dir, write_json_atomic
from forgeml.core.errors import InputError
from forgeml.train import sharding

STATE_FILE = "trainer_state.json"
PREFIX = "step-"
KEEP = 2


def _step_of(path: Path) -> int | None:
    number = path.name.removeprefix(PREFIX)
    return int(number) if path.name.startswith(PREFIX) and number.isdigit() else None


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [
        (step, path)
        for path in directory.glob(PREFIX + "*")
        if (step := _step_of(path)) is not None and (path / STATE_FILE).is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def remove_partial(directory: Path) -> None:
    """Delete what a save that died half-way left behind (main process only)."""
    for leftover in directory.glob(f".{PREFIX}*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(directory)


def save_checkpoint(
    accelerator, directory: Path, step: int, state: dict[str, Any], sharded: tuple | None = None
) -> Path:
    """Save model, optimizer, scheduler and RNG states plus `state`; collective call.
    `sharded`: (model, optimizer, scheduler) trained with `distributed: fsdp`, which
    accelerate does not hold (sharding.py): saved as shards beside its RNG states."""
    final = directory / f"{PREFIX}{step}"
    partial = directory / f".{PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if sharded is not None:
        sharding.save(partial, *sharded, main=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(partial / STATE_FILE, state)
        _fsync_tree(partial)
        if final.exists():  # the same step saved again (e.g. cancelled right after resuming)
            shutil.rmtree(final)
        os.rename(partial, final)
        fsync_dir(directory)
        for old in list_checkpoints(directory)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, sharded: tuple | None = None) -> dict[str, Any]:
    """Restore everything `save_checkpoint` saved into the prepared objects; collective."""
    was_sharded = (path / sharding.SHARDS_DIR).is_dir()
    if was_sharded != (sharded is not None):
        raise InputError(
            f"{path} was written {'with' if was_sharded else 'without'} FSDP sharding and is "
            f"resumed {'without' if was_sharded else 'with'} it",
            field="distributed",
            hint="resume on several processes (torchrun) as it was trained: `distributed: "
            "fsdp` shards only when there is more than one",
        )
    accelerator.load_state(str(path))
    if sharded is not None:
        sharding.load(path, *sharded)
    return json.loads((path / STATE_FILE).read_text())
