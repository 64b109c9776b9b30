"""`train.sft` and `train.sft_lora`: supervised fine-tuning on chat data.

    forgeml train sft --model base --data support-chats --max-steps 200 --name support-v1
    forgeml train sft --model base --data support-chats --lora          # an adapter
    forgeml train sft --model base --data support-chats --preview       # what is trained

Chat records (system, user, assistant and tool turns, tool calls, reasoning traces;
OpenAI/Mistral fine-tuning JSONL as ingested by `data.ingest`) are rendered by the one
chat template and tokenized by `tokenize_for_training`: the loss covers the assistant
turns only (their reasoning, answer, tool calls and closing `</s>`), never the system
prompt, user turns, tool results or turns marked `weight: 0`. One code path decides
the mask (TRL's own `assistant_only_loss` reads the same spans from the template's
generation blocks; the tests hold the two in agreement).

The pre-tokenized `input_ids`/`labels` go to transformers' `Trainer`, not TRL's
`SFTTrainer`: with the data already tokenized and masked, TRL adds only its fused
LM-head loss, which on CPU made each step 6-7x slower for our models (measured: 1.9 s
vs 0.29 s per step, tiny model, batch 16 of 120-240 tokens). The loss is the same
token-mean cross-entropy over the trained tokens.

`train.sft` outputs a `model`: every weight trained, or with `lora: true` a LoRA
adapter merged into the base, so the job worker's `supervised` jobs and every serving
engine get a plain checkpoint. `train.sft_lora` outputs the `adapter` alone.
Inputs: `model`, `dataset` (chat) and an optional `validation` dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.models.image_inputs import ImageShape
from forgeml.models.vision import is_vision_language, text_view
from forgeml.train.distributed import is_rank_zero, launch_rank
from forgeml.train.finetune_common import (
    apply_lora,
    eval_values,
    fit,
    load_base,
    parameter_count,
    quiet_libraries,
    run_metrics,
    save_output,
    trainer_args,
)
from forgeml.train.finetune_data import Preview, load_records, preview_example, sft_example
from forgeml.train.finetune_params import SFTLoraParams, SFTParams
from forgeml.train.guards import check_not_collapsed
from forgeml.train.runtime import deterministic
from forgeml.train.vision_data import VisionCollator
from forgeml.train.vision_training import check_trainable, freeze_for
from forgeml.train.whole_batches import with_whole_batches

INPUTS = {"model": "model", "dataset": "dataset", "validation": "dataset?", "replay": "mixture?"}


@stage("train.sft", params=SFTParams, inputs=INPUTS, outputs={"model": "model"}, every_rank=True)
def sft(ctx: StageContext, params: SFTParams):
    """Fine-tune a model on chat data (loss on assistant turns); LoRA is merged in."""
    return {"model": _train(ctx, params, adapter=False)}


@stage(
    "train.sft_lora",
    params=SFTLoraParams,
    inputs=INPUTS,
    outputs={"adapter": "adapter"},
    every_rank=True,
)
def sft_lora(ctx: StageContext, params: SFTLoraParams):
    """Train a LoRA adapter on chat data (loss on assistant turns)."""
    return {"adapter": _train(ctx, params, adapter=True)}


def tokenized(
    tokenizer: Any, records: list[dict], params: SFTParams, image_shape: ImageShape | None = None
) -> Dataset:
    """Pre-tokenized rows; examples left with no trained token (an assistant turn past
    `seq_len`, or only `weight: 0` turns) are dropped: they would add nothing but noise
    to the loss normalisation. A vision-language model's rows also carry their images."""
    rows = []
    for record in records:
        example = sft_example(
            tokenizer, record, params.reasoning_effort, params.seq_len, image_shape
        )
        if any(label != -100 for label in example.labels):
            row = {"input_ids": example.input_ids, "labels": example.labels}
            if image_shape is not None:
                row["images"] = example.images
            rows.append(row)
    return Dataset.from_list(rows)


