"""`train.preference` and `train.preference_lora`: DPO, ORPO or KTO on preference pairs.

    forgeml train preference --model support-v1 --data pairs --algorithm dpo --name support-v2
    forgeml train preference --model support-v1 --data pairs --algorithm orpo --lora

Records are preference pairs: `{"prompt", "chosen", "rejected"}` (strings or messages)
or OpenAI's `{"input", "preferred_output", "non_preferred_output"}`, normalised by the
formats package, rendered by the one chat template (tools and reasoning included) and
handed to TRL as text (see finetune_data).

- `dpo` (TRL `DPOTrainer`): the reference is a frozen copy of the input model, loaded
  again from its artifact directory (TRL's own fallback re-reads `config._name_or_path`,
  which an in-memory model may not have); with LoRA the reference is the base with the
  adapter switched off, so no copy is held.
- `orpo` (TRL's experimental `ORPOTrainer`): no reference model; `beta` is ORPO's λ.
- `kto` (TRL `KTOTrainer`): each pair becomes a desirable and an undesirable example.

Held-out metrics, the same for every algorithm: DPO's implicit reward
`r = beta * (log π(y|x) - log π_ref(y|x))` of chosen and rejected answers on pairs not
trained on (the `validation` input, else `validation_fraction` of the pairs):
`reward_accuracy` (share with r_chosen > r_rejected) and `reward_margin` (the mean gap).
Outputs: `model` (LoRA merged in) or `adapter`, as train.sft.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset

from forgeml.core.context import StageContext
from forgeml.core.stages import stage
from forgeml.models.sizes import load_model
from forgeml.train.distributed import is_rank_zero, launch_rank
from forgeml.train.finetune_common import (
    apply_lora,
    fit,
    load_base,
    parameter_count,
    quiet_libraries,
    run_metrics,
    save_output,
    trainer_args,
)
from forgeml.train.finetune_data import load_records, preference_strings, split_held_out
from forgeml.train.finetune_params import PreferenceLoraParams, PreferenceParams
from forgeml.train.runtime import deterministic
from forgeml.train.whole_batches import with_whole_batches

INPUTS = {"model": "model", "dataset": "dataset", "validation": "dataset?"}


@stage(
    "train.preference",
    params=PreferenceParams,
    inputs=INPUTS,
    outputs={"model": "model"},
    every_rank=True,
)
def preference(ctx: StageContext, params: PreferenceParams):
    """Preference-tune a model (DPO, ORPO or KTO); LoRA is merged in."""
    return {"model": _train(ctx, params, adapter=False)}


@stage(
    "train.preference_lora",
    params=PreferenceLoraParams,
    inputs=INPUTS,
    outputs={"adapter": "adapter"},
    every_rank=True,
)
def preference_lora(ctx: StageContext, params: PreferenceLoraParams):
    """Train a LoRA adapter on preference pairs (DPO, ORPO or KTO)."""
    return {"adapter": _train(ctx, params, adapter=True)}


def _pairs(ctx: StageContext, params: PreferenceParams) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of rendered prompt / chosen / rejected text."""
    rows = [
        preference_strings(record, params.reasoning_effort)
        for record in load_records(ctx.input_path("dataset"), "preference")
    ]
    if "validation" in ctx.inputs:
        held_out = [
            preference_strings(record, params.reasoning_effort)
            for record in load_records(ctx.input_path("validation"), "preference")
        ]
        return rows, held_out
    return split_held_out(rows, params.validation_fraction, ctx.seed)


def _trainer(algorithm: str, ctx, params, model, reference, tokenizer, rows) -> Any:
    common = {"max_length": params.seq_len, "beta": params.beta}
    if algorithm == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        # ORPO's collator needs the raw columns; it sets this itself, with a warning.
        args = trainer_args(
            ORPOConfig, ctx, params, evaluate=False, remove_unused_columns=False, **common
        )
        return with_whole_batches(ORPOTrainer)(
            model=model, args=args, train_dataset=rows, processing_class=tokenizer
        )
    if algorithm == "kto":
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer
    else:
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer
    args = trainer_args(Config, ctx, params, evaluate=False, **common)
    return with_whole_batches(Trainer)(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
    )


