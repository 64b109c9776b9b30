"""`torchrun -m forgeml train sft`: two CPU processes (gloo) fine-tune as one run.

Rank 0 records the run and writes the model; rank 1 trains its half of each batch and
exits quietly. A rank killed mid-run stops the group; the same command then resumes
from the last checkpoint and ends, bit for bit, where an uninterrupted launch ends. Transformers averages the loss over the tokens of the whole global batch
(across processes), so two processes with the same global batch train like one, to
float rounding.
"""

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
    chat_lines,
    forgeml,
    openai_preference_line,
    prompt_lines,
    register_model,
    weights,
    write_jsonl,
)
from sqlalchemy import func, select

from forgeml.core.schema import Run
from forgeml.core.workspace import Workspace

TRAIN = ["--max-steps", "3", "--batch-size", "4", "--seq-len", "64", "--lr", "1e-3"]
TRAIN += ["--no-collapse-check"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    ws = Workspace.init(root / "ws")
    register_model(ws, build_base(root / "base"))
    ws.close()
    forgeml(root / "ws", "data", "ingest", str(write_jsonl(root / "chat.jsonl", chat_lines())),
            "--name", "chat")  # fmt: skip
    pairs = [openai_preference_line(word) for word in ("dict", "list", "set", "tuple") * 4]
    forgeml(root / "ws", "data", "ingest", str(write_jsonl(root / "pairs.jsonl", pairs)),
            "--name", "pairs")  # fmt: skip
    return root / "ws"


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores


def launch_command(workspace: Path, *args: str) -> list[str]:
    """`torchrun --nproc_per_node 2 -m forgeml --workspace W ARGS...`"""
    # --standalone: a free rendezvous port (test files run side by side under xdist)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    return [*command, "-m", "forgeml", "--workspace", str(workspace), *args]


def torchrun(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    command = launch_command(workspace, *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


@pytest.mark.slow
def test_two_processes_fine_tune_as_one_run(workspace):
    # A different checkpoint interval: a run key of its own, the same training.
    forgeml(workspace, "train", "sft", "--model", "base", "--data", "chat", *TRAIN,
            "--checkpoint-every", "100", "--name", "one")  # fmt: skip
    launched = torchrun(workspace, "--json", "train", "sft", "--model", "base", "--data", "chat",
                        *TRAIN, "--checkpoint-every", "200", "--name", "two")  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    two = json.loads(launched.stdout)  # rank 0 alone reports: one JSON document

    ws = Workspace.open(workspace)
    try:
        one_dir, two_dir = (ws.root / ws.registry.resolve(name).path for name in ("one", "two"))
        with ws.registry.session() as session:
            run = session.get(Run, two["run_id"])
            assert run.status == "succeeded" and run.attempt == 1
            count = select(func.count()).select_from(Run).where(Run.stage == "train.sft")
            assert session.scalar(count) == 2  # the single run and the launched one
    finally:
        ws.close()
    assert two["outputs"]["model"] == "model/" + two_dir.name[:12]
    record = json.loads((two_dir / "training.json").read_text())
    assert record["processes"] == 2
    one = weights(one_dir)
    for name, tensor in weights(two_dir).items():
        torch.testing.assert_close(tensor, one[name], rtol=1e-4, atol=1e-5, msg=name)


def trains_as_one_process(workspace: Path, train: list[str], name: str) -> None:
    """`train` in one process, then under torchrun with two (another checkpoint interval:
    a run key of its own): the launched run records two processes and trains the same
    weights, to float rounding, also past an epoch's end (its last step is padded to a
    whole batch in both, whole_batches.py)."""
    forgeml(workspace, *train, "--checkpoint-every", "100", "--name", f"{name}-one")
    launched = torchrun(workspace, *train, "--checkpoint-every", "200", "--name", f"{name}-two")
    assert launched.returncode == 0, launched.stderr[-3000:]
    ws = Workspace.open(workspace)
    try:
        one, two = (ws.root / ws.registry.resolve(f"{name}-{n}").path for n in ("one", "two"))
    finally:
        ws.close()
    records = [json.loads((path / "training.json").read_text()) for path in (one, two)]
    assert records[1]["processes"] == 2
    # The same examples at every step: the same losses (another example in a step moves
    # its loss by ~0.3%), logged at the same scale whatever the number of processes.
    torch.testing.assert_close(records[1]["loss_curve"], records[0]["loss_curve"], rtol=1e-5,
                               atol=0)  # fmt: skip
    # AdamW turns float-rounding gradient differences into up to ~1% of a step (lr) on
    # parameters whose gradients are near zero.
    expected = weights(one)
    for key, tensor in weights(two).items():
        torch.testing.assert_close(tensor, expected[key], rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.slow
def test_two_processes_tune_preferences_as_one(workspace):
    # 5 steps: past the end of the first epoch (14 training pairs), a padded step
    train = ["train", "preference", "--model", "base", "--data", "pairs", "--max-steps", "5",
             "--batch-size", "4", "--seq-len", "64", "--lr", "1e-4"]  # fmt: skip
    trains_as_one_process(workspace, train, "dpo")


@pytest.mark.slow
def test_two_processes_train_a_classifier_as_one(workspace):
    from test_classify import lines

    forgeml(workspace, "data", "ingest", str(write_jsonl(workspace.parent / "tickets.jsonl",
            lines())), "--name", "tickets")  # fmt: skip
    # 7 steps: past the end of the first epoch (45 tickets), a padded step
    train = ["train", "classify", "--model", "base", "--data", "tickets", "--max-steps", "7",
             "--batch-size", "8", "--lr", "3e-3", "--seq-len", "64"]  # fmt: skip
    trains_as_one_process(workspace, train, "cls")


@pytest.mark.slow
def test_grpo_on_two_processes_is_one_reproducible_run(workspace):
    """GRPO under torchrun: one registry run that rank 0 records, each rank generating
    for its share of the prompts. Sampling streams are per rank, so the weights are not a
    one-process run's; the same launch again (another run key) gives the same bytes."""
    forgeml(workspace, "data", "ingest", str(write_jsonl(workspace.parent / "prompts.jsonl",
            prompt_lines(8))), "--name", "prompts")  # fmt: skip
    train = ["train", "rl", "--model", "base", "--data", "prompts", "--reward", "exact_match",
             "--max-steps", "2", "--batch-size", "4", "--num-generations", "2",
             "--max-completion-length", "8", "--seq-len", "64"]  # fmt: skip
    first = torchrun(workspace, "--json", *train, "--checkpoint-every", "100", "--name", "rl-a")
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = json.loads(first.stdout)["run_id"]  # rank 0 alone reports: one JSON document
    second = torchrun(workspace, *train, "--checkpoint-every", "200", "--name", "rl-b")
    assert second.returncode == 0, second.stderr[-3000:]
    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            run = session.get(Run, run_id)
            assert run.status == "succeeded" and run.attempt == 1
            count = select(func.count()).select_from(Run).where(Run.stage == "train.rl")
            assert session.scalar(count) == 2  # one registry run per launch, not per rank
        a, b = (ws.root / ws.registry.resolve(name).path for name in ("rl-a", "rl-b"))
    finally:
        ws.close()
    assert json.loads((a / "training.json").read_text())["processes"] == 2
    expected = weights(a)
    for name, tensor in weights(b).items():
        assert torch.equal(tensor, expected[name]), name


def rank_processes(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the workers torchrun started (read from their environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(
            next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1]
        )
        if parent != launcher.pid:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def kill_rank_once(launcher: subprocess.Popen, runs: Path, pattern: str, rank: int = 1) -> None:
    """SIGKILL `rank` of a torchrun launch as soon as `runs` holds a new file matching
    `pattern` (the module's workspace may hold an earlier test's, left by its failure);
    torchrun then stops the group (rank 0 does not hang on it)."""
    deadline = time.monotonic() + 300
    earlier = set(runs.glob(pattern))
    while not set(runs.glob(pattern)) - earlier:
        assert launcher.poll() is None, launcher.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"nothing matched {pattern}"
        time.sleep(0.02)
    os.kill(rank_processes(launcher)[rank], signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0, "the run ended before a rank could be killed"


@pytest.mark.slow
def test_a_rank_killed_mid_run_resumes_from_its_checkpoint(workspace):
    train = [*TRAIN[:1], "24", *TRAIN[2:], "--checkpoint-every", "4"]  # 24 steps
    command = launch_command(workspace, "--json", "train", "sft", "--model", "base", "--data",
                             "chat", *train, "--name", "killed")  # fmt: skip
    launcher = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_rank_once(launcher, Path(workspace) / "runs",
                   "run-*/checkpoints/checkpoint-4/trainer_state.json")  # fmt: skip

    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_id = json.loads(resumed.stdout)["run_id"]
    # The same launch uninterrupted (another checkpoint interval: a run key of its own).
    straight_run = torchrun(workspace, "train", "sft", "--model", "base", "--data", "chat",
                            *train[:-1], "100", "--name", "straight")  # fmt: skip
    assert straight_run.returncode == 0, straight_run.stderr[-3000:]
    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            run = session.get(Run, run_id)
            assert run.status == "succeeded" and run.attempt == 2
        killed, straight = (ws.root / ws.registry.resolve(n).path for n in ("killed", "straight"))
    finally:
        ws.close()
    events = forgeml(workspace, "--json", "runs", "show", run_id).stdout
    assert "resuming from step" in events, events[-2000:]
    expected = weights(straight)
    for name, tensor in weights(killed).items():  # exact resume: bit for bit
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.slow
def test_a_launch_resumed_on_another_world_size_trains_the_same_examples(workspace):
    """Killed on two processes, resumed by the plain command on one: every step trains on
    the examples an uninterrupted one-process run trains on, epoch ends included (14
    conversations in batches of 4: each epoch ends in a padded step), so the losses agree
    to float rounding; the resume says the weights cannot be bit-identical."""
    forgeml(workspace, "data", "ingest", str(write_jsonl(workspace.parent / "chat14.jsonl",
            chat_lines(14))), "--name", "chat14")  # fmt: skip
    train = ["train", "sft", "--model", "base", "--data", "chat14", *TRAIN[2:], "--max-steps",
             "10"]  # fmt: skip
    args = [*train, "--checkpoint-every", "4", "--name", "moved"]
    launcher = subprocess.Popen(launch_command(workspace, *args), env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    kill_rank_once(launcher, Path(workspace) / "runs",
                   "run-*/checkpoints/checkpoint-4/forgeml_launch.json")  # fmt: skip

    resumed = forgeml(workspace, "--json", *args)  # one process now
    run_id = json.loads(resumed.stdout)["run_id"]
    forgeml(workspace, *train, "--checkpoint-every", "100", "--name", "unmoved")
    events = forgeml(workspace, "--json", "runs", "show", run_id).stdout
    assert "resuming from step 4" in events, events[-2000:]
    assert "checkpoint written by 2 process(es)" in events, events[-2000:]
    ws = Workspace.open(workspace)
    try:
        with ws.registry.session() as session:
            assert session.get(Run, run_id).attempt == 2
        moved, unmoved = (ws.root / ws.registry.resolve(n).path for n in ("moved", "unmoved"))
    finally:
        ws.close()
    curves = [json.loads((path / "training.json").read_text())["loss_curve"]
              for path in (moved, unmoved)]  # fmt: skip
    assert [step for step, _ in curves[0]] == list(range(1, 11))
    # Another example in a step moves its loss by ~0.3% (measured before whole batches).
    torch.testing.assert_close(curves[0], curves[1], rtol=1e-5, atol=0)
    expected = weights(unmoved)
    for name, tensor in weights(moved).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5, msg=name)
