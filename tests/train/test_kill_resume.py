"""Preference tuning (DPO), GRPO and classifier training killed with SIGKILL mid-run: the
same command resumes from the last complete checkpoint and ends, bit for bit, where an
uninterrupted run ends. Through the installed CLI, as a user (or a scheduler that lost a
node) runs it. SFT's kill is in test_distributed_finetune.py, pre-training's in
test_resume.py and test_fsdp.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from finetune_fixtures import (
    build_base,
    forgeml,
    openai_preference_line,
    prompt_lines,
    register_model,
    weights,
    write_jsonl,
)

from forgeml.core.schema import Run
from forgeml.core.workspace import Workspace
from forgeml.train.checkpoint_files import checkpoints

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = ["--max-steps", "6", "--batch-size", "4", "--seq-len", "64"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from test_classify import lines

    root = tmp_path_factory.mktemp("kill")
    ws = Workspace.init(root / "ws")
    register_model(ws, build_base(root / "base"))
    ws.close()
    pairs = [openai_preference_line(word) for word in ("dict", "list", "set", "tuple") * 4]
    for name, rows in (("pairs", pairs), ("prompts", prompt_lines(8)), ("tickets", lines())):
        forgeml(root / "ws", "data", "ingest", str(write_jsonl(root / f"{name}.jsonl", rows)),
                "--name", name)  # fmt: skip
    return root / "ws"


def killed_and_resumed(workspace: Path, train: list[str], name: str) -> None:
    """`train` killed once its first checkpoint (step 2) is complete, the same command again, and
    a straight run (another checkpoint interval: a run key of its own): same weights."""
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json",
               *train, "--checkpoint-every", "2", "--name", f"{name}-killed"]  # fmt: skip
    before = set((workspace / "runs").glob("run-*"))
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not [run for run in (workspace / "runs").glob("run-*") if run not in before
               and checkpoints(run / "checkpoints")]:  # fmt: skip
        assert first.poll() is None, first.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)

    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_id = json.loads(resumed.stdout)["run_id"]
    straight = subprocess.run([*command[:-4], "--checkpoint-every", "100", "--name",
                               f"{name}-straight"], env=ENV, capture_output=True, timeout=600)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    events = forgeml(workspace, "--json", "runs", "show", run_id).stdout
    assert "resuming from step" in events, events[-2000:]
    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            run = session.get(Run, run_id)
            assert run.status == "succeeded" and run.attempt == 2
        killed, straight = (
            ws.root / ws.registry.resolve(f"{name}-{kind}").path for kind in ("killed", "straight")
        )
    finally:
        ws.close()
    metrics = json.loads(events)["metrics"]
    assert metrics["resumed_from_step"] >= 2 and metrics["steps"] == 6
    expected = weights(straight)
    for key, tensor in weights(killed).items():
        assert torch.equal(tensor, expected[key]), key


def test_preference_tuning_killed_resumes_exactly(workspace):
    train = ["train", "preference", "--model", "base", "--data", "pairs", *STEPS, "--lr", "1e-4"]
    killed_and_resumed(workspace, train, "dpo")


def test_grpo_killed_resumes_exactly(workspace):
    train = ["train", "rl", "--model", "base", "--data", "prompts", "--reward", "exact_match",
             *STEPS, "--num-generations", "2", "--max-completion-length", "8"]  # fmt: skip
    killed_and_resumed(workspace, train, "grpo")


def test_a_classifier_killed_resumes_exactly(workspace):
    train = ["train", "classify", "--model", "base", "--data", "tickets", *STEPS, "--lr", "3e-3"]
    killed_and_resumed(workspace, train, "cls")
