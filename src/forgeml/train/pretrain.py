"""`train.pretrain`: pre-train a model from scratch, or continue pre-training one.

    forgeml train pretrain --mixture docs --tokenizer docs-tok --size tiny --max-steps 300
    forgeml train pretrain --mixture docs --base-path ./my-hf-model --max-seconds 600
    torchrun --nproc_per_node 2 -m forgeml train pretrain --mixture docs --tokenizer docs-tok

From scratch: a named size (forgeml.models.sizes) with any `Mistral4Config` field
overridden, initialised from the run's seed, with the given tokenizer. A vision-language
size (`tiny-vl`) trains its text model on the text, then saves it with a fresh vision
tower drawn from the seed (as `forgeml models add-vision` would): a `mistral3` model,
ready for SFT on image chats. Continued
pre-training: a `model` artifact (`base` input) or any local Hugging Face causal-LM
directory (`base_path`, hashed into the run key like a source file); the tokenizer
comes with the base. Either way the output is a standard HF directory —
`config.json`, `model.safetensors`, tokenizer files with the chat template,
`generation_config.json` — plus `training.json` and `loss_curve.svg`.

Why a plain loop on `accelerate.Accelerator` rather than transformers' `Trainer`:
pre-training needs three things Trainer makes awkward. (1) Exact resume: Trainer
resumes the data by replaying and skipping the dataloader's batches and writes
checkpoints in place (not atomically); here the data position is one integer and a
checkpoint appears only complete. (2) A wall-clock budget and registry cancellation
at step boundaries, which would be callbacks poking at Trainer's control object.
(3) Packed, full-length sequences with a loss that is exactly the batch mean, which
is all this loop does; the loop is ~100 readable lines (loop.py). Accelerate still
gives device placement, bf16 autocast, DDP under `accelerate launch` or `torchrun`, and
checkpoints; `distributed: fsdp` shards the model with torch's `fully_shard` instead
(sharding.py: accelerate's FSDP is GPU-only). The fine-tuning stages, which need
TRL's data collation and losses, wrap TRL's trainers instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoTokenizer, Mistral4Config, Mistral4ForCausalLM
from transformers.utils import logging as hf_logging

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.data.dataset import SUMMARY_FILE, iter_texts
from forgeml.models.chat_template import CHAT_TEMPLATE, CONTROL_TOKENS
from forgeml.models.size_table import VISION_LANGUAGE_SIZES, VisionLanguageSize
from forgeml.models.sizes import build_config, build_model, count_parameters, load_model
from forgeml.models.vision import add_vision, save_processor_files, vision_record
from forgeml.train import loop, sharding
from forgeml.train.packing import (
    PackedBlocks,
    token_byte_lengths,
    tokenize_documents,
    validation_blocks,
)
from forgeml.train.params import DEFAULT_SIZE, PretrainParams
from forgeml.train.report import curve, write_loss_curve, write_training_record
from forgeml.train.runtime import adamw, deterministic, make_accelerator
from forgeml.train.schedule import lr_multiplier

RUNTIME_OPTIONS = {"experts_implementation", "attn_implementation"}


@stage(
    "train.pretrain",
    params=PretrainParams,
    inputs={"mixture": "mixture", "tokenizer": "tokenizer?", "base": "model?"},
    outputs={"model": "model"},
    sources=lambda p: [p.base_path] if p.base_path else [],
    every_rank=True,
)
def pretrain(ctx: StageContext, params: PretrainParams):
    """Pre-train from scratch, or continue pre-training a base model, on a mixture."""
    with deterministic(ctx.seed) as determinism:
        accelerator = make_accelerator(params.precision)
        world = accelerator.num_processes
        micro = params.micro_batch_size or max(1, params.batch_size // world)
        if params.batch_size % (micro * world):
            raise InputError(
                f"batch_size {params.batch_size} is not a multiple of micro_batch_size "
                f"{micro} x {world} processes",
                field="batch_size",
            )

        # Model and tokenizer.
        model, tokenizer, origin = _model_and_tokenizer(ctx, params)
        max_positions = getattr(model.config, "max_position_embeddings", None)
        if max_positions and params.seq_len > max_positions:
            raise InputError(
                f"seq_len {params.seq_len} exceeds the model's {max_positions} positions",
                field="seq_len",
            )

        # Data: the mixture's train split packed and shuffled, its validation split in order.
        mixture = ctx.input_path("mixture")
        train_blocks = PackedBlocks(
            tokenize_documents(tokenizer, iter_texts(mixture / "train")),
            params.seq_len,
            ctx.seed,
            eos_id=tokenizer.eos_token_id,  # documents repacked in a new order each epoch
        )
        if train_blocks.count == 0:
            raise InputError(
                f"the mixture's train split has {train_blocks.dropped_tokens} tokens, fewer "
                f"than one sequence of seq_len {params.seq_len}",
                field="seq_len",
                hint="lower seq_len or add documents",
            )
        validation = np.zeros(0, dtype=np.int32)
        if (mixture / "validation" / SUMMARY_FILE).is_file():
            validation = tokenize_documents(tokenizer, iter_texts(mixture / "validation"))
        byte_lengths, bpb_exact = token_byte_lengths(tokenizer)
        data = loop.TrainData(
            train_blocks,
            validation_blocks(validation, params.seq_len, params.eval_max_sequences),
            byte_lengths,
        )
        if not data.validation:
            ctx.warn("the mixture has no validation text: no validation loss is measured")

        # Sharding first (FSDP2): the optimizer must see the sharded parameters.
        fsdp = params.distributed == "fsdp" and world > 1
        if params.distributed == "fsdp" and world == 1:
            ctx.log("distributed: fsdp on one process: nothing to shard, trained as is")
        if fsdp:
            sharding.shard(model.to(accelerator.device), accelerator.mixed_precision)
        # What rank 0 holds at rest (after a forward the root's own stay gathered).
        local_parameters = sharding.local_parameters(model)

        # Optimizer and schedule.
        optimizer = adamw(model, params.learning_rate, params.weight_decay)
        multiplier = lr_multiplier(
            params.schedule,
            warmup_steps=params.warmup_steps,
            max_steps=params.max_steps,
            min_lr_ratio=params.min_lr_ratio,
            decay_fraction=params.decay_fraction,
        )
        scheduler = LambdaLR(optimizer, multiplier)
        if not fsdp:  # (accelerate would wrap a sharded model in DDP on a CPU)
            model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

        # Train.
        settings = loop.LoopSettings(
            batch_size=params.batch_size,
            micro_batch_size=micro,
            max_steps=params.max_steps,
            max_seconds=params.max_seconds,
            max_grad_norm=params.max_grad_norm,
            eval_every=params.eval_every,
            checkpoint_every=params.checkpoint_every,
            log_every=params.log_every,
        )
        resolved = params.content_dump(exclude={"name"})
        state = loop.train(
            ctx, accelerator, model, optimizer, scheduler, data, settings, {"params": resolved},
            fsdp=fsdp,
        )  # fmt: skip

        # Save: every rank takes part in gathering the weights, rank 0 writes.
        weights = sharding.full_weights(model) if fsdp else accelerator.get_state_dict(model)
        artifact = None
        if accelerator.is_main_process:
            record = {
                "stage": "train.pretrain",
                "params": resolved,
                "seed": ctx.seed,
                "origin": origin,
                "model": _model_summary(accelerator.unwrap_model(model)),
                "data": {
                    "mixture": ctx.inputs["mixture"].sha256,
                    "train_tokens": train_blocks.tokens,
                    "train_sequences": train_blocks.count,
                    "dropped_tokens": train_blocks.dropped_tokens,
                    "validation_tokens": int(sum(len(b) for b in data.validation)),
                    "bits_per_byte_exact": bpb_exact,
                },
                "batch": {
                    "sequences": params.batch_size,
                    "micro_batch_size": micro,
                    "processes": world,
                    "gradient_accumulation_steps": settings.accumulation(world),
                    "distributed": "fsdp" if fsdp else ("ddp" if world > 1 else "none"),
                    "parameters_per_process": local_parameters,
                    "tokens_per_step": params.batch_size * params.seq_len,
                },
                "determinism": {
                    **determinism,
                    "device": accelerator.device.type,
                    "mixed_precision": accelerator.mixed_precision,
                    "processes": world,
                    # Same weights need the same thread count too (summation order).
                    "torch_threads": state.torch_threads,
                },
            }
            model_to_save = accelerator.unwrap_model(model)
            vl = VISION_LANGUAGE_SIZES.get(params.size or "")
            if vl is not None:
                model_to_save, tokenizer = _with_vision(model_to_save, weights, tokenizer, vl, ctx)
                weights = None  # the new model's own
                record["model"] = _model_summary(model_to_save)
                record["vision"] = {"size": vl.vision, **vision_record(model_to_save.config)}
            artifact = _write_model(ctx, model_to_save, weights, tokenizer, state, record)
            ctx.name(artifact, params.name)
        accelerator.wait_for_everyone()
        return {"model": artifact} if artifact is not None else {}


def _with_vision(text_model, weights: dict, tokenizer, size: VisionLanguageSize, ctx):
    """The trained text model with a fresh `size.vision` tower in front (a `-vl` size).

    The text weights come from the gathered state dict, so this holds when the model was
    sharded across processes; the tower and projector are drawn from the run's seed."""
    with torch.device("meta"):
        text = Mistral4ForCausalLM(text_model.config)
    text.load_state_dict(weights, assign=True)
    return add_vision(text, tokenizer, size.vision, seed=ctx.seed)


