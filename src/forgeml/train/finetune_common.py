"""What the fine-tuning stages share: the base model, the trainers' arguments, LoRA,
resumable training with registry metrics, and the output artifact.

    with deterministic(ctx.seed), quiet_libraries():
        model, tokenizer = load_base(ctx)
        model = apply_lora(model, params, ctx.seed) if params.lora else model
        trainer = DPOTrainer(model=model, args=trainer_args(DPOConfig, ctx, params), ...)
        history = fit(ctx, trainer, params)
        artifact = save_output(ctx, trainer.model, tokenizer, params, record, history, adapter)

The stages wrap transformers' and TRL's trainers rather than pre-training's own loop:
they need TRL's losses (DPO, ORPO, KTO, GRPO); SFT's loss is the plain `Trainer`'s. Resume is transformers': every
`checkpoint_every` steps a `checkpoint-N/` in `ctx.checkpoint_dir` (weights or adapter,
optimizer, scheduler, RNG states, trainer state with the log history), and a rerun of
the same run key continues from the newest complete one.

Outputs: a `model` is a Hugging Face directory as pre-training writes it (config,
safetensors, tokenizer with the chat template, `training.json`, `loss_curve.svg`); LoRA
trained in a `model` stage is merged into it. An `adapter` is a PEFT directory
(`adapter_config.json`, `adapter_model.safetensors`) with the tokenizer, the same two
records and `forgeml_adapter.json` naming its base model; the base stays the run's
`model` input, so lineage (and `export`) find it without copying its weights.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError, RunCancelled
from forgeml.core.schema import Artifact
from forgeml.models.chat_template import CHAT_TEMPLATE, SPECIAL_TOKENS
from forgeml.models.sizes import load_model
from forgeml.models.vision import is_vision_language, save_processor_files
from forgeml.train import integration_callbacks
from forgeml.train.checkpoint_files import CHECKPOINT_PREFIX, checkpoints, remove_incomplete
from forgeml.train.distributed import launch_rank, rank_zero_says
from forgeml.train.finetune_params import MISTRAL4_LORA_TARGETS, FinetuneParams
from forgeml.train.guards import DivergenceGuard
from forgeml.train.report import curve, write_loss_curve, write_training_record
from forgeml.train.vision_training import load_checkpoints_through_from_pretrained
from forgeml.train.whole_batches import LaunchRecord, launch_change

ADAPTER_RECORD = "forgeml_adapter.json"
ADAPTER_FORMAT = "forgeml.adapter/1"
KEEP_CHECKPOINTS = 2


# --- the base model ----------------------------------------------------------------------


def load_base(ctx: StageContext) -> tuple[torch.nn.Module, Any]:
    """The `model` input in fp32 (bf16 autocast happens in the trainer) and its tokenizer,
    which must hold forgeml's chat control tokens as single ids."""
    directory = ctx.input_path("model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the model's tokenizer: {error}", path=directory) from error
    missing = [
        token
        for token in SPECIAL_TOKENS[1:]
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id)
    ]
    if missing:
        raise InputError(
            f"the model's tokenizer lacks the chat control tokens {', '.join(missing)}",
            path=directory,
            hint="fine-tune a model pre-trained with a forgeml tokenizer",
        )
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return load_model(directory, dtype=torch.float32), tokenizer


def parameter_count(model: torch.nn.Module) -> int:
    """Every weight of the model (an MoE's experts included): what picks the learning rate."""
    return sum(parameter.numel() for parameter in model.parameters())


