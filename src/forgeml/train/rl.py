"""`train.rl` and `train.rl_lora`: GRPO on prompts, scored by reward functions.

    forgeml train rl --model support-v2 --data prompts --reward exact_match --max-steps 100
    forgeml train rl --model support-v2 --data prompts --reward json_schema:ticket.json \\
        --reward length:400@0.2 --reward my_rewards:polite --lora

Records are prompts (`{"messages": [... ending with a user turn], "tools"?, ...}` or
`{"prompt": ...}`); their other fields (`reference`, `answer`, ...) reach the rewards as
`sample.item` (data.ingest keeps a jsonl line's fields). For each prompt TRL's
`GRPOTrainer` samples `num_generations` completions with the model
itself (`use_vllm=False`: one process, CPU or GPU), scores them with the weighted sum of
`rewards` (forgeml.train.rewards) and moves the policy towards the better ones of each
group. The completions are decoded with their control tokens, so the rewards see tool
calls and reasoning as `parse_assistant_output` splits them.

With `beta` > 0 the policy is also pulled towards the input model: TRL loads that
reference from `config._name_or_path`, which is the input artifact's directory here
(with LoRA it switches the adapter off instead). Schema files and user reward modules
are hashed into the run key. Metric: the mean reward of every step (`reward`), which
should rise. Outputs: `model` (LoRA merged in) or `adapter`, as train.sft.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from datasets import Dataset

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
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
from forgeml.train.finetune_data import load_records, prompt_row
from forgeml.train.finetune_params import RLLoraParams, RLParams
from forgeml.train.report import curve
from forgeml.train.rewards import Sample, build_scorer, reward_names, source_files
from forgeml.train.runtime import deterministic

INPUTS = {"model": "model", "dataset": "dataset"}


@stage(
    "train.rl",
    params=RLParams,
    inputs=INPUTS,
    outputs={"model": "model"},
    sources=lambda p: source_files(p.rewards),
    every_rank=True,
)
def rl(ctx: StageContext, params: RLParams):
    """Reinforce a model with GRPO on prompts and reward functions; LoRA is merged in."""
    return {"model": _train(ctx, params, adapter=False)}


@stage(
    "train.rl_lora",
    params=RLLoraParams,
    inputs=INPUTS,
    outputs={"adapter": "adapter"},
    sources=lambda p: source_files(p.rewards),
    every_rank=True,
)
def rl_lora(ctx: StageContext, params: RLLoraParams):
    """Train a LoRA adapter with GRPO on prompts and reward functions."""
    return {"adapter": _train(ctx, params, adapter=True)}


def trl_rewards(specs: list[Any], tokenizer: Any) -> list[Callable[..., list[float]]]:
    """One TRL reward function per spec, named after it (TRL logs `rewards/<name>/mean`).

    TRL passes the dataset's other columns by name: `item` and `tools` (JSON text, see
    finetune_data.prompt_row). The text TRL decodes drops special tokens, so the
    completions are decoded again from their ids with the control tokens kept.
    """

    def make(name: str, scorer: Callable[[Sample], float]) -> Callable[..., list[float]]:
        def reward(completion_ids, item, tools, **_: Any) -> list[float]:
            texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=False)
            return [
                scorer(Sample.from_completion(text, json.loads(fields), json.loads(declared)))
                for text, fields, declared in zip(texts, item, tools, strict=True)
            ]

        reward.__name__ = name
        return reward

    return [
        make(name, build_scorer(spec))
        for name, spec in zip(reward_names(specs), specs, strict=True)
    ]


def _check_rewards(rewards: list[Callable[..., list[float]]], tokenizer: Any, row: dict) -> None:
    """Score an empty answer to the first prompt with every reward, so a missing item
    field or a broken function fails now rather than after the first generation."""
    empty = [tokenizer.convert_tokens_to_ids([tokenizer.eos_token])]
    for reward in rewards:
        reward(completion_ids=empty, item=[row["item"]], tools=[row["tools"]])


def _train(ctx: StageContext, params: RLParams, adapter: bool):
    from trl import GRPOConfig, GRPOTrainer

    with deterministic(ctx.seed) as determinism, quiet_libraries():
        records = load_records(ctx.input_path("dataset"), "prompt")
        model, tokenizer = load_base(ctx)
        params = params.resolved(parameter_count(model))  # the learning rate, if unset
        rows = [prompt_row(record, params.reasoning_effort) for record in records]
        kept = [row for row in rows if len(tokenizer(row["prompt"])["input_ids"]) <= params.seq_len]
        if not kept:
            raise InputError(
                f"every prompt is longer than seq_len {params.seq_len}", field="seq_len"
            )
        if len(kept) < len(rows):
            ctx.warn(f"{len(rows) - len(kept)} prompts longer than seq_len are left out")
        rewards = trl_rewards(params.rewards, tokenizer)
        _check_rewards(rewards, tokenizer, kept[0])
        if params.lora:
            model = apply_lora(model, params, ctx.seed)
        args = trainer_args(
            GRPOConfig,
            ctx,
            params,
            evaluate=False,
            num_generations=params.num_generations,
            max_completion_length=params.max_completion_length,
            temperature=params.temperature,
            beta=params.beta,
            use_vllm=False,
            reward_weights=[spec.weight for spec in params.rewards],
            log_completions=False,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=args,
            train_dataset=Dataset.from_list(kept),
            processing_class=tokenizer,
        )
        history = fit(ctx, trainer, params, watch_rise=False)
        if not is_rank_zero():  # under torchrun: rank 0 writes the output
            return None
        mean_rewards = [float(log["reward"]) for log in history.logs if "reward" in log]
        stage_name = "train.rl_lora" if adapter else "train.rl"
        record = {
            "stage": stage_name,
            "params": params.content_dump(exclude={"name"}),
            "seed": ctx.seed,
            "data": {"dataset": ctx.inputs["dataset"].sha256, "prompts": len(kept)},
            "rewards": reward_names(params.rewards),
            "reward_curve": curve(mean_rewards),
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
            title=f"{stage_name}: {history.steps} steps (GRPO loss)",
        )
        ctx.set_metrics(
            **run_metrics(history),
            first_reward=mean_rewards[0] if mean_rewards else None,
            final_reward=history.final("reward"),
        )
        ctx.name(artifact, params.name)
        return artifact
