"""`forgeml run RECIPE --sweep ... --select STEP/METRIC`: a grid of recipe runs through the
installed CLI (with the toy stages), its cells reused when run again, the winner named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORGEML_WITH_TOYS = [
    sys.executable,
    "-c",
    "import toy_stages; from forgeml.cli.app import main; main()",
]
RECIPE = """\
name: sweep-demo
vars:
  copies: 1
steps:
  - name: docs
    uses: toy.write
    with: {text: "one two three ", repeat: 1}
  - name: more
    uses: toy.write
    with: {text: "four ", repeat: "${copies}"}
  - name: joined
    uses: toy.concat
    inputs: {parts: [docs, more]}
  - name: count
    uses: toy.count
    inputs: {dataset: joined}
"""
GRID = ["--sweep", "docs.repeat=1,3,2", "--sweep", "copies=1,2", "--select", "count/words"]


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(RECIPE)
    return path


def forgeml(workspace: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = [*FORGEML_WITH_TOYS, "--workspace", str(workspace), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_sweep_runs_the_grid_names_the_winner_and_reuses_finished_cells(tmp_path, recipe):
    workspace = tmp_path / "ws"
    first = json.loads(forgeml(workspace, "--json", "run", str(recipe), *GRID).stdout)
    cells = first["cells"]
    assert [cell["values"] for cell in cells[:2]] == [
        {"docs.repeat": 1, "copies": 1},
        {"docs.repeat": 1, "copies": 2},
    ]
    # words = 3 per repeat of "one two three" + one per copy of "four"
    assert [cell["metric"] for cell in cells] == [4, 5, 10, 11, 7, 8]
    assert first["winner"]["values"] == {"docs.repeat": 3, "copies": 2}
    assert {cell["status"] for cell in cells} == {"ran"}
    assert len({cell["outputs"]["count"] for cell in cells}) == 6  # six reports, one per cell

    again = json.loads(forgeml(workspace, "--json", "run", str(recipe), *GRID).stdout)
    assert {cell["status"] for cell in again["cells"]} == {"reused"}
    assert again["winner"] == {**first["winner"], "status": "reused",
                               "seconds": again["winner"]["seconds"]}  # fmt: skip

    lowest = json.loads(
        forgeml(workspace, "--json", "run", str(recipe), *GRID, "--minimize").stdout
    )
    assert lowest["winner"]["values"] == {"docs.repeat": 1, "copies": 1}

    table = forgeml(workspace, "run", str(recipe), *GRID).stdout
    assert "winner: cell 4 (count/words 11): --set docs.repeat=3 --var copies=2" in table


def test_a_failing_cell_is_reported_and_the_others_still_count(tmp_path, recipe):
    result = json.loads(
        forgeml(tmp_path / "ws", "--json", "run", str(recipe), "--sweep",
                "count.fail=true,false", "--select", "count/words").stdout
    )  # fmt: skip
    failed, passed = result["cells"]
    assert failed["status"] == "failed" and "asked to fail" in failed["error"]
    assert result["winner"]["cell"] == passed["cell"] == 2


def test_the_time_budget_stops_new_cells(tmp_path, recipe):
    result = json.loads(
        forgeml(tmp_path / "ws", "--json", "run", str(recipe), *GRID, "--time-budget",
                "0.001s").stdout
    )  # fmt: skip
    statuses = [cell["status"] for cell in result["cells"]]
    assert statuses == ["ran"] + ["skipped"] * 5
    assert result["winner"]["cell"] == 1


SELECT = ["--select", "count/words"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([*GRID, "--max-runs", "4"], "6 cells, more than --max-runs 4"),
        (["--sweep", "copies=1,2", "--select", "nowhere/words"], "a step of the recipe"),
        (["--sweep", "nosuch.repeat=1,2", *SELECT], "no step named 'nosuch'"),
        (["--sweep", "undeclared=1,2", *SELECT], "no step parameter or variable"),
        (["--sweep", "docs.repeat=1,1", *SELECT], "listed twice"),
        (["--sweep", "copies=1", "--sweep", "copies=2", *SELECT], "swept twice"),
        (["--sweep", "docs.repeat=2,0", *SELECT], "repeat"),
        ([*GRID, "--time-budget", "soon"], "expected a duration"),
    ],
)
def test_bad_sweeps_are_refused_before_any_work(tmp_path, recipe, args, says):
    workspace = tmp_path / "ws"
    result = forgeml(workspace, "run", str(recipe), *args, ok=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert says in result.stdout + result.stderr
    assert not (workspace / "artifacts").exists() or not any((workspace / "artifacts").iterdir())


def test_select_without_sweep_is_refused(tmp_path, recipe):
    result = forgeml(tmp_path / "ws", "run", str(recipe), "--select", "count/words", ok=False)
    assert "needs both --sweep and --select" in result.stdout + result.stderr