def apply_lora(
    model: torch.nn.Module, params: FinetuneParams, seed: int, task_type: str = "CAUSAL_LM"
) -> torch.nn.Module:
    """Wrap the model in a LoRA adapter; only the adapter's weights will train.

    The adapter's A matrices start random: they are drawn from `seed` on a forked
    generator, so the same seed gives the same adapter and the caller's RNG is untouched.
    """
    from peft import LoraConfig, get_peft_model

    targets = params.lora_target_modules or (
        list(MISTRAL4_LORA_TARGETS) if model.config.model_type == "mistral4" else "all-linear"
    )
    config = LoraConfig(
        r=params.lora_rank,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=targets,
        task_type=task_type,  # SEQ_CLS also trains (and saves) the fresh `score` head
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # PEFT 0.21 asks transformers 5.23 the deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as error:
            raise InputError(f"cannot apply LoRA: {error}", field="lora_target_modules") from error


# --- TRL's arguments ---------------------------------------------------------------------


def trainer_args(
    config_class: type, ctx: StageContext, params: FinetuneParams, evaluate: bool, **extra: Any
) -> Any:
    """TRL's config for one stage: our batch, schedule, precision, seed and checkpoints.

    Why not `full_determinism=True`: it switches torch's deterministic mode on for the
    whole process without `warn_only` (an op lacking a deterministic kernel then fails)
    and never off, and sets CUDA_LAUNCH_BLOCKING. The stages run inside
    `runtime.deterministic` instead; on CPU that gives identical weights for a seed.
    TRL turns activation checkpointing on by default; it only slows small models, so
    it is off (the new name, `activation_checkpointing`, avoids a deprecation warning).
    """
    cuda = torch.cuda.is_available()
    bf16 = params.precision == "bf16" or (
        params.precision == "auto" and cuda and torch.cuda.is_bf16_supported()
    )
    world = launch_rank()[1]
    micro = params.micro_batch_size or max(1, params.batch_size // world)
    if params.batch_size % (micro * world):
        raise InputError(
            f"batch_size {params.batch_size} is not a multiple of micro_batch_size {micro} x "
            f"{world} processes",
            field="batch_size",
        )
    if params.early_stopping_patience is not None:
        if not evaluate or not params.eval_every:
            raise InputError(
                "early stopping needs a validation dataset and eval_every",
                field="early_stopping_patience",
                hint="give --validation (inputs: {validation: ...}) and eval_every",
            )
        # transformers compares validation losses when it saves: a checkpoint at every
        # validation, so the best one is among them (older ones rotate out, not the best).
        save_every = params.eval_every
        extra = {
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "save_steps": save_every,
            **extra,
        }
    return config_class(
        output_dir=str(ctx.checkpoint_dir),
        use_cpu=not cuda,
        bf16=bf16,
        fp16=False,
        report_to=[],
        num_train_epochs=params.epochs,
        max_steps=params.max_steps or -1,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=params.batch_size // (micro * world),
        learning_rate=params.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=params.warmup_fraction,  # a float below 1 is a share of the steps
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        logging_steps=1,  # every step's loss goes into the curve; the registry gets fewer
        save_strategy="steps",
        **({} if "save_steps" in extra else {"save_steps": params.checkpoint_every}),
        save_total_limit=KEEP_CHECKPOINTS,
        eval_strategy="steps" if evaluate and params.eval_every else "no",
        eval_steps=params.eval_every if evaluate else None,
        seed=ctx.seed,
        data_seed=ctx.seed,
        dataloader_num_workers=0,
        activation_checkpointing=False,
        disable_tqdm=True,  # our own progress bar (StageCallback), quiet under tests and jobs
        **extra,
    )


# --- training ----------------------------------------------------------------------------


class StageCallback(TrainerCallback):
    """Registry metrics every `log_every` steps, a progress bar, and cancellation: a
    cancelled run checkpoints at the step boundary and stops, so its rerun loses nothing."""

    def __init__(self, ctx: StageContext, log_every: int) -> None:
        self.ctx = ctx
        self.log_every = log_every
        self.cancelled = False
        self.progress: Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.ctx.quiet and sys.stderr.isatty():
            self.progress = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.progress.add_task("train", total=state.max_steps)
            self.progress.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {
            key: float(value)
            for key, value in (logs or {}).items()
            if isinstance(value, int | float) and math.isfinite(value)
        }
        evaluation = any(key.startswith("eval_") for key in numbers)
        if evaluation or state.global_step % self.log_every == 0 or "train_loss" in numbers:
            self.ctx.metric(state.global_step, **numbers)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
        if rank_zero_says(self.ctx.cancelled()):  # workers' contexts never poll
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()


@dataclass
class History:
    """What training did, from the trainer's log history (restored on resume, so a
    resumed run's history equals a straight run's)."""

    steps: int
    losses: list[float]
    evals: list[dict[str, float]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)  # every step's full log
    resumed_from: int | None = None
    seconds: float = 0.0
    best_step: int | None = None  # early stopping: the checkpoint whose weights are output

    def final(self, key: str = "loss", last: int = 10) -> float | None:
        """Mean of `key` over the last `last` logged steps (one step is noisy)."""
        values = [log[key] for log in self.logs if key in log][-last:]
        return sum(values) / len(values) if values else None


def eval_values(logs: dict[str, Any]) -> dict[str, float]:
    """An evaluation's metrics without its timings, which must not reach training.json."""
    return {
        key: value
        for key, value in logs.items()
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    }


def fit(
    ctx: StageContext, trainer: Any, params: FinetuneParams, watch_rise: bool = True
) -> History:
    """Train from the newest complete checkpoint of this run (or from the start).

    Training stops at a loss that is not a number, or (`watch_rise`) one far above where
    it started (guards.py), and the run fails saying so. GRPO's loss is a policy-gradient
    surrogate that may sit anywhere around zero, so RL watches for NaN only."""
    callback = StageCallback(ctx, params.log_every)
    guard = DivergenceGuard(watch_rise)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(callback)
    trainer.add_callback(guard)
    trainer.add_callback(LaunchRecord())
    for reporter in integration_callbacks.callbacks(ctx, params):
        trainer.add_callback(reporter)
    if params.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(params.early_stopping_patience))
    remove_incomplete(ctx.checkpoint_dir)
    load_checkpoints_through_from_pretrained(trainer)
    resume = checkpoints(ctx.checkpoint_dir)[-1:] or [None]
    resumed_from = None
    if resume[0] is not None:
        resumed_from = int(resume[0].name.removeprefix(CHECKPOINT_PREFIX))
        ctx.log(f"resuming from step {resumed_from} ({resume[0].name})", step=resumed_from)
        if change := launch_change(resume[0]):
            ctx.warn(change)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume[0]) if resume[0] else None)
    seconds = time.monotonic() - started
    if callback.cancelled:
        raise RunCancelled(f"run {ctx.run_id} was cancelled at step {trainer.state.global_step}")
    guard.check(params.learning_rate)
    logs = [log for log in trainer.state.log_history if "loss" in log and "step" in log]
    evals = [
        {"step": log["step"], **eval_values(log)}
        for log in trainer.state.log_history
        if any(key.startswith("eval_") for key in log)
    ]
    best = trainer.state.best_model_checkpoint
    return History(
        best_step=int(best.rsplit("-", 1)[-1]) if best else None,
        steps=trainer.state.global_step,
        losses=[float(log["loss"]) for log in logs],
        evals=evals,
        logs=logs,
        resumed_from=resumed_from,
        seconds=seconds,
    )