def _train(ctx: StageContext, params: PreferenceParams, adapter: bool):
    with deterministic(ctx.seed) as determinism, quiet_libraries():
        train_rows, held_out = _pairs(ctx, params)
        if not held_out:
            ctx.warn("no held-out pairs: reward accuracy is not measured")
        model, tokenizer = load_base(ctx)
        params = params.resolved(parameter_count(model))  # the learning rate, if unset
        reference = None
        if params.lora:
            model = apply_lora(model, params, ctx.seed)
        elif params.algorithm != "orpo":
            reference = load_model(ctx.input_path("model"), dtype=torch.float32).eval()
        trainer = _trainer(
            params.algorithm,
            ctx,
            params,
            model,
            reference,
            tokenizer,
            Dataset.from_list(train_rows),
        )
        history = fit(ctx, trainer, params)
        if not is_rank_zero():  # under torchrun: rank 0 measures and writes the output
            return None
        held_out_metrics = {}
        if held_out:
            if reference is None and not params.lora:  # ORPO trains without one
                reference = load_model(ctx.input_path("model"), dtype=torch.float32)
            held_out_metrics = reward_metrics(
                trainer.model, reference, tokenizer, held_out, params.beta, params.seq_len
            )
        stage_name = "train.preference_lora" if adapter else "train.preference"
        record = {
            "stage": stage_name,
            "params": params.content_dump(exclude={"name"}),
            "seed": ctx.seed,
            "data": {
                "dataset": ctx.inputs["dataset"].sha256,
                "pairs": len(train_rows),
                "held_out_pairs": len(held_out),
                "validation": ctx.inputs["validation"].sha256
                if "validation" in ctx.inputs
                else None,
            },
            "held_out": held_out_metrics,
            "determinism": determinism,
            "processes": launch_rank()[1],
        }
        artifact = save_output(
            ctx,
            trainer.model,
            tokenizer,
            record,
            history,
            adapter=adapter,
            title=f"{stage_name} ({params.algorithm}): {history.steps} steps",
        )
        ctx.set_metrics(
            **run_metrics(history, algorithm=params.algorithm, **held_out_metrics),
            train_reward_accuracy=history.final("rewards/accuracies"),
        )
        ctx.name(artifact, params.name)
        return artifact


@torch.no_grad()
def completion_logp(model: Any, tokenizer: Any, prompt: str, answer: str, seq_len: int) -> float:
    """log π(answer | prompt): the summed log-probabilities of the answer's tokens."""
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"][:seq_len]
    device = next(model.parameters()).device
    tokens = torch.tensor([ids], device=device)
    logits = model(input_ids=tokens).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, tokens[0, 1:, None])[:, 0]
    return float(logps[start - 1 :].sum())


def reward_metrics(
    policy: Any, reference: Any, tokenizer: Any, rows: list[dict], beta: float, seq_len: int
) -> dict[str, float]:
    """Held-out reward accuracy and margin under DPO's implicit reward.

    `reference` None means a LoRA policy: the reference is the policy with its adapter
    switched off (the weights it started from).
    """
    was_training = policy.training
    policy.eval()
    if reference is not None:
        reference.to(next(policy.parameters()).device)

    def logps(model: Any) -> list[tuple[float, float]]:
        return [
            (
                completion_logp(model, tokenizer, row["prompt"], row["chosen"], seq_len),
                completion_logp(model, tokenizer, row["prompt"], row["rejected"], seq_len),
            )
            for row in rows
        ]

    ours = logps(policy)
    if reference is None:
        with policy.disable_adapter():
            theirs = logps(policy)
    else:
        theirs = logps(reference)
    policy.train(was_training)
    margins = [
        beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        for (chosen, rejected), (ref_chosen, ref_rejected) in zip(ours, theirs, strict=True)
    ]
    return {
        "reward_accuracy": sum(margin > 0 for margin in margins) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "held_out_pairs": len(margins),
    }