def _write_model(ctx, model, weights, tokenizer, state: loop.TrainState, record: dict):
    """The HF directory plus training.json and loss_curve.svg, committed as a model."""
    record = {
        **record,
        "steps": state.step,
        "stopped_by": state.stopped_by,
        "tokens_seen": state.tokens_seen,
        "epochs": round(state.samples_seen / record["data"]["train_sequences"], 4),
        "final": _final(state),
        "evals": state.evals,
        "loss_curve": curve(state.losses),
    }
    writer = ctx.new_artifact("model")
    with _quiet_transformers():
        model.save_pretrained(writer.path, state_dict=weights)
    tokenizer.save_pretrained(writer.path)
    if "vision" in record:
        save_processor_files(writer.path, model.config)
    write_training_record(writer.path, record)
    write_loss_curve(
        writer.path / "loss_curve.svg",
        record["loss_curve"],
        [[e["step"], e["val_loss"]] for e in state.evals],
        f"train.pretrain: {state.step} steps, {state.tokens_seen:,} tokens",
    )
    writer.meta.update(
        steps=state.step, tokens_seen=state.tokens_seen, **record["model"], **record["final"]
    )
    artifact = ctx.commit(writer)
    # Timings and attempts vary from run to run: they go to the run, not the artifact.
    ctx.set_metrics(
        steps=state.step,
        stopped_by=state.stopped_by,
        tokens_seen=state.tokens_seen,
        seconds=round(state.seconds, 2),
        tokens_per_s=round(state.tokens_seen / max(state.seconds, 1e-9), 1),
        resumed_from_step=state.resumed_from,
        processes=state.world_size,
        **record["final"],
    )
    return artifact


