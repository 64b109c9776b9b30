"""Fine-tuning that went wrong fails and says so: a diverging loss stops training, and a
model whose answers collapse into one repeated token is not registered."""

from __future__ import annotations

import subprocess
import sys

import pytest
from finetune_fixtures import build_base, chat_lines, ingest, register_model, write_jsonl

from forgeml.core.runs import run_stage
from forgeml.train.guards import TrainingFailed, degenerate


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def collapsed_dir(tmp_path_factory):
    """A base whose final norm and output layer are zero: every logit is 0 (and stays 0
    under training: both get zero gradients), so greedy decoding repeats token 0 whatever
    the prompt (a stand-in for a model that learned nothing usable)."""
    import torch
    from transformers import AutoModelForCausalLM

    directory = build_base(tmp_path_factory.mktemp("collapsed"))
    model = AutoModelForCausalLM.from_pretrained(directory)
    with torch.no_grad():
        model.model.norm.weight.zero_()
        model.lm_head.weight.zero_()
    model.save_pretrained(directory)
    return directory


@pytest.fixture
def inputs(workspace, collapsed_dir, tmp_path):
    base = register_model(workspace, collapsed_dir)
    data = ingest(workspace, write_jsonl(tmp_path / "chat.jsonl", chat_lines()))
    return {"model": base, "dataset": data}


def test_repeated_tokens_are_degenerate_and_varied_ones_are_not():
    assert degenerate([7] * 20) and degenerate([7] * 18 + [1, 2])
    assert not degenerate(list(range(20))) and not degenerate([7] * 5)


def test_an_untrained_model_collapses_and_the_run_fails(workspace, inputs):
    # One step at a tiny learning rate leaves the model as it was: it repeats a token.
    params = {"max_steps": 1, "learning_rate": 1e-7, "batch_size": 4, "seq_len": 128}
    with pytest.raises(TrainingFailed) as failed:
        run_stage(workspace, "train.sft", params, inputs)
    assert "collapsed" in failed.value.message and "one token repeated" in failed.value.message
    assert "higher learning rate (it was 1e-07" in failed.value.hint
    assert len(workspace.registry.list_artifacts("model")) == 1  # the base only
    kept = run_stage(workspace, "train.sft", {**params, "collapse_check": False}, inputs)
    assert kept.outputs["model"].kind == "model"


def test_a_diverging_loss_stops_training(workspace, base_dir, tmp_path):
    inputs = {
        "model": register_model(workspace, base_dir, name="healthy"),
        "dataset": ingest(workspace, write_jsonl(tmp_path / "chat.jsonl", chat_lines())),
    }
    params = {"max_steps": 30, "learning_rate": 50.0, "batch_size": 4, "seq_len": 128}
    with pytest.raises(TrainingFailed) as failed:
        run_stage(workspace, "train.sft", params, inputs)
    assert "training diverged" in failed.value.message
    assert "lower the learning rate (it was 50)" in failed.value.hint


