"""`forgeml launch RECIPE --on ray`: a recipe as a job on a real Ray cluster (`ray start
--head` with its dashboard on loopback, 2 CPUs), submitted through Ray's Jobs API by
`--submit` and, the second time, by running the script the command writes (Ray's own
`ray job submit`). The entrypoint is torchrun with two processes on the node; the
training run is one run that records the Ray job it ran in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_fixtures import build_base, chat_lines, forgeml, register_model, write_jsonl

from forgeml.core.workspace import Workspace
from ray_fixtures import free_port, token_auth, wait_for

pytestmark = pytest.mark.slow
RECIPE = """
name: on-ray
seed: 0
steps:
  - name: chats
    uses: data.ingest
    with: {{paths: ["{chats}"], name: chats}}
  - name: sft
    uses: train.sft
    inputs: {{model: base, dataset: chats}}
    with: {{max_steps: {steps}, batch_size: 4, seq_len: 64, learning_rate: 0.001,
            collapse_check: false}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("on-ray")
    ws = Workspace.init(root / "ws")
    register_model(ws, build_base(root / "base"))
    ws.close()
    chats = write_jsonl(root / "chat.jsonl", chat_lines())
    return root / "ws", chats


def launch(workspace: Path, recipe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json",
               "launch", str(recipe), "--on", "ray", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def sft_runs(workspace: Path) -> list[dict]:
    listed = json.loads(forgeml(workspace, "--json", "runs", "list").stdout)
    runs = [run for run in listed if run["stage"] == "train.sft"]
    return [json.loads(forgeml(workspace, "--json", "runs", "show", run["id"]).stdout)
            for run in runs]  # fmt: skip


def test_a_recipe_launched_on_ray_trains_as_one_run_that_names_its_ray_job(
    cluster, setup, tmp_path
):
    workspace, chats = setup
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(chats=chats, steps=3))
    launched = launch(workspace, recipe, "--procs-per-node", "2", "--ray-address", cluster,
                      "--submit", cwd=tmp_path)  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    answer = json.loads(launched.stdout)
    assert answer["target"] == "ray" and answer["processes"] == 2
    state, logs = wait_for(cluster, answer["job_id"])
    assert state == "SUCCEEDED", logs[-3000:]

    (run,) = sft_runs(workspace)
    assert run["status"] == "succeeded"
    assert run["environment"]["launch"] == {
        "ray_job": answer["job_id"], "by": "ray", "processes": 2, "nodes": 1,
    }  # fmt: skip

    # The script it wrote submits the same job with Ray's own CLI.
    script = tmp_path / answer["file"]  # where it was asked from
    assert script == tmp_path / "on-ray.ray.sh" and os.access(script, os.X_OK)
    again = tmp_path / "again.yaml"
    again.write_text(RECIPE.format(chats=chats, steps=4))  # another run, not a reuse
    written = launch(workspace, again, "--procs-per-node", "2", "-o", str(tmp_path / "j.sh"),
                     cwd=tmp_path)  # fmt: skip
    assert written.returncode == 0, written.stderr
    submitted = subprocess.run(
        [str(tmp_path / "j.sh")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_API_SERVER_ADDRESS": cluster, **token_auth(),
             "RAY": str(Path(sys.executable).parent / "ray")},
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    submission = next(word.strip("'\"") for word in (submitted.stdout + submitted.stderr).split()
                      if word.strip("'\"").startswith("raysubmit_"))  # fmt: skip
    state, logs = wait_for(cluster, submission)
    assert state == "SUCCEEDED", logs[-3000:]
    launches = [run["environment"]["launch"] for run in sft_runs(workspace)]
    assert {"ray_job": submission, "by": "ray", "processes": 2, "nodes": 1} in launches


def test_launching_on_ray_refuses_what_it_cannot_do(setup, tmp_path):
    workspace, chats = setup
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(chats=chats, steps=3))
    several = launch(workspace, recipe, "--nodes", "2", cwd=tmp_path)
    assert several.returncode == 2
    assert "--on ray runs a recipe on one node of the cluster, not 2" in several.stderr
    assert "--on slurm or --on kubernetes" in several.stderr

    env_free = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "launch",
               str(recipe), "--on", "ray", "--submit"]  # fmt: skip
    no_address = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                cwd=tmp_path, env=env_free)  # fmt: skip
    assert no_address.returncode == 2
    assert "needs the cluster's Jobs API address" in no_address.stderr
    assert not (tmp_path / "on-ray.ray.sh").exists()  # nothing written for a bad request

    started = time.monotonic()
    dead = launch(workspace, recipe, "--submit", "--ray-address", f"127.0.0.1:{free_port()}",
                  cwd=tmp_path)  # fmt: skip
    assert dead.returncode == 2
    assert "the Ray Jobs API at http://127.0.0.1:" in dead.stderr
    assert "nothing was submitted" in dead.stderr
    assert time.monotonic() - started < 60
    assert "Traceback" not in several.stderr + no_address.stderr + dead.stderr