def _model_and_tokenizer(ctx: StageContext, params: PretrainParams):
    """(model in fp32, tokenizer, where they came from) for scratch or continued training."""
    base = ctx.inputs.get("base")
    if base is not None and params.base_path is not None:
        raise InputError("give a base model artifact or base_path, not both", field="base_path")
    if base is not None and params.size is not None:
        raise InputError("size applies to a new model; a base model keeps its own", field="size")
    base_dir = ctx.artifact_path(base) if base is not None else params.base_path
    if base_dir is None:
        if "tokenizer" not in ctx.inputs:
            raise InputError(
                "training from scratch needs a tokenizer input (or a base model to continue)",
                hint="make one with `forgeml tokenizer train MIXTURE`",
            )
        tokenizer = _load_tokenizer(ctx.input_path("tokenizer"))
        size = params.size or DEFAULT_SIZE
        config = build_config(size, vocab_size=len(tokenizer), **params.model)
        origin = {"from": "scratch", "size": size, "tokenizer": ctx.inputs["tokenizer"].sha256}
        return build_model(config, seed=ctx.seed), tokenizer, origin

    if "tokenizer" in ctx.inputs:
        raise InputError(
            "a base model brings its own tokenizer; drop the tokenizer input",
            field="tokenizer",
        )
    unknown = sorted(set(params.model) - RUNTIME_OPTIONS)
    if unknown:
        raise InputError(
            f"a base model keeps its architecture; cannot override {', '.join(unknown)}",
            field="model",
            hint="only experts_implementation and attn_implementation apply to a base model",
        )
    tokenizer = _load_tokenizer(Path(base_dir))
    model = load_model(base_dir, dtype=torch.float32)
    if "attn_implementation" in params.model:
        model.set_attn_implementation(params.model["attn_implementation"])
    if "experts_implementation" in params.model:
        model.set_experts_implementation(params.model["experts_implementation"])
    if len(tokenizer) > model.config.get_text_config().vocab_size:
        raise InputError(
            f"the base tokenizer has {len(tokenizer)} tokens but the model only "
            f"{model.config.get_text_config().vocab_size} embeddings",
            path=base_dir,
        )
    if tokenizer.chat_template is None:
        missing = [t for t in CONTROL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            ctx.warn(
                "the base tokenizer has no chat template and lacks forgeml's control tokens; "
                "forgeml's template is attached but its control tokens will be split"
            )
        tokenizer.chat_template = CHAT_TEMPLATE
    origin = (
        {"from": "base", "base": base.sha256}
        if base is not None
        else {"from": "base_path", "base_path": params.base_path.name}  # the folder's name only
    )
    return model, tokenizer, origin


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Writing model shards" bar: our own progress bar is the only one."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_tokenizer(directory: Path):
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load a tokenizer: {error}", path=directory) from error


def _model_summary(model: torch.nn.Module) -> dict[str, Any]:
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    active = count_parameters(config)[1] if isinstance(config, Mistral4Config) else total
    return {
        "architecture": type(model).__name__.removeprefix("FSDP"),  # fully_shard's subclass
        "parameters": total,
        "active_parameters": active,
        "vocab_size": config.get_text_config().vocab_size,
    }


def _final(state: loop.TrainState) -> dict[str, float | None]:
    """Train loss over the last 10 steps (one step is noisy) and the last validation."""
    tail = state.losses[-10:]
    last = state.evals[-1] if state.evals else {}
    return {
        "train_loss": sum(tail) / len(tail) if tail else None,
        "val_loss": last.get("val_loss"),
        "val_bpb": last.get("val_bpb"),
    }