def _train(ctx: StageContext, params: SFTParams, adapter: bool):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    with deterministic(ctx.seed) as determinism, quiet_libraries():
        train_records = load_records(ctx.input_path("dataset"), "chat")
        validation = (
            load_records(ctx.input_path("validation"), "chat") if "validation" in ctx.inputs else []
        )
        model, tokenizer = load_base(ctx)
        check_trainable(model, params.trainable)
        image_shape = ImageShape.of(model.config) if is_vision_language(model.config) else None
        parameters = parameter_count(model)
        train_rows = tokenized(tokenizer, train_records, params, image_shape)
        if len(train_rows) == 0:
            raise InputError(
                f"no conversation has an assistant token to train on within seq_len "
                f"{params.seq_len}",
                field="seq_len",
            )
        if len(train_rows) < len(train_records):
            ctx.warn(f"{len(train_records) - len(train_rows)} conversations have nothing to train")
        eval_rows = tokenized(tokenizer, validation, params, image_shape) if validation else None
        conversations = len(train_rows)
        # epochs, batch size and LoRA, then the learning rate (LoRA's is higher), if unset
        params = params.sized(conversations, parameters).resolved(parameters)
        replay = _replay(ctx, params, tokenizer, train_rows)
        if replay is not None:
            train_rows = Dataset.from_list([*train_rows.to_list(), *replay[0]])
        if params.lora:
            model = apply_lora(model, params, ctx.seed)
        trained_parts = freeze_for(model, params.trainable)
        # The rows are already tokenized and cut; no packing: one conversation's tokens
        # would attend to another's on CPU attention, which has no varlen kernel.
        args = trainer_args(
            TrainingArguments,
            ctx,
            params,
            evaluate=eval_rows is not None,
            # the images column reaches the collator, which turns it into pixels
            **({"remove_unused_columns": False} if image_shape is not None else {}),
        )
        trainer = with_whole_batches(Trainer)(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=tokenizer,
            data_collator=VisionCollator(tokenizer, image_shape)
            if image_shape is not None
            else DataCollatorForSeq2Seq(
                tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt"
            ),
        )
        history = fit(ctx, trainer, params)
        final_eval = trainer.evaluate() if eval_rows is not None else {}  # every rank
        if not is_rank_zero():  # under torchrun: rank 0 checks and writes the output
            return None
        collapse = (
            check_not_collapsed(
                text_view(trainer.model),
                tokenizer,
                text_prompts(training_prompts(train_records)),
                params.learning_rate,
            )
            if params.collapse_check
            else {"checked": 0}
        )
        trained_tokens = sum(sum(label != -100 for label in row) for row in train_rows["labels"])
        record = {
            "stage": "train.sft_lora" if adapter else "train.sft",
            "params": params.content_dump(exclude={"name"}),
            "seed": ctx.seed,
            "data": {
                "dataset": ctx.inputs["dataset"].sha256,
                "conversations": conversations,
                "tokens": sum(len(row) for row in train_rows["input_ids"]),
                "trained_tokens": trained_tokens,
                **(
                    {"images": sum(len(images) for images in train_rows["images"])}
                    if image_shape is not None
                    else {}
                ),
                "validation": ctx.inputs["validation"].sha256 if eval_rows is not None else None,
            },
            "determinism": determinism,
            "processes": launch_rank()[1],
            "trained_parts": trained_parts,
            "collapse_check": collapse,
            "replay": replay[1] if replay else None,
        }
        if final_eval:
            history.evals.append({"step": history.steps, **eval_values(final_eval)})
        artifact = save_output(
            ctx,
            trainer.model,
            tokenizer,
            record,
            history,
            adapter=adapter,
            title=f"{record['stage']}: {history.steps} steps",
        )
        ctx.set_metrics(**run_metrics(history, val_loss=final_eval.get("eval_loss")))
        ctx.name(artifact, params.name)
        return artifact


def _replay(ctx: StageContext, params: SFTParams, tokenizer: Any, rows: Dataset):
    """Replay rows and their record, or None (see replay.py)."""
    if "replay" not in ctx.inputs:
        if params.replay_fraction:
            raise InputError(
                "replay_fraction needs a replay mixture (inputs: {replay: MIXTURE})",
                field="replay_fraction",
            )
        return None
    if not params.replay_fraction:
        ctx.warn("a replay mixture was given with replay_fraction 0: it is not used")
        return None
    from forgeml.train.replay import replay_rows

    labels = rows["labels"]
    trained = sum(sum(label != -100 for label in row) for row in labels)
    rows_, record = replay_rows(
        tokenizer,
        ctx.input_path("replay"),
        params.replay_fraction,
        trained,
        [len(row) for row in rows["input_ids"]],
        ctx.seed,
    )
    record["mixture"] = ctx.inputs["replay"].sha256
    return rows_, record


def text_prompts(prompts: list[tuple[list[dict], str]]) -> list[tuple[list[dict], str]]:
    """The prompts without images (the collapse check generates from text alone)."""
    return [
        (messages, answer)
        for messages, answer in prompts
        if not any(isinstance(m.get("content"), list) for m in messages)
    ]


def training_prompts(records: list[dict]) -> list[tuple[list[dict], str]]:
    """Each conversation up to its last assistant turn, and that turn's text."""
    prompts = []
    for record in records:
        messages = record["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if last > 0:
            shown = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last]]
            prompts.append((shown, messages[last].get("content") or ""))
    return prompts


def preview(model_dir: Path, dataset_dir: Path, index: int = 0, **settings: Any) -> Preview:
    """One example as training sees it: runs of masked and trained text. No training."""
    from transformers import AutoTokenizer

    params = SFTParams(**settings)
    records = load_records(dataset_dir, "chat")
    if not 0 <= index < len(records):
        raise InputError(f"the dataset has {len(records)} conversations", field="index")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    example = sft_example(tokenizer, records[index], params.reasoning_effort, params.seq_len)
    return preview_example(tokenizer, example)
