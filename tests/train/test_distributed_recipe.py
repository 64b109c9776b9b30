"""`torchrun -m forgeml run RECIPE`: a whole recipe under a launcher, two CPU processes.

Rank 0 runs every step and records it; rank 1 trains beside it in the training steps
and waits for rank 0 in the others (ingest here), taking the outputs from the registry.
Two training steps (SFT, then DPO on the SFT model) train in one process group, and
the launched recipe gives the weights one process gives, to float rounding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_fixtures import (
    build_base,
    chat_lines,
    forgeml,
    openai_preference_line,
    register_model,
    weights,
    write_jsonl,
)
from slurm_fixtures import wait_for_job
from sqlalchemy import func, select

from forgeml.core.schema import Run
from forgeml.core.workspace import Workspace

RECIPE = """
name: launched
seed: 0
steps:
  - name: chats
    uses: data.ingest
    with: {{paths: ["{chats}"], name: chats}}
  - name: pairs
    uses: data.ingest
    with: {{paths: ["{pairs}"], name: pairs}}
  - name: sft
    uses: train.sft
    inputs: {{model: base, dataset: chats}}
    with: {{max_steps: 3, batch_size: 4, seq_len: 64, learning_rate: 0.001,
            collapse_check: false, checkpoint_every: 50}}
  - name: dpo
    uses: train.preference
    inputs: {{model: sft, dataset: pairs}}
    with: {{max_steps: 2, batch_size: 4, seq_len: 64, learning_rate: 0.0001,
            checkpoint_every: 50}}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp-recipe")
    ws = Workspace.init(root / "ws")
    register_model(ws, build_base(root / "base"))
    ws.close()
    chats = write_jsonl(root / "chat.jsonl", chat_lines())
    pairs = [openai_preference_line(word) for word in ("dict", "list", "set", "tuple") * 4]
    pairs_path = write_jsonl(root / "pairs.jsonl", pairs)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(chats=chats, pairs=pairs_path))
    return root / "ws", recipe


def torchrun_recipe(workspace: Path, recipe: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "forgeml", "--workspace", str(workspace), "--json", "run", str(recipe), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


def model_dir(workspace: Path, step: dict) -> Path:
    ws = Workspace.open(workspace)
    try:
        return ws.root / ws.registry.resolve(step["outputs"]["model"]).path
    finally:
        ws.close()


@pytest.mark.slow
def test_a_launched_recipe_runs_each_step_once_and_trains_as_one_process(setup):
    workspace, recipe = setup
    # One process first; the launch changes the checkpoint interval of both training
    # steps (run keys of their own, the same training) and reuses the two ingests.
    alone = forgeml(workspace, "--json", "run", str(recipe))
    one = {step["name"]: step for step in json.loads(alone.stdout)["steps"]}

    change = ["--set", "sft.checkpoint_every=60", "--set", "dpo.checkpoint_every=60"]
    launched = torchrun_recipe(workspace, recipe, *change)
    assert launched.returncode == 0, launched.stderr[-3000:]
    report = json.loads(launched.stdout)  # rank 0 alone reports: one JSON document
    two = {step["name"]: step for step in report["steps"]}
    assert [two[name]["action"] for name in ("chats", "pairs", "sft", "dpo")] == [
        "reuse", "reuse", "run", "run"
    ]  # fmt: skip

    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            for stage, expected in (("data.ingest", 2), ("train.sft", 2), ("train.preference", 2)):
                count = select(func.count()).select_from(Run).where(Run.stage == stage)
                assert session.scalar(count) == expected, stage  # no rank ran a step twice
    finally:
        ws.close()
    for name in ("sft", "dpo"):
        trained = model_dir(workspace, two[name])
        assert json.loads((trained / "training.json").read_text())["processes"] == 2
    expected = weights(model_dir(workspace, one["dpo"]))
    for key, tensor in weights(model_dir(workspace, two["dpo"])).items():
        torch.testing.assert_close(tensor, expected[key], rtol=1e-4, atol=1e-5, msg=key)

    # Launched again: every step is reused, on every rank, and nothing trains.
    again = torchrun_recipe(workspace, recipe, *change)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {step["action"] for step in json.loads(again.stdout)["steps"]} == {"reuse"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_forgeml_launch_submits_to_slurm_and_the_job_runs_the_recipe(setup, tmp_path, slurm):
    """`forgeml launch --on slurm --submit` under a real Slurm controller (one node on
    loopback): sbatch queues the script, srun starts torchrun on the allocation's node,
    its c10d rendezvous is real, and each training run records the Slurm job."""
    workspace, recipe = setup
    variant = tmp_path / "recipe.yaml"  # other checkpoint intervals: the steps train again
    variant.write_text(recipe.read_text().replace("checkpoint_every: 50", "checkpoint_every: 70"))
    script = tmp_path / "job.sbatch"
    env = ENV | {"FORGEML_RDZV_PORT": str(free_port())}  # sbatch passes the environment on
    launched = subprocess.run(
        [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json", "launch",
         str(variant), "--on", "slurm", "--procs-per-node", "2", "-o", str(script), "--submit"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    job_id = json.loads(launched.stdout)["job_id"]
    state = wait_for_job(job_id)
    output = "\n".join(path.read_text() for path in tmp_path.glob("*.out"))
    assert state == "COMPLETED", output[-3000:]
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()

    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            runs = session.scalars(
                select(Run.id).where(Run.stage.in_(["train.sft", "train.preference"]))
                .order_by(Run.created_at.desc()).limit(2)
            ).all()  # fmt: skip
    finally:
        ws.close()
    for run_id in runs:  # as `forgeml runs show` shows it
        shown = json.loads(forgeml(workspace, "--json", "runs", "show", run_id).stdout)
        assert shown["status"] == "succeeded"
        assert shown["environment"]["launch"] == {
            "slurm_job": job_id, "slurm_nodes": host, "by": "slurm",
            "processes": 2, "nodes": 1,
        }  # fmt: skip
