"""`forgeml plan RECIPE`, run as a user runs it: estimates before anything runs, from the
recipe's own files and parameters, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORGEML = [sys.executable, "-m", "forgeml"]

RECIPE = """\
name: plan-demo
steps:
  - name: docs
    uses: data.ingest
    with: {{paths: ["{docs}"], name: docs}}
  - name: mixture
    uses: data.mix
    inputs: {{datasets: [docs]}}
  - name: tokenizer
    uses: tokenizer.train
    inputs: {{mixture: mixture}}
    with: {{vocab_size: 512}}
  - name: pretrain
    uses: train.pretrain
    inputs: {{mixture: mixture, tokenizer: tokenizer}}
    with: {{size: tiny, max_steps: 50, batch_size: 4, seq_len: 128}}
  - name: chats
    uses: data.ingest
    with: {{paths: ["{chats}"], name: chats}}
  - name: sft
    uses: train.sft
    inputs: {{model: pretrain, dataset: chats}}
    with: {{epochs: 2, batch_size: 5, seq_len: 256}}
"""


def forgeml(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [*FORGEML, "--workspace", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def recipe(tmp_path) -> Path:
    docs = tmp_path / "docs.txt"
    docs.write_text("The for statement iterates over a sequence.\n" * 200)
    chats = tmp_path / "chats.jsonl"
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    chats.write_text((json.dumps(line) + "\n") * 20)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(docs=docs, chats=chats))
    return path


def test_plan_estimates_training_steps_before_anything_runs(tmp_path, recipe):
    root = tmp_path / "ws"
    result = forgeml(root, "--json", "plan", str(recipe), "--price-per-hour", "3.6")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    steps = {s["step"]: s for s in plan["steps"]}
    sizes = json.loads(
        forgeml(root, "--json", "models", "sizes", "--seq-len", "128", "--vocab-size", "512").stdout
    )
    per_token = next(s for s in sizes if s["size"] == "tiny")["training_flops_per_token"]

    pretrain = steps["pretrain"]
    assert pretrain["tokens"] == 50 * 4 * 128  # steps x batch x block, packed
    assert pretrain["flops"] == pytest.approx(pretrain["tokens"] * per_token, rel=0.01)
    assert pretrain["seconds"] > 0 and pretrain["memory_bytes"] > 0
    sft = steps["sft"]
    assert sft["steps"] == 8  # 2 epochs of 20 examples in batches of 5
    assert 0 < sft["tokens"] < 8 * 5 * 256  # short examples: far under the padded length
    assert steps["docs"]["flops"] is None  # not training: listed, not guessed
    seconds = pretrain["seconds"] + sft["seconds"]
    assert plan["training_seconds"] == pytest.approx(seconds, abs=0.1)
    assert plan["cost"] == pytest.approx(seconds / 3600 * 3.6, abs=0.01)
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())  # nothing ran

    faster = json.loads(forgeml(root, "--json", "plan", str(recipe), "--hardware", "h100x8").stdout)
    assert faster["training_seconds"] < plan["training_seconds"] / 100
    assert faster["hardware"]["measured"] is False  # a guess, and it says so


def test_unknown_hardware_and_a_bad_recipe_are_refused_clearly(tmp_path, recipe):
    root = tmp_path / "ws"
    unknown = forgeml(root, "plan", str(recipe), "--hardware", "tpu-v9")
    assert unknown.returncode == 2 and "unknown hardware 'tpu-v9'" in unknown.stderr
    assert "cpu-2" in unknown.stderr and "Traceback" not in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(RECIPE.format(docs="d", chats="c").replace("max_steps: 50", "max_steps: -5"))
    refused = forgeml(root, "plan", str(bad))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "max_steps" in refused.stderr


def test_sft_on_a_large_model_with_little_data_plans_lora_unless_told(tmp_path, recipe):
    """SFT's default (auto_lora): every weight on a small model, a LoRA adapter on a model
    of 1B parameters or more fine-tuned on little data, which needs far less memory."""
    root = tmp_path / "ws"

    def sft_step(size: str, lora: str = "") -> dict:
        text = recipe.read_text().replace("size: tiny", f"size: {size}")
        text = text.replace("seq_len: 256}", f"seq_len: 256{lora}}}")
        path = tmp_path / f"recipe-{size}{lora.strip(', :')}.yaml"
        path.write_text(text)
        result = forgeml(root, "--json", "plan", str(path))
        assert result.returncode == 0, result.stderr
        return next(s for s in json.loads(result.stdout)["steps"] if s["step"] == "sft")

    assert sft_step("tiny")["details"]["lora"] is False
    large = sft_step("large")  # 8.7B parameters, 20 conversations
    assert large["details"]["lora"] is True
    full = sft_step("large", ", lora: false")  # told: every weight
    assert full["details"]["lora"] is False
    assert large["memory_bytes"] < full["memory_bytes"] / 2
