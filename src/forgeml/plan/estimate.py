"""Estimate a recipe before running it: per step, tokens, FLOPs, peak memory, wall time.

    estimates = estimate_recipe(workspace, loaded, HARDWARE["cpu-2"])

Walks the steps in order, carrying what is known about each step's output (documents
and characters of a dataset, a tokenizer's vocabulary and characters per token, a
model's config) from the input files, the workspace's artifacts or the step's own
parameters. Training steps get FLOPs from `sizes.training_flops_per_token` (6 x active
parameters plus attention) and a time from the hardware's achieved FLOP/s for that
stage family (hardware.py). Steps that are not training (ingest, cleaning, evaluation,
export) take seconds to minutes on a corpus a training run can use, and are listed
without an estimate rather than with a made-up one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml.core.recipes import LoadedRecipe
from forgeml.core.stages import get_stage
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, count_parameters, training_flops_per_token
from forgeml.plan.hardware import Hardware
from forgeml.train.finetune_params import auto_batch_size, auto_epochs, auto_lora

DEFAULT_CHARS_PER_TOKEN = 4.0  # a byte-level BPE on English prose (the quickstart: 4.05)
TEMPLATE_TOKENS = 24  # control tokens and settings a chat example adds
FAMILY = {"train.pretrain": "pretrain", "train.sft": "sft", "train.preference": "preference"}
FAMILY["train.rl"] = "rl"
FAMILY["train.classify"] = "sft"  # a forward and backward pass per example, as SFT
FAMILY.update(
    {f"{stage}_lora": FAMILY[stage] for stage in ("train.sft", "train.preference", "train.rl")}
)
FINETUNE_STAGES = ("train.sft", "train.preference", "train.rl", "train.classify")
BYTES_FP32 = 4
# A rank-16 adapter over the attention and dense MLP linears is ~1% of the weights or less;
# with its gradients and Adam's two moments, ~4%: rounded up.
LORA_STATE_SHARE = 0.05


@dataclass
class Facts:
    """What is known about one step's output."""

    documents: int | None = None
    characters: int | None = None
    chars_per_token: float | None = None
    vocab_size: int | None = None
    config: Any = None  # a Mistral4Config for a model


@dataclass
class StepEstimate:
    step: str
    stage: str
    steps: int | None = None
    tokens: int | None = None
    flops: float | None = None
    memory_bytes: int | None = None
    seconds: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def estimate_recipe(
    workspace: Workspace, loaded: LoadedRecipe, hardware: Hardware
) -> list[StepEstimate]:
    facts: dict[str, Facts] = {}
    estimates = []
    for step in loaded.recipe.steps:
        params = _params(step.uses, step.with_)
        inputs = {
            name: _input_facts(workspace, facts, value) for name, value in step.inputs.items()
        }
        estimate = StepEstimate(step.name, step.uses)
        facts[step.name] = _outputs(step.uses, params, inputs, estimate)
        if step.uses in FAMILY and estimate.flops is not None:
            estimate.seconds = _seconds(hardware, step.uses, estimate, params)
        estimates.append(estimate)
    return estimates


def _seconds(hardware: Hardware, stage: str, out: StepEstimate, params: dict) -> float:
    """A fixed cost per step (per step and completion token for GRPO) + FLOPs / rate."""
    family = FAMILY[stage]
    fixed = hardware.step_seconds.get(family, 0.0) * out.steps
    if family == "rl":
        fixed *= params["max_completion_length"]
    return fixed + out.flops / hardware.flops[family]