def test_the_command_line_says_what_collapsed(workspace, inputs, tmp_path):
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace.root), "train",
               "sft", "--model", "base", "--data", inputs["dataset"].ref, "--max-steps", "1",
               "--lr", "1e-7", "--batch-size", "4", "--seq-len", "128"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the fine-tuned model collapsed" in result.stderr and "collapse_check" in result.stderr
    kept = subprocess.run([*command, "--no-collapse-check"], capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr


def test_the_learning_rate_is_chosen_from_the_model_size(workspace, base_dir, tmp_path):
    import json

    from forgeml.train.finetune_params import auto_learning_rate

    inputs = {
        "model": register_model(workspace, base_dir, name="healthy"),
        "dataset": ingest(workspace, write_jsonl(tmp_path / "chat.jsonl", chat_lines())),
    }
    result = run_stage(workspace, "train.sft", {"max_steps": 2, "seq_len": 128}, inputs)
    record = json.loads(
        (workspace.root / result.outputs["model"].path / "training.json").read_text()
    )
    assert record["params"]["learning_rate"] == 1e-3  # the tiny size
    assert auto_learning_rate(7_000_000_000, "sft", lora=False) == 2e-5
    assert auto_learning_rate(7_000_000_000, "sft", lora=True) == 2e-4
    assert auto_learning_rate(7_000_000_000, "preference", lora=False) == 1e-7


def test_sft_with_no_flags_chooses_epochs_batch_and_rate_and_learns(workspace, base_dir, tmp_path):
    """`forgeml train sft --model M --data D` alone: the learning rate from the model's
    size, epochs and batch size from the data's (recorded in training.json), and a model
    that answers its training prompts (the collapse check is on)."""
    import json

    from forgeml.train.finetune_params import auto_batch_size, auto_epochs, auto_lora

    register_model(workspace, base_dir, name="unflagged-base")
    write_jsonl(tmp_path / "chat.jsonl", chat_lines(16))
    forgeml = [sys.executable, "-m", "forgeml", "--workspace", str(workspace.root)]
    subprocess.run([*forgeml, "data", "ingest", str(tmp_path / "chat.jsonl"), "--name", "few"],
                   check=True, capture_output=True)  # fmt: skip
    result = subprocess.run([*forgeml, "--json", "train", "sft", "--model", "unflagged-base",
                             "--data", "few", "--name", "unflagged"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = workspace.registry.resolve("unflagged")
    record = json.loads((workspace.root / model.path / "training.json").read_text())
    chosen = record["params"]
    assert (chosen["epochs"], chosen["batch_size"], chosen["learning_rate"]) == (7.0, 8, 1e-3)
    assert chosen["lora"] is False  # every weight on a small model (auto_lora)
    assert json.loads(result.stdout)["metrics"]["steps"] == 14  # 7 epochs of 2 batches
    # The rule at other sizes (OpenAI's epochs; ~0.2% of the examples a batch, 8 to 256).
    assert [auto_epochs(n) for n in (1, 16, 34, 1000, 8334, 100_000)] == [25, 7, 3, 3, 2, 1]
    assert [auto_batch_size(n) for n in (16, 7999, 8000, 50_000, 10**7)] == [8, 8, 16, 64, 256]
    # LoRA for 1B+ parameters on at most 10,000 conversations (forgeml plan shows it too).
    assert [auto_lora(p, n) for p, n in ((10**9, 16), (10**9, 10_001), (10**9 - 1, 16))] == [
        True, False, False
    ]  # fmt: skip


def test_replay_and_early_stopping_from_the_command_line(workspace, base_dir, tmp_path, corpus_dir):
    import json

    register_model(workspace, base_dir, name="healthy")
    write_jsonl(tmp_path / "chat.jsonl", chat_lines())
    conflicting = [{"messages": [line["messages"][0], {"role": "assistant", "content": "Nope."}]}
                   for line in chat_lines()[1:]]  # fmt: skip
    write_jsonl(tmp_path / "val.jsonl", conflicting)

    def forgeml(*args: str) -> str:
        command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace.root), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout

    forgeml("data", "ingest", str(tmp_path / "chat.jsonl"), "--name", "chats")
    forgeml("data", "ingest", str(tmp_path / "val.jsonl"), "--name", "held-out")
    forgeml("data", "ingest", str(corpus_dir), "--name", "docs")
    forgeml("data", "mix", "docs=1", "--name", "mix")
    report = json.loads(forgeml(
        "--json", "train", "sft", "--model", "healthy", "--data", "chats", "--replay", "mix",
        "--replay-fraction", "0.25", "--validation", "held-out", "--eval-every", "2",
        "--early-stopping-patience", "2", "--max-steps", "40", "--batch-size", "4",
        "--seq-len", "128",
    ))  # fmt: skip
    directory = workspace.root / workspace.registry.resolve(report["outputs"]["model"]).path
    record = json.loads((directory / "training.json").read_text())
    assert record["replay"]["blocks"] >= 1
    losses = {e["step"]: e["eval_loss"] for e in record["evals"][:-1]}  # [-1]: the final one
    assert record["best_step"] == min(losses, key=losses.get)  # the output is the best one
    assert report["metrics"]["best_step"] == record["best_step"]
