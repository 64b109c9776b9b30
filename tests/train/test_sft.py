"""`train.sft` / `train.sft_lora`: the loss mask, a few real steps, LoRA, resume and
determinism, and the command line (`--preview`, `--lora`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from finetune_fixtures import (
    TOOL_CHAT,
    build_base,
    chat_lines,
    dies_at_step,
    ingest,
    register_model,
    weights,
    write_jsonl,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq
from typer.testing import CliRunner

import forgeml.train.sft  # noqa: F401  (registers the stages until train/stages.py does)
from forgeml.cli import finetune
from forgeml.cli.output import Options
from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace
from forgeml.data.formats import normalize_record
from forgeml.export.model import find_adapter_base
from forgeml.train.finetune_data import assistant_text, preview_example, sft_example
from forgeml.train.finetune_params import MISTRAL4_LORA_TARGETS

TRAIN = {"max_steps": 6, "batch_size": 4, "learning_rate": 3e-3, "seq_len": 256, "log_every": 2}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.mktemp("base"))


@pytest.fixture
def setup(workspace, base_dir, tmp_path):
    base = register_model(workspace, base_dir)
    data = ingest(workspace, write_jsonl(tmp_path / "chat.jsonl", chat_lines()))
    return workspace, {"model": base, "dataset": data}


def path_of(workspace: Workspace, artifact) -> Path:
    return workspace.root / artifact.path


def test_trained_tokens_are_exactly_the_assistant_turns(base_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    record = normalize_record(TOOL_CHAT, "chat")
    example = sft_example(tokenizer, record, "auto", 1024)
    trained = [s.text for s in preview_example(tokenizer, example).segments if s.trained]
    expected = assistant_text(record, "auto")
    assert trained == expected and len(expected) == 3  # the weight-0 turn is not trained
    assert expected[0].startswith("[THINK]I should look it up.[/THINK][TOOL_CALLS]get_order")
    assert all(turn.endswith("</s>") for turn in expected)
    # TRL's assistant_only_loss path reads the same spans from the template's generation blocks.
    rendered = tokenizer.apply_chat_template(
        record["messages"],
        tools=record["tools"],
        reasoning_effort="high",
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assert rendered["input_ids"] == example.input_ids
    assert rendered["assistant_masks"] == [int(label != -100) for label in example.labels]
    # The stage's collator keeps our labels as they are (padding with -100).
    examples = [{"input_ids": example.input_ids, "labels": example.labels}, {"input_ids": [1], "labels": [1]}]  # fmt: skip
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batch = collate(examples)
    assert batch["labels"][0].tolist() == example.labels
    assert batch["labels"][1].tolist() == [1] + [-100] * (len(example.labels) - 1)


def test_a_dataset_that_is_not_chat_fails_before_training(workspace, base_dir, tmp_path):
    base = register_model(workspace, base_dir)
    text = ingest(workspace, write_jsonl(tmp_path / "t.jsonl", [{"text": "just prose"}]))
    with pytest.raises(InputError, match=r"not chat data:\n.*t.jsonl:1"):
        run_stage(workspace, "train.sft", TRAIN, {"model": base, "dataset": text}, quiet=True)


@pytest.mark.slow
def test_sft_trains_every_weight_and_writes_a_model(setup, base_dir, tmp_path):
    workspace, inputs = setup
    validation = ingest(workspace, write_jsonl(tmp_path / "val.jsonl", chat_lines(4)[1:]))
    result = run_stage(
        workspace,
        "train.sft",
        {**TRAIN, "name": "chat-v1"},
        {**inputs, "validation": validation},
        quiet=True,
    )
    metrics = result.metrics
    assert metrics["steps"] == 6 and metrics["train_loss"] < metrics["first_loss"]
    assert torch.isfinite(torch.tensor(metrics["val_loss"]))
    out = path_of(workspace, result.outputs["model"])
    assert workspace.registry.resolve("chat-v1").sha256 == result.outputs["model"].sha256
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json", "loss_curve.svg"):  # fmt: skip
        assert (out / name).is_file(), name
    record = json.loads((out / "training.json").read_text())
    assert record["stage"] == "train.sft" and len(record["loss_curve"]) == 6
    assert record["data"]["conversations"] == 16 and record["evals"][-1]["eval_loss"] > 0
    before, after = weights(base_dir), weights(out)
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []
    AutoModelForCausalLM.from_pretrained(out)  # a plain HF checkpoint
    assert AutoTokenizer.from_pretrained(out).chat_template is not None


@pytest.mark.slow
def test_lora_trains_only_the_adapter_merged_or_alone(setup, base_dir):
    from peft import PeftModel

    workspace, inputs = setup
    merged = run_stage(workspace, "train.sft", {**TRAIN, "lora": True, "lora_rank": 4}, inputs, quiet=True)  # fmt: skip
    before, after = weights(base_dir), weights(path_of(workspace, merged.outputs["model"]))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapted = {n for n in before if n.split(".")[-2] in MISTRAL4_LORA_TARGETS}
    assert changed == adapted  # merged LoRA: the targeted linears moved, nothing else

    alone = run_stage(workspace, "train.sft_lora", {**TRAIN, "lora_rank": 4}, inputs, quiet=True)
    adapter = alone.outputs["adapter"]
    out = path_of(workspace, adapter)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training.json"):  # fmt: skip
        assert (out / name).is_file(), name
    record = json.loads((out / "forgeml_adapter.json").read_text())
    assert record["base_model"]["sha256"] == inputs["model"].sha256
    assert find_adapter_base(workspace, adapter).sha256 == inputs["model"].sha256  # lineage
    lora = weights(out, "adapter_model.safetensors")
    assert lora and all(".lora_" in name for name in lora)
    assert any(name.endswith("lora_B.weight") and t.abs().sum() > 0 for name, t in lora.items())
    base = AutoModelForCausalLM.from_pretrained(path_of(workspace, inputs["model"]))
    PeftModel.from_pretrained(base, out)  # loads onto its base
    assert alone.metrics["train_loss"] < alone.metrics["first_loss"]


@pytest.mark.slow
def test_same_seed_same_bytes_even_across_an_interruption(base_dir, tmp_path, monkeypatch):
    """A straight run, and a run killed at step 4 then rerun (resuming from the step-3
    checkpoint), give the same model artifact, byte for byte."""
    params = {**TRAIN, "checkpoint_every": 3}
    chats = write_jsonl(tmp_path / "chat.jsonl", chat_lines())  # one path: one dataset hash

    def run(root: Path):
        workspace = Workspace.init(root)
        inputs = {"model": register_model(workspace, base_dir), "dataset": ingest(workspace, chats)}
        return workspace, inputs

    straight_ws, inputs = run(tmp_path / "a")
    straight = run_stage(straight_ws, "train.sft", params, inputs, seed=7, quiet=True)

    killed_ws, inputs = run(tmp_path / "b")
    with dies_at_step(monkeypatch, 4), pytest.raises(KeyboardInterrupt):
        run_stage(killed_ws, "train.sft", params, inputs, seed=7, quiet=True)
    resumed = run_stage(killed_ws, "train.sft", params, inputs, seed=7, quiet=True)
    assert resumed.metrics["resumed_from_step"] == 3
    assert resumed.outputs["model"].sha256 == straight.outputs["model"].sha256
    for workspace in (straight_ws, killed_ws):
        workspace.close()


root = typer.Typer()


@root.callback()
def _global(ctx: typer.Context, workspace: Path = typer.Option(..., "--workspace")) -> None:
    ctx.obj = Options(workspace=workspace, json=True)


train_group = typer.Typer()
train_group.command("sft")(finetune.sft)
train_group.command("preference")(finetune.preference)
train_group.command("rl")(finetune.rl)
root.add_typer(train_group, name="train")


def cli(workspace: Workspace, *args: str) -> dict:
    result = CliRunner().invoke(root, ["--workspace", str(workspace.root), "train", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_preview_shows_the_trained_text_without_training(setup):
    workspace, inputs = setup
    shown = cli(workspace, "sft", "--model", "base", "--data", inputs["dataset"].ref, "--preview")
    trained = [s["text"] for s in shown["segments"] if s["trained"]]
    assert trained == assistant_text(normalize_record(TOOL_CHAT, "chat"), "auto")
    assert 0 < shown["trained_tokens"] < shown["tokens"]
    assert workspace.registry.list_versions(None, "model")[0]["name"] == "base"  # nothing new


@pytest.mark.slow
def test_the_command_line_trains_an_adapter(setup):
    workspace, inputs = setup
    made = cli(
        workspace, "sft", "--model", "base", "--data", inputs["dataset"].ref, "--lora",
        "--max-steps", "2", "--batch-size", "4", "--seq-len", "128", "--name", "chat-lora",
    )  # fmt: skip
    assert made["stage"] == "train.sft_lora" and made["metrics"]["steps"] == 2
    assert workspace.registry.resolve("chat-lora").kind == "adapter"


def test_no_lora_trains_every_weight_and_says_so(setup):
    workspace, inputs = setup
    made = cli(
        workspace, "sft", "--model", "base", "--data", inputs["dataset"].ref, "--no-lora",
        "--max-steps", "1", "--batch-size", "4", "--seq-len", "128", "--name", "chat-full",
    )  # fmt: skip
    assert made["stage"] == "train.sft"
    model = workspace.registry.resolve("chat-full")
    record = json.loads((workspace.root / model.path / "training.json").read_text())
    assert record["params"]["lora"] is False


def test_a_cancelled_run_checkpoints_and_stops(setup, monkeypatch):
    from forgeml.core.context import StageContext
    from forgeml.core.errors import RunCancelled
    from forgeml.core.runs import get_run

    workspace, inputs = setup
    monkeypatch.setattr(StageContext, "cancelled", lambda self: True)
    with pytest.raises(RunCancelled, match="cancelled at step 1"):
        run_stage(workspace, "train.sft", TRAIN, inputs, quiet=True)
    cancelled = list(workspace.root.glob("runs/*/checkpoints/checkpoint-1"))
    assert len(cancelled) == 1 and (cancelled[0] / "trainer_state.json").is_file()
    assert get_run(workspace, cancelled[0].parts[-3]).status == "cancelled"


@pytest.mark.slow
def test_a_supervised_job_runs_train_sft(setup, tmp_path):
    from forgeml.jobs import files, queue, worker

    workspace, _ = setup
    content = "".join(json.dumps(line) + "\n" for line in chat_lines()).encode()
    file_id = files.store_file(workspace, "train.jsonl", content, "fine-tune").id
    hyperparameters = {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "seq_len": 256}
    queue.submit(
        workspace,
        method="supervised",
        base_model="base",
        training_files=[{"file_id": file_id}],
        hyperparameters=hyperparameters,
    )
    job = worker.work_once(workspace)
    assert job.status == "succeeded", job.error
    model = workspace.registry.resolve(job.fine_tuned_model)
    record = json.loads((workspace.root / model.path / "training.json").read_text())
    assert model.kind == "model" and record["steps"] == 4  # 16 conversations, batch 4


def test_replay_mixes_general_text_into_sft_by_its_share(setup, corpus_dir):
    workspace, inputs = setup
    dataset = run_stage(workspace, "data.ingest", {"paths": [str(corpus_dir)]}).outputs["dataset"]
    mixture = run_stage(
        workspace, "data.mix", {"validation_fraction": 0.2}, {"datasets": [dataset]}
    ).outputs["mixture"]
    params = {**TRAIN, "replay_fraction": 0.25}
    result = run_stage(workspace, "train.sft", params, {**inputs, "replay": mixture})
    record = json.loads((path_of(workspace, result.outputs["model"]) / "training.json").read_text())
    replay = record["replay"]
    assert replay["mixture"] == mixture.sha256 and replay["blocks"] >= 1
    chat_tokens = record["data"]["trained_tokens"] - replay["tokens"]
    # a quarter of the trained tokens, to within one block
    assert abs(replay["tokens"] - chat_tokens / 3) <= replay["block_tokens"]
    assert record["data"]["conversations"] == len(chat_lines())
    with pytest.raises(InputError, match="replay_fraction needs a replay mixture"):
        run_stage(workspace, "train.sft", params, inputs)


def test_early_stopping_outputs_the_best_validation_checkpoint(setup, tmp_path):
    workspace, inputs = setup
    conflicting = [  # the same questions, other answers: validation loss soon rises
        {"messages": [line["messages"][0], {"role": "assistant", "content": "Nope."}]}
        for line in chat_lines()[1:]
    ]
    validation = ingest(workspace, write_jsonl(tmp_path / "val.jsonl", conflicting))
    params = {**TRAIN, "max_steps": 40, "eval_every": 2, "checkpoint_every": 4,
              "early_stopping_patience": 2}  # fmt: skip
    result = run_stage(workspace, "train.sft", params, {**inputs, "validation": validation})
    record = json.loads((path_of(workspace, result.outputs["model"]) / "training.json").read_text())
    losses = {e["step"]: e["eval_loss"] for e in record["evals"][:-1]}  # [-1]: the final one
    assert record["best_step"] == min(losses, key=losses.get)
    assert record["steps"] < 40  # it stopped: two validations without improvement
    assert record["steps"] - record["best_step"] == 2 * params["eval_every"]
    with pytest.raises(InputError, match="early stopping needs a validation dataset"):
        run_stage(workspace, "train.sft", {**TRAIN, "early_stopping_patience": 2}, inputs)