# --- outputs -----------------------------------------------------------------------------


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """No "Writing model shards" or "Tokenizing dataset" bars from transformers and
    datasets (the stage's own progress bar is the only one), nor the libraries'
    deprecation warnings about each other."""
    import datasets

    bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            # TRL 1.16 asks transformers 5.23 the deprecated `is_gradient_checkpointing`.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
            yield
    finally:
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()


def save_output(
    ctx: StageContext,
    model: torch.nn.Module,
    tokenizer: Any,
    record: dict[str, Any],
    history: History,
    *,
    adapter: bool,
    title: str,
    meta: dict[str, Any] | None = None,
) -> Artifact:
    """Commit the trained model (LoRA merged in) or, with `adapter`, the adapter alone.

    `record` (stage, params, seed, data) becomes `training.json` with the steps and the
    loss curve: a pure function of the training, so the same seed gives the same bytes.
    """
    from peft import PeftModel

    base: Artifact = ctx.inputs["model"]
    writer = ctx.new_artifact("adapter" if adapter else "model")
    if isinstance(model, PeftModel) and not adapter:
        model = model.merge_and_unload()
    model.save_pretrained(writer.path)
    tokenizer.save_pretrained(writer.path)
    if is_vision_language(model.config):
        save_processor_files(writer.path, model.config)
    if adapter:
        _tidy_adapter(writer.path, base)
        write_json_atomic(
            writer.path / ADAPTER_RECORD,
            {
                "format": ADAPTER_FORMAT,
                "base_model": {"ref": base.ref, "sha256": base.sha256},
                "peft_type": "LORA",
                "stage": record["stage"],
            },
        )
    record = {
        **record,
        "base_model": base.sha256,
        "steps": history.steps,
        "best_step": history.best_step,
        "evals": history.evals,
        "loss_curve": curve(history.losses),
    }
    write_training_record(writer.path, record)
    write_loss_curve(
        writer.path / "loss_curve.svg",
        record["loss_curve"],
        [[e["step"], e["eval_loss"]] for e in history.evals if "eval_loss" in e],
        title,
    )
    writer.meta.update(steps=history.steps, base_model=base.sha256, train_loss=history.final())
    writer.meta.update(meta or {})
    return ctx.commit(writer)


def _tidy_adapter(directory: Path, base: Artifact) -> None:
    """Make the PEFT files reproducible: PEFT records the base as a local path (here a
    workspace path, which differs between machines) and writes `target_modules` from a
    set, in an order that changes from process to process; its README repeats the path."""
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base.ref
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    write_json_atomic(config_path, config)
    (directory / "README.md").unlink(missing_ok=True)


def run_metrics(history: History, **extra: Any) -> dict[str, Any]:
    """The run's summary metrics (timings included: they belong to the run, not the model)."""
    computed = max(history.steps - (history.resumed_from or 0), 1)
    return {
        "steps": history.steps,
        "seconds": round(history.seconds, 2),
        "seconds_per_step": round(history.seconds / computed, 3),
        "resumed_from_step": history.resumed_from,
        "best_step": history.best_step,
        "train_loss": history.final(),
        "first_loss": history.losses[0] if history.losses else None,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }
