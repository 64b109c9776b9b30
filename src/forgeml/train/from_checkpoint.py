"""`train.from_checkpoint`: a kept training checkpoint as a model of its own.

    forgeml models checkpoints support-bot              # the steps its run kept
    forgeml models from-checkpoint support-bot --step 150 --name support-bot-150

A fine-tuning run keeps its last checkpoints (finetune_common.KEEP_CHECKPOINTS) in its
scratch folder for resume. This stage takes the run's output model and one of those
steps and makes a registry model of it, so an earlier, less over-fitted point of the
run can be evaluated, served and promoted by name like any model (OpenAI's job
checkpoints). A full fine-tune's checkpoint holds the weights: they are copied next to
the output's tokenizer and config. A LoRA run's checkpoint holds the adapter: it is
merged into the run's base, as the run merged its final adapter.

The model's lineage is the run's output (and through it, the data); `checkpoint.json`
records the source run, the step and the losses logged up to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.schema import Artifact, LineageEdge, Run
from forgeml.core.stages import StageParams, stage
from forgeml.core.workspace import Workspace
from forgeml.export.hf import TOKENIZER_FILES
from forgeml.train.checkpoint_files import CHECKPOINT_PREFIX, TRAINER_STATE, checkpoints

FINE_TUNING_STAGES = ("train.sft", "train.preference", "train.rl", "train.classify")
RECORD = "checkpoint.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
MODEL_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES)


class FromCheckpointParams(StageParams):
    step: int = Field(ge=1, description="The checkpoint's step (see `forgeml models checkpoints`).")
    name: str | None = Field(default=None, description="Name the model.")


def source_run(workspace: Workspace, model: Artifact) -> Run:
    """The fine-tuning run that produced the model, or an InputError saying why not."""
    with workspace.registry.reading() as session:
        run = session.get(Run, model.run_id) if model.run_id else None
        if run is None or run.stage not in FINE_TUNING_STAGES:
            made_by = run.stage if run else "no recorded run"
            raise InputError(
                f"{model.ref} was made by {made_by}, not by a fine-tuning stage "
                f"({', '.join(FINE_TUNING_STAGES)})",
                hint="Checkpoints are kept by train sft, preference, rl and classify.",
            )
        session.expunge(run)
        return run


def run_checkpoints(workspace: Workspace, run: Run) -> dict[int, Path]:
    """The run's complete checkpoints by step."""
    folder = workspace.run_dir(run.id) / "checkpoints"
    return {
        int(path.name.removeprefix(CHECKPOINT_PREFIX)): path
        for path in (checkpoints(folder) if folder.is_dir() else [])
    }


def checkpoint_metrics(path: Path) -> dict[str, Any]:
    """Step, last training loss and last validation loss logged up to the checkpoint."""
    state = json.loads((path / TRAINER_STATE).read_text())
    history = state.get("log_history") or []
    train = [log["loss"] for log in history if "loss" in log]
    valid = [log["eval_loss"] for log in history if "eval_loss" in log]
    return {
        "step": state.get("global_step"),
        "train_loss": train[-1] if train else None,
        "valid_loss": valid[-1] if valid else None,
    }


def _base_of(workspace: Workspace, run: Run) -> Path:
    """The folder of the run's `model` input (the base a LoRA checkpoint adapts)."""
    with workspace.registry.reading() as session:
        base = (
            session.query(Artifact)
            .join(LineageEdge, LineageEdge.artifact_id == Artifact.id)
            .filter(LineageEdge.run_id == run.id, LineageEdge.direction == "input")
            .filter(LineageEdge.role == "model")
            .one()
        )
        session.expunge(base)
    workspace.registry.ensure_usable(base, "be the base of a checkpoint")
    return workspace.local_path(base)


@stage(
    "train.from_checkpoint",
    params=FromCheckpointParams,
    inputs={"model": "model"},
    outputs={"model": "model"},
)
def from_checkpoint(ctx: StageContext, params: FromCheckpointParams):
    """Make a model of a fine-tuning run's kept checkpoint (earlier than its output)."""
    model: Artifact = ctx.inputs["model"]
    run = source_run(ctx.workspace, model)
    kept = run_checkpoints(ctx.workspace, run)
    if params.step not in kept:
        raise InputError(
            f"run {run.id} (which made {model.ref}) kept no checkpoint at step {params.step}",
            hint=f"its kept steps: {', '.join(map(str, sorted(kept))) or 'none'} (a run keeps "
            "its last few; `forgeml models checkpoints` lists them)",
        )
    checkpoint, output = kept[params.step], ctx.input_path("model")
    writer = ctx.new_artifact("model")
    if (checkpoint / "adapter_config.json").is_file():
        from forgeml.export.merge import merge_adapter

        if run.stage == "train.classify":
            raise InputError("a LoRA classifier's checkpoints cannot be made into models yet")
        merge_adapter(_base_of(ctx.workspace, run), checkpoint, writer.path)
        weights = "LoRA adapter merged into the run's base"
    elif (checkpoint / WEIGHT_FILES[0]).is_file() or (checkpoint / WEIGHT_FILES[1]).is_file():
        for name in WEIGHT_FILES:
            if (checkpoint / name).is_file():
                shutil.copyfile(checkpoint / name, writer.path / name)
        for shard in checkpoint.glob("model-*.safetensors"):
            shutil.copyfile(shard, writer.path / shard.name)
        weights = "full weights"
    else:
        raise InputError(f"checkpoint {checkpoint.name} of run {run.id} holds no weights")
    # Config, tokenizer and chat template as the run's output has them.
    for name in MODEL_FILES:
        if (output / name).is_file():
            shutil.copyfile(output / name, writer.path / name)
    metrics = checkpoint_metrics(checkpoint)
    write_json_atomic(
        writer.path / RECORD,
        {
            "source_run": run.id,
            "source_model": model.sha256,
            "stage": run.stage,
            "weights": weights,
            **metrics,
        },
    )
    writer.meta.update(steps=params.step, source_run=run.id, train_loss=metrics["train_loss"])
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    ctx.set_metrics(**{k: v for k, v in metrics.items() if v is not None})
    return {"model": artifact}
