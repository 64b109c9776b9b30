"""The same recipe on the same data gives the same bytes in any folder: two fresh
`forgeml quickstart` runs (the installed CLI, a few steps each) in workspaces whose
paths differ in length make identical datasets, tokenizers, models, evals and exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_quickstart import SHORT  # the recipe with a few steps each

FORGEML = [sys.executable, "-m", "forgeml"]


def start_quickstart(workspace: Path) -> subprocess.Popen:
    # One thread each: the two run side by side, and a float reduction is summed in the
    # same order in both (thread count is a property of the machine, not the folder).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*FORGEML, "--workspace", str(workspace), "--json", "quickstart", "--no-serve", *SHORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stored(workspace: Path) -> list[str]:
    """Every artifact in the workspace's store, as KIND/SHA256."""
    root = workspace / "artifacts"
    return sorted(
        f"{kind.name}/{artifact.name}"
        for kind in root.iterdir()
        if kind.is_dir() and not kind.name.startswith(".")
        for artifact in kind.iterdir()
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two quickstarts side by side on 2 cores
def test_quickstart_in_two_folders_makes_the_same_artifacts(tmp_path):
    short = tmp_path / "a" / "ws"
    long = tmp_path / "a-folder-with-a-much-longer-name" / "and" / "one-more-level" / "ws"
    runs = {workspace: start_quickstart(workspace) for workspace in (short, long)}
    summaries = {}
    for workspace, process in runs.items():
        stdout, stderr = process.communicate(timeout=1100)
        assert process.returncode == 0, stderr[-3000:]
        summaries[workspace] = json.loads(stdout)

    def made(workspace: Path) -> dict[str, str]:
        return {
            f"step {step['name']} {role}": ref
            for step in summaries[workspace]["steps"]
            for role, ref in step["outputs"].items()
        }

    first, second = made(short), made(long)
    assert first.keys() == second.keys()
    differing = [
        f"{what}: {first[what]} vs {second[what]}" for what in first if first[what] != second[what]
    ]
    assert not differing, "artifacts differ between the folders:\n" + "\n".join(differing)
    assert stored(short) == stored(long)
    assert summaries[short]["evals"] == summaries[long]["evals"]
