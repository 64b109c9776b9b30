"""`distributed: fsdp`: pre-training sharded with FSDP2 (torch's `fully_shard`) on two
CPU processes (torchrun, gloo), through the installed CLI.

Each process holds half the parameters; the run trains like one process with the same
global batch (to float rounding: the gradient's halves are summed in another order); a
rank killed with SIGKILL leaves sharded checkpoints that the same command resumes from,
ending bit for bit where an uninterrupted launch ends; a sharded checkpoint resumed on
one process is refused with what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed_finetune import kill_rank_once
from train_fixtures import TRAIN, pretrain

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
# 4 sequences a step: 2 micro-batches of 2 on one process, or 1 of 2 on each of two.


def command(workspace, inputs, *extra: str, processes: int = 2) -> list[str]:
    """`torchrun ... -m forgeml train pretrain` with TRAIN's settings (later flags win)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                     str(processes)]  # fmt: skip
    flags = {"learning_rate": "--lr", "eval_max_sequences": None, "log_every": None}
    train = [part for key, value in TRAIN.items() if flags.get(key, key) is not None
             for part in (flags.get(key) or "--" + key.replace("_", "-"), str(value))]  # fmt: skip
    return [*launcher, "-m", "forgeml", "--workspace", str(workspace.root), "--json", "train",
            "pretrain", "--mixture", inputs["mixture"].ref, "--tokenizer",
            inputs["tokenizer"].ref, "--micro-batch-size", "2", *train,
            "--distributed", "fsdp", *extra]  # fmt: skip


def model_dir(workspace, answer: dict) -> Path:
    return workspace.root / workspace.registry.resolve(answer["outputs"]["model"]).path


def test_fsdp_shards_the_model_and_trains_like_one_process(reference):
    workspace, inputs, _ = reference
    single = pretrain(workspace, inputs, micro_batch_size=2)
    launched = subprocess.run(command(workspace, inputs, "--name", "sharded"), env=ENV,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    answer = json.loads(launched.stdout)
    directory = model_dir(workspace, answer)
    record = json.loads((directory / "training.json").read_text())
    assert record["batch"]["distributed"] == "fsdp" and record["batch"]["processes"] == 2
    total = record["model"]["parameters"]
    assert record["model"]["architecture"] == "Mistral4ForCausalLM"
    # Half of every sharded tensor (an odd first dimension leaves one more row on rank 0).
    assert total / 2 <= record["batch"]["parameters_per_process"] < 0.51 * total
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["Mistral4ForCausalLM"]

    one = load_file(workspace.root / single.outputs["model"].path / "model.safetensors")
    two = load_file(directory / "model.safetensors")
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    single_record = json.loads(
        (workspace.root / single.outputs["model"].path / "training.json").read_text()
    )
    for (_, a), (_, b) in zip(record["loss_curve"], single_record["loss_curve"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # The saved model is a plain Hugging Face directory: it loads and answers.
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(directory)
    assert loaded(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == config["vocab_size"]


def test_a_killed_rank_leaves_sharded_checkpoints_the_same_command_resumes(reference):
    workspace, inputs, _ = reference
    steps = ["--max-steps", "80", "--checkpoint-every", "4", "--eval-every", "40"]
    killed = command(workspace, inputs, *steps, "--name", "fsdp-killed")
    launcher = subprocess.Popen(killed, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = workspace.root / "runs"
    kill_rank_once(launcher, checkpoints, "run-*/checkpoints/step-8/trainer_state.json")
    (saved,) = checkpoints.glob("run-*/checkpoints/step-8")
    shards = {path.name for path in (saved / "sharded").iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= shards, shards

    # On one process the sharded checkpoint is refused, with what to do.
    alone = subprocess.run(command(workspace, inputs, *steps, "--name", "fsdp-killed",
                                   processes=1), env=ENV, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert alone.returncode == 2, alone.stderr[-3000:]
    assert "written with FSDP sharding and is resumed without it" in alone.stderr
    assert "Traceback" not in alone.stderr

    resumed = subprocess.run(killed, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    answer = json.loads(resumed.stdout)
    events = subprocess.run([sys.executable, "-m", "forgeml", "--workspace", str(workspace.root),
                             "--json", "runs", "show", answer["run_id"]], capture_output=True,
                            text=True, timeout=120).stdout  # fmt: skip
    assert "resuming from step" in events

    straight = subprocess.run(
        command(workspace, inputs, *steps[:3], "100", *steps[4:], "--name", "fsdp-straight"),
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = load_file(model_dir(workspace, json.loads(straight.stdout)) / "model.safetensors")
    got = load_file(model_dir(workspace, answer) / "model.safetensors")
    for name, tensor in got.items():  # exact resume: bit for bit
        assert torch.equal(tensor, expected[name]), name
