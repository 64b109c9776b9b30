"""`train.classify`: a classifier (sequence-classification head) on labelled records.

    forgeml train classify --model base --data tickets-labelled --validation held-out

The input model's decoder is kept and a fresh linear `score` head is added over its
last real token (transformers' `Mistral4ForSequenceClassification`); every weight trains,
or with `lora: true` a LoRA adapter plus the head, merged into the output. The data is
Mistral's classifier format (see classify_data.py), one or several label sets, single-
or multi-label. The output is a `model` artifact whose config names its label sets, so
`forgeml classify`, `eval.classify` and the server's `/v1/classifications` know it.

Resume, cancellation, checkpoints and determinism are the fine-tuning stages' own
(finetune_common.py); the loss is HeadLayout.loss (cross-entropy per single-label set,
binary cross-entropy per multi-label one).
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.eval.classification import classifier_report
from forgeml.models.classifier import Classifier, HeadLayout, pad_right
from forgeml.models.classifier_config import decide
from forgeml.train.classify_data import (
    ClassifyRecord,
    check_labels_known,
    label_sets,
    load_classification,
)
from forgeml.train.distributed import is_rank_zero, launch_rank
from forgeml.train.finetune_common import (
    apply_lora,
    eval_values,
    fit,
    parameter_count,
    quiet_libraries,
    run_metrics,
    save_output,
    trainer_args,
)
from forgeml.train.finetune_params import ClassifyParams
from forgeml.train.runtime import deterministic
from forgeml.train.whole_batches import with_whole_batches

INPUTS = {"model": "model", "dataset": "dataset", "validation": "dataset?"}


@stage(
    "train.classify",
    params=ClassifyParams,
    inputs=INPUTS,
    outputs={"model": "model"},
    every_rank=True,
)
def classify(ctx: StageContext, params: ClassifyParams):
    """Train a classifier head (one or several label sets) on labelled text or chats."""
    from transformers import Trainer, TrainingArguments

    with deterministic(ctx.seed) as determinism, quiet_libraries():
        train_records = load_classification(ctx.input_path("dataset"))
        layout = HeadLayout(tuple(label_sets(train_records)))
        validation: list[ClassifyRecord] = []
        if "validation" in ctx.inputs:
            validation = load_classification(ctx.input_path("validation"))
            check_labels_known(validation, list(layout.sets), "validation")
        tokenizer, model = _base(ctx, layout)
        params = params.resolved(parameter_count(model))  # the learning rate, if unset
        if params.lora:
            model = apply_lora(model, params, ctx.seed, task_type="SEQ_CLS")
        train_rows = _rows(tokenizer, train_records, layout, params.seq_len)
        eval_rows = _rows(tokenizer, validation, layout, params.seq_len) if validation else None
        args = trainer_args(
            TrainingArguments,
            ctx,
            params,
            evaluate=eval_rows is not None,
            average_tokens_across_devices=False,  # batch_share_loss scales for the processes
        )
        trainer = with_whole_batches(Trainer)(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=tokenizer,
            data_collator=_Collator(tokenizer.pad_token_id),
            compute_loss_func=batch_share_loss(layout, params.batch_size),
        )
        history = fit(ctx, trainer, params)
        final_eval = trainer.evaluate() if eval_rows is not None else {}  # every rank
        if not is_rank_zero():  # under torchrun: rank 0 writes the output
            return None
        trained = trainer.model
        if hasattr(trained, "merge_and_unload"):
            trained = trained.merge_and_unload()
        report = _validate(trained, tokenizer, layout, validation, params.seq_len)
        record = {
            "stage": "train.classify",
            "params": params.content_dump(exclude={"name"}),
            "seed": ctx.seed,
            "label_sets": [s.to_dict() for s in layout.sets],
            "data": {
                "dataset": ctx.inputs["dataset"].sha256,
                "examples": len(train_records),
                "tokens": sum(len(row) for row in train_rows["input_ids"]),
                "validation": ctx.inputs["validation"].sha256 if validation else None,
            },
            "validation": report,
            "determinism": determinism,
            "processes": launch_rank()[1],
        }
        if final_eval:
            history.evals.append({"step": history.steps, **eval_values(final_eval)})
        artifact = save_output(
            ctx,
            trained,
            tokenizer,
            record,
            history,
            adapter=False,
            title=f"train.classify: {history.steps} steps",
            meta={"task": "classification", "label_sets": [s.name for s in layout.sets]},
        )
        scores = {f"val_{key}": value for key, value in (report or {}).get("metrics", {}).items()}
        ctx.set_metrics(**run_metrics(history, val_loss=final_eval.get("eval_loss")), **scores)
        ctx.name(artifact, params.name)
        return {"model": artifact}


def _base(ctx: StageContext, layout: HeadLayout) -> tuple[Any, Any]:
    """The input model's decoder under a fresh head sized for the label sets."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from forgeml.models.sizes import load_pretrained

    directory = ctx.input_path("model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the model's tokenizer: {error}", path=directory) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point
    try:
        model = load_pretrained(
            directory,
            AutoModelForSequenceClassification,
            "a classifier base",
            torch.float32,
            ignore_mismatched_sizes=True,  # a classifier retrained on other labels
            pad_token_id=tokenizer.pad_token_id,
            **layout.config(),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def batch_share_loss(layout: HeadLayout, batch_size: int) -> Any:
    """The trainer's loss for one micro batch: its mean loss weighted by its share of the
    global batch. transformers adds the micro batches' losses of a step without dividing
    (it takes a `compute_loss_func` to have normalised them already) and the processes'
    gradients are averaged, so this gives the mean over the micro batches of the whole
    step at any world size and accumulation: the same loss as one process taking the
    whole batch at once. A plain mean counted it once per process and per micro batch
    (two processes logged twice the loss, and clipped gradients twice as large)."""
    processes = launch_rank()[1]

    def loss(outputs: Any, labels: torch.Tensor, **_: Any) -> torch.Tensor:
        share = labels.shape[0] * processes / batch_size
        return layout.loss(outputs.logits, labels) * share

    return loss


def _rows(
    tokenizer: Any, records: list[ClassifyRecord], layout: HeadLayout, seq_len: int
) -> Dataset:
    texts = [record.input_text() for record in records]
    ids = tokenizer(texts)["input_ids"]
    return Dataset.from_list(
        [
            {"input_ids": row[:seq_len], "labels": layout.targets(record.labels)}
            for row, record in zip(ids, records, strict=True)
        ]
    )


class _Collator:
    """Right padding (the head reads the last real token) and float multi-hot targets."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_right([f["input_ids"] for f in features], self.pad_id)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
        return batch


def _validate(
    model: Any, tokenizer: Any, layout: HeadLayout, records: list[ClassifyRecord], seq_len: int
) -> dict[str, Any] | None:
    if not records:
        return None
    classifier = Classifier(model.eval(), tokenizer, layout, seq_len)
    scores = classifier.scores([record.input_text() for record in records])
    return classifier_report(records, [decide(s, layout) for s in scores], layout)
