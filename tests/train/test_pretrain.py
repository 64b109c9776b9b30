"""`train.pretrain` from scratch and continued: it learns, saves a loadable HF model,
records its training, and rejects bad settings before work starts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import TRAIN, pretrain
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import forgeml.models.sizes  # noqa: F401  (registers mistral4 with the Auto classes)
from forgeml.core.errors import InputError
from forgeml.models.sizes import build_model

EXPECTED_FILES = {
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "training.json",
    "loss_curve.svg",
}


def _model_dir(workspace, result):
    return workspace.root / result.outputs["model"].path


def test_scratch_run_learns_and_saves_a_standard_hf_model(reference):
    workspace, _, result = reference
    directory = _model_dir(workspace, result)
    assert {p.name for p in directory.iterdir()} >= EXPECTED_FILES

    record = json.loads((directory / "training.json").read_text())
    losses = [loss for _, loss in record["loss_curve"]]
    assert len(losses) == TRAIN["max_steps"] == record["steps"]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    evals = record["evals"]
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert 0 < evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    assert record["stopped_by"] == "max_steps"
    assert record["tokens_seen"] == 8 * 4 * 64
    assert record["determinism"]["deterministic_algorithms"] is True
    assert record["params"]["seq_len"] == 64 and "name" not in record["params"]
    assert result.metrics["steps"] == 8 and result.metrics["val_bpb"] == evals[-1]["val_bpb"]

    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.chat_template and len(tokenizer) == model.config.vocab_size
    prompt = tokenizer("The import statement", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert output.shape[1] == prompt["input_ids"].shape[1] + 5


def test_every_trainable_parameter_changed(reference):
    workspace, _, result = reference
    directory = _model_dir(workspace, result)
    initial = build_model(AutoConfig.from_pretrained(directory), seed=0).state_dict()
    trained = load_file(directory / "model.safetensors")
    assert set(trained) == set(initial)
    unchanged = [name for name, tensor in trained.items() if torch.equal(tensor, initial[name])]
    assert unchanged == []


def test_continued_pretraining_from_a_local_hf_directory_and_a_model_artifact(reference):
    workspace, inputs, result = reference
    base_dir = _model_dir(workspace, result)
    scratch_first_loss = json.loads((base_dir / "training.json").read_text())["loss_curve"][0][1]

    continued = {"max_steps": 3, "eval_every": 100}
    from_path = pretrain(
        workspace, {"mixture": inputs["mixture"]}, base_path=str(base_dir), **continued
    )
    record = json.loads((_model_dir(workspace, from_path) / "training.json").read_text())
    # The folder by name: where it lay is in the run record, not the model.
    assert record["origin"] == {"from": "base_path", "base_path": base_dir.name}
    assert record["params"]["base_path"] == base_dir.name
    # It starts where the base left off, far below a fresh model's first loss.
    assert record["loss_curve"][0][1] < scratch_first_loss - 0.3
    assert AutoTokenizer.from_pretrained(_model_dir(workspace, from_path)).chat_template

    from_artifact = pretrain(
        workspace, {"mixture": inputs["mixture"], "base": result.outputs["model"]}, **continued
    )
    record = json.loads((_model_dir(workspace, from_artifact) / "training.json").read_text())
    assert record["origin"] == {"from": "base", "base": result.outputs["model"].sha256}
    # The same base, data and seed: the two routes give the same weights.
    assert (_model_dir(workspace, from_artifact) / "model.safetensors").read_bytes() == (
        _model_dir(workspace, from_path) / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    ("params", "inputs", "message"),
    [
        ({"size": "huge"}, {}, "unknown size; choose one of"),
        ({"micro_batch_size": 3}, {}, "multiple of micro_batch_size"),
        ({"seq_len": 4096}, {}, "exceeds the model's 1024 positions"),
        ({"model": {"hidden_sizes": 3}}, {}, "unknown model setting"),
        ({"learning_rate": 0}, {}, "learning_rate"),
        ({"epochs": 3}, {}, "epochs"),
        ({}, {"tokenizer": None}, "needs a tokenizer"),
        ({}, {"base": "model"}, "brings its own tokenizer"),
        ({"base_path": "/nonexistent/model"}, {"tokenizer": None}, "no such file"),
    ],
)
def test_bad_settings_are_input_errors(reference, params, inputs, message):
    workspace, data, result = reference
    given = {**data, **inputs}
    if given.get("base") == "model":
        given["base"] = result.outputs["model"]
    given = {key: value for key, value in given.items() if value is not None}
    with pytest.raises(InputError, match=message):
        pretrain(workspace, given, **params)


def test_time_budget_stops_at_a_step_boundary_and_says_so(reference):
    workspace, inputs, _ = reference
    result = pretrain(workspace, inputs, max_seconds=1e-6, max_steps=50)
    record = json.loads((_model_dir(workspace, result) / "training.json").read_text())
    assert record["steps"] == 1 and record["stopped_by"] == "max_seconds"
    assert [e["step"] for e in record["evals"]] == [0, 1]  # the end is always evaluated
