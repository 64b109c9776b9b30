"""A fine-tuning run's kept checkpoints become models by name: `forgeml models
checkpoints` lists them, `forgeml models from-checkpoint` makes one a registry model
(full weights copied, or a LoRA checkpoint merged into the run's base)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from finetune_fixtures import build_base, chat_lines, register_model, weights, write_jsonl

TRAIN = ["--max-steps", "4", "--checkpoint-every", "2", "--batch-size", "4", "--seq-len", "128",
         "--no-collapse-check"]  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("base"))


def forgeml(workspace, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace.root), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_kept_checkpoint_becomes_a_model(workspace, base_dir, tmp_path):
    register_model(workspace, base_dir)
    forgeml(workspace, "data", "ingest", str(write_jsonl(tmp_path / "c.jsonl", chat_lines())),
            "--name", "chats")  # fmt: skip
    forgeml(
        workspace, "train", "sft", "--model", "base", "--data", "chats", "--name", "bot", *TRAIN
    )
    forgeml(workspace, "train", "sft", "--model", "base", "--data", "chats", "--name", "bot-lora",
            "--lora", "--merge", *TRAIN)  # fmt: skip

    listed = json.loads(forgeml(workspace, "--json", "models", "checkpoints", "bot").stdout)
    assert [c["step"] for c in listed["checkpoints"]] == [2, 4] and listed["final_step"] == 4
    assert all(c["train_loss"] > 0 for c in listed["checkpoints"])
    assert "train loss" in forgeml(workspace, "models", "checkpoints", "bot").stdout

    made = json.loads(forgeml(workspace, "--json", "models", "from-checkpoint", "bot", "--step",
                              "2", "--name", "bot-step-2").stdout)  # fmt: skip
    model_dir = workspace.root / workspace.registry.resolve("bot-step-2").path
    run_dir = workspace.run_dir(listed["run"]) / "checkpoints" / "checkpoint-2"
    assert (model_dir / "model.safetensors").read_bytes() == (
        run_dir / "model.safetensors"
    ).read_bytes()
    record = json.loads((model_dir / "checkpoint.json").read_text())
    assert record["step"] == 2 and record["source_run"] == listed["run"]
    assert (model_dir / "tokenizer.json").is_file() and made["outputs"]["model"]

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(model_dir)  # a plain HF model
    assert loaded.config.model_type == "mistral4"

    # LoRA: the checkpoint's adapter is merged into the run's base.
    forgeml(workspace, "models", "from-checkpoint", "bot-lora", "--step", "2", "--name", "l2")
    merged = weights(workspace.root / workspace.registry.resolve("l2").path)
    base = weights(base_dir)
    changed = [k for k in base if not (merged[k] == base[k]).all()]
    assert changed and all("proj" in key for key in changed)

    again = json.loads(forgeml(workspace, "--json", "models", "from-checkpoint", "bot", "--step",
                               "2").stdout)  # fmt: skip
    assert again["outputs"]["model"] == made["outputs"]["model"]  # same bytes: reused

    # A trainer state cut short (a kill while transformers wrote it in place): not a checkpoint.
    state = run_dir / "trainer_state.json"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    listed = json.loads(forgeml(workspace, "--json", "models", "checkpoints", "bot").stdout)
    assert [c["step"] for c in listed["checkpoints"]] == [4]


@pytest.mark.slow
def test_bad_checkpoint_requests_say_what_exists(workspace, base_dir, tmp_path):
    register_model(workspace, base_dir)
    forgeml(workspace, "data", "ingest", str(write_jsonl(tmp_path / "c.jsonl", chat_lines())),
            "--name", "chats")  # fmt: skip
    forgeml(
        workspace, "train", "sft", "--model", "base", "--data", "chats", "--name", "bot", *TRAIN
    )
    missing = forgeml(workspace, "models", "from-checkpoint", "bot", "--step", "3", ok=False)
    assert "no checkpoint at step 3" in missing.stderr and "kept steps: 2, 4" in missing.stderr
    not_tuned = forgeml(workspace, "models", "checkpoints", "base", ok=False)
    assert "not by a fine-tuning stage" in not_tuned.stderr
    for result in (missing, not_tuned):
        assert result.returncode != 0 and "Traceback" not in result.stderr
