"""Where transformers' Trainer keeps a run's checkpoints, and which are complete.

No torch here: `forgeml models checkpoints` lists them without loading any model code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: whole = complete


def checkpoints(directory: Path) -> list[Path]:
    """Complete `checkpoint-N/` directories, oldest first."""
    found = []
    for path in directory.glob(CHECKPOINT_PREFIX + "*"):
        number = path.name.removeprefix(CHECKPOINT_PREFIX)
        if number.isdigit() and _whole(path / TRAINER_STATE):
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def remove_incomplete(directory: Path) -> None:
    """transformers writes checkpoints in place: one killed mid-save lacks its trainer
    state (written last). Resuming from it would fail, and the rotation would count it."""
    complete = set(checkpoints(directory))
    for path in directory.glob(CHECKPOINT_PREFIX + "*"):
        if path.is_dir() and path not in complete:
            shutil.rmtree(path, ignore_errors=True)


def _whole(state: Path) -> bool:
    """The trainer state is there and whole: transformers writes it in place, so a kill
    mid-write leaves a file that does not parse (and a resume from it would fail)."""
    try:
        return isinstance(json.loads(state.read_bytes()), dict)
    except (OSError, ValueError):
        return False