def _params(stage_name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The step's parameters with the stage's defaults filled in (unvalidated: `run` checks)."""
    fields = get_stage(stage_name).params.model_fields
    defaults = {k: f.default for k, f in fields.items() if not f.is_required()}
    return {**defaults, **given}


def _input_facts(workspace: Workspace, facts: dict[str, Facts], value: Any) -> Facts:
    refs = value if isinstance(value, list) else [value]
    merged = Facts()
    for ref in refs:
        known = facts.get(ref.partition(".")[0]) or _artifact_facts(workspace, ref)
        merged = _merge(merged, known)
    return merged


def _merge(a: Facts, b: Facts) -> Facts:
    def add(x, y):
        return None if x is None and y is None else (x or 0) + (y or 0)

    return Facts(
        add(a.documents, b.documents),
        add(a.characters, b.characters),
        a.chars_per_token or b.chars_per_token,
        a.vocab_size or b.vocab_size,
        a.config or b.config,
    )


def _artifact_facts(workspace: Workspace, ref: str) -> Facts:
    """A workspace artifact: its recorded counts, or a model's config.json."""
    try:
        artifact = workspace.registry.resolve(ref)
    except Exception:  # not there yet (or a typo `run` reports): nothing known
        return Facts()
    meta = artifact.meta or {}
    config = None
    config_file = workspace.local_path(artifact) / "config.json"
    if artifact.kind == "model" and config_file.exists():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(config_file.parent)
    documents = meta.get("documents", meta.get("train_documents"))
    return Facts(
        documents,
        meta.get("characters"),
        meta.get("validation_chars_per_token"),
        meta.get("vocab_size"),
        config,
    )


def _file_facts(paths: list[str]) -> Facts:
    """Documents and characters of the files an ingest step reads (bytes for characters;
    one document per JSONL line, else per file)."""
    documents = characters = 0
    for raw in paths:
        path = Path(raw)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for file in files:
            if not file.exists():
                return Facts()
            characters += file.stat().st_size
            if file.suffix == ".jsonl":
                with file.open("rb") as handle:
                    documents += sum(1 for line in handle if line.strip())
            else:
                documents += 1
    return Facts(documents, characters)


def _outputs(stage: str, params: dict, inputs: dict[str, Facts], out: StepEstimate) -> Facts:
    dataset = inputs.get("dataset") or inputs.get("datasets") or inputs.get("mixture") or Facts()
    if stage == "data.ingest":
        return _file_facts(list(params.get("paths") or []))
    if stage in ("data.clean", "data.mix"):
        return _merge(Facts(), dataset)
    if stage == "tokenizer.train":
        return Facts(vocab_size=params.get("vocab_size"), chars_per_token=DEFAULT_CHARS_PER_TOKEN)
    if stage == "train.pretrain":
        tokenizer = inputs.get("tokenizer") or Facts()
        if not params.get("size") or not tokenizer.vocab_size:
            out.note = "needs a size and a tokenizer's vocabulary"
            return Facts()
        config = build_config(params["size"], vocab_size=tokenizer.vocab_size)
        steps, batch, seq_len = params["max_steps"], params["batch_size"], params["seq_len"]
        _training(out, config, steps, batch * seq_len, seq_len, batch, sequences=1)
        return Facts(config=config, chars_per_token=tokenizer.chars_per_token)
    if stage.removesuffix("_lora") in FINETUNE_STAGES:
        return _finetune(stage, params, inputs.get("model") or Facts(), dataset, out)
    out.note = "not training: not estimated"
    return Facts()


def _finetune(stage: str, params: dict, model: Facts, data: Facts, out: StepEstimate) -> Facts:
    if model.config is None:
        out.note = "its model is not known before it is made"
        return Facts()
    if not data.documents:
        out.note = "its data is not known before it is made"
        return Facts(config=model.config)
    per_token = data.chars_per_token or model.chars_per_token or DEFAULT_CHARS_PER_TOKEN
    seq_len = params["seq_len"]
    example = min(seq_len, TEMPLATE_TOKENS + (data.characters or 0) / data.documents / per_token)
    # SFT leaves epochs and batch size unset to choose them from the data's size, as here.
    batch = params["batch_size"] or auto_batch_size(data.documents)
    epochs = params.get("epochs") or auto_epochs(data.documents)
    steps = params.get("max_steps") or math.ceil(epochs * data.documents / batch)
    lora = params.get("lora")
    if lora is None:  # SFT chooses (auto_lora); the other stages train every weight
        lora = stage == "train.sft" and auto_lora(count_parameters(model.config)[0], data.documents)
    out.details["lora"] = bool(lora)
    stage = stage.removesuffix("_lora")
    if stage == "train.preference":
        # chosen and rejected, each through the policy (forward + backward) and the
        # frozen reference (forward: a third of a training pass)
        _training(out, model.config, steps, batch * example * 2 * 4 / 3, seq_len, batch, 2, lora)
    elif stage == "train.rl":
        generations = params["num_generations"]
        length = example + params["max_completion_length"]
        # generate (2 FLOPs/param/token, a third of training), then train on the groups
        _training(out, model.config, steps, batch * length * 4 / 3, seq_len, batch, 1, lora)
        out.details["generations_per_step"] = batch * generations
    else:
        _training(out, model.config, steps, batch * example, seq_len, batch, 1, lora)
    out.details["tokens_per_example"] = round(example, 1)
    return Facts(config=model.config, chars_per_token=per_token)


def _training(out: StepEstimate, config, steps: int, tokens_per_step: float, seq_len: int,
              batch: int, sequences: int, lora: bool = False) -> None:  # fmt: skip
    total, active = count_parameters(config)
    out.steps = steps
    out.tokens = int(steps * tokens_per_step)
    out.flops = out.tokens * training_flops_per_token(config, seq_len)
    # fp32 weights, gradients and Adam's two moments (LoRA: frozen weights, and the
    # adapter's four copies, a few % of them); activations ~ 34 bytes x hidden per token
    # per layer (Korthikanti et al. 2022, no recomputation), for the longest batch.
    states = total * BYTES_FP32 * ((1 + LORA_STATE_SHARE) if lora else 4)
    activations = 34 * config.hidden_size * config.num_hidden_layers * batch * sequences * seq_len
    out.memory_bytes = int(states + activations)
    out.details.update(parameters=total, active_parameters=active)


def estimate_job(workspace: Workspace, job: Any, hardware: Hardware) -> dict[str, Any] | None:
    """A fine-tuning job's training before it runs, in the fields of Mistral's job
    `metadata` (their VALIDATED jobs carry it); None when it cannot be estimated."""
    from forgeml.jobs.worker import STAGE_FOR_METHOD, file_paths, stage_params

    stage = STAGE_FOR_METHOD[job.method]
    params = _params(stage, stage_params(job, stage)[0])
    model = _artifact_facts(workspace, f"model/{job.spec['base_sha256']}")
    files = file_paths(workspace, [entry["file_id"] for entry in job.spec["training_files"]])
    out = StepEstimate(job.id, stage)
    _finetune(stage, params, model, _file_facts(files), out)
    if out.flops is None:
        return None
    return {
        "expected_duration_seconds": round(_seconds(hardware, stage, out, params)),
        "train_tokens": out.tokens,
        "train_tokens_per_step": round(out.tokens / out.steps),
        "training_steps": out.steps,
        "hardware": hardware.name,
        "cost": None,  # no price is set on a server
    }


def as_json(estimates: list[StepEstimate]) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(e.__dict__, default=str)) for e in estimates]
