"""`forgeml train sft | preference | rl`: fine-tune a model on chat, preference or prompt data.

    forgeml train sft --model base --data chats --max-steps 200 --name support-v1
    forgeml train sft --model base --data chats --preview            # show the loss mask
    forgeml train sft --model base --data chats --lora               # an adapter artifact
    forgeml train sft --model base --data chats --lora --merge       # LoRA, merged model
    forgeml train preference --model support-v1 --data pairs --algorithm dpo
    forgeml train rl --model support-v1 --data prompts --reward exact_match \\
        --reward json_schema:schema.json --reward length:400@0.2

Each command runs a stage (`train.sft`, `train.preference`, `train.rl`, or their `_lora`
twins with `--lora`); options left out take the stage's defaults, shared with recipes
(`forgeml stages show train.sft`). Rerun a killed command to resume it.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from forgeml.cli.output import console, emit, options, report_run
from forgeml.train.distributed import run_stage_on_this_rank
from forgeml.train.finetune_params import (
    ClassifyParams,
    FinetuneParams,
    PreferenceParams,
    RLParams,
    SFTParams,
)
from forgeml.train.integrations import parse_report_to
from forgeml.train.rewards import parse_reward_option


def _help(field: str, params: type[FinetuneParams] = FinetuneParams) -> str:
    info = params.model_fields[field]
    default = info.get_default(call_default_factory=True)
    # None: the description says how the stage chooses it
    return info.description if default is None else f"{info.description} [default: {default}]"


# Options every fine-tuning command has (typer reads them from the defaults).
MODEL = typer.Option(..., "--model", help="Model to fine-tune: NAME, NAME:VERSION or a ref.")
DATA = typer.Option(..., "--data", help="Dataset to train on (ingested with data ingest).")
LORA = typer.Option(
    None,
    "--lora/--no-lora",
    help="Train a LoRA adapter; the output is an adapter. --no-lora: every weight (SFT's "
    "default is LoRA, merged, for a model of 1B+ parameters on at most 10,000 examples).",
)
MERGE = typer.Option(False, "--merge", help="With --lora: merge it, output a full model.")
MAX_STEPS = typer.Option(None, "--max-steps", help=_help("max_steps"))
EPOCHS = typer.Option(None, "--epochs", help=_help("epochs"))
BATCH_SIZE = typer.Option(None, "--batch-size", help=_help("batch_size"))
MICRO_BATCH_SIZE = typer.Option(None, "--micro-batch-size", help=_help("micro_batch_size"))
LEARNING_RATE = typer.Option(
    None, "--lr", help="Peak AdamW learning rate [default: chosen from the model's size]."
)
SEQ_LEN = typer.Option(None, "--seq-len", help=_help("seq_len"))
WARMUP = typer.Option(None, "--warmup-fraction", help=_help("warmup_fraction"))
LORA_RANK = typer.Option(None, "--lora-rank", help=_help("lora_rank"))
CHECKPOINT_EVERY = typer.Option(None, "--checkpoint-every", help=_help("checkpoint_every"))
EVAL_EVERY = typer.Option(None, "--eval-every", help=_help("eval_every"))
PATIENCE = typer.Option(None, "--early-stopping-patience", help=_help("early_stopping_patience"))
PRECISION = typer.Option(None, "--precision", help=_help("precision"))
NAME = typer.Option(None, "--name", help="Name the fine-tuned model or adapter.")
SEED = typer.Option(0, "--seed", help="Seed: LoRA initialisation, data order, sampling.")
REPORT_TO = typer.Option(
    [],
    "--report-to",
    metavar="TRACKER",
    help="Send the training metrics to wandb:PROJECT (offline) or mlflow[:EXPERIMENT] "
    "(a local store), under tracking/ in the workspace; repeatable.",
)
COLLAPSE_CHECK = typer.Option(
    True,
    "--collapse-check/--no-collapse-check",
    help="Fail the run when the trained model answers its own prompts with one repeated token.",
)


def _common(report_to: list[str], **given: Any) -> dict[str, Any]:
    """The options given on the command line as stage parameters (None: the default)."""
    if report_to:
        given["integrations"] = parse_report_to(report_to)
    return {key: value for key, value in given.items() if value is not None}


def _run(
    ctx: typer.Context,
    stage: str,
    params: dict[str, Any],
    inputs: dict[str, str | None],
    lora: bool | None,
    merge: bool,
    seed: int,
) -> Any:
    """`--lora` picks the adapter stage; `--lora --merge` the model stage with lora;
    `--no-lora` the model stage with every weight; neither, the stage's default."""
    if merge and not lora:
        raise typer.BadParameter("--merge applies to --lora", param_hint="--merge")
    if lora and not merge:
        stage += "_lora"
    elif lora is not None:
        params = {**params, "lora": lora}
    opts = options(ctx)
    workspace = opts.open(create=True)
    result = run_stage_on_this_rank(
        workspace,
        stage,
        params,
        {key: ref for key, ref in inputs.items() if ref},
        seed=seed,
        quiet=opts.json,
    )
    if result is None:  # a worker rank of `torchrun ... forgeml train sft`: rank 0 reports
        raise typer.Exit(0)
    report_run(ctx, result)
    return result


def _summary(metrics: dict[str, Any], *keys: str) -> str:
    parts = [f"{metrics.get('steps')} steps"]
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float):
            parts.append(f"{key.replace('_', ' ')} {value:.3f}")
    return ", ".join(parts)


def sft(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = DATA,
    validation: str | None = typer.Option(None, "--validation", help="Held-out chat dataset."),
    replay: str | None = typer.Option(
        None, "--replay", help="Mixture of general text to mix in (the base's pre-training)."
    ),
    replay_fraction: float | None = typer.Option(
        None, "--replay-fraction", help=_help("replay_fraction", SFTParams)
    ),
    lora: bool | None = LORA,
    merge: bool = MERGE,
    trainable: str | None = typer.Option(
        None, "--trainable", help=_help("trainable", SFTParams) + " (all, projector, vision)"
    ),
    max_steps: int | None = MAX_STEPS,
    # SFT chooses epochs and batch size from the data's size (the others default to 1, 8)
    epochs: float | None = typer.Option(None, "--epochs", help=_help("epochs", SFTParams)),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help=_help("batch_size", SFTParams)
    ),
    micro_batch_size: int | None = MICRO_BATCH_SIZE,
    learning_rate: float | None = LEARNING_RATE,
    seq_len: int | None = SEQ_LEN,
    warmup_fraction: float | None = WARMUP,
    lora_rank: int | None = LORA_RANK,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    eval_every: int | None = EVAL_EVERY,
    early_stopping_patience: int | None = PATIENCE,
    precision: str | None = PRECISION,
    name: str | None = NAME,
    seed: int = SEED,
    report_to: list[str] = REPORT_TO,
    collapse_check: bool = COLLAPSE_CHECK,
    preview: bool = typer.Option(
        False, "--preview", help="Show one example's trained (bold) and masked (dim) text."
    ),
    index: int = typer.Option(0, "--index", help="With --preview: which conversation."),
) -> None:
    """Supervised fine-tuning on chat data: the loss covers the assistant turns only."""
    params = _common(
        report_to,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        learning_rate=learning_rate,
        seq_len=seq_len,
        warmup_fraction=warmup_fraction,
        lora_rank=lora_rank,
        checkpoint_every=checkpoint_every,
        precision=precision,
        name=name,
        collapse_check=None if collapse_check else False,
        replay_fraction=replay_fraction,
        trainable=trainable,
        eval_every=eval_every,
        early_stopping_patience=early_stopping_patience,
    )
    if preview:
        _preview(ctx, model, data, index, params)
        return
    inputs = {"model": model, "dataset": data, "validation": validation, "replay": replay}
    result = _run(ctx, "train.sft", params, inputs, lora, merge, seed)
    if not options(ctx).json:
        console.print(_summary(result.metrics, "first_loss", "train_loss", "val_loss"))


def _preview(ctx: typer.Context, model: str, data: str, index: int, params: dict) -> None:
    from forgeml.train.sft import preview

    workspace = options(ctx).open()
    registry = workspace.registry
    model_dir = workspace.local_path(registry.resolve(model, kind="model", purpose="be fine-tuned"))
    data_dir = workspace.local_path(registry.resolve(data, kind="dataset", purpose="be trained on"))
    settings = {key: params[key] for key in ("seq_len",) if key in params}
    shown = preview(model_dir, data_dir, index, **settings)
    payload = {
        "segments": [{"text": s.text, "trained": s.trained} for s in shown.segments],
        "tokens": shown.tokens,
        "trained_tokens": shown.trained_tokens,
    }

    def render() -> None:
        text = Text()
        for segment in shown.segments:
            text.append(segment.text, style="bold green" if segment.trained else "dim")
        console.print(text)
        console.print(
            f"\n{shown.trained_tokens} of {shown.tokens} tokens trained "
            "(bold green: trained; dim: context only)"
        )

    emit(ctx, payload, render)


def preference(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = DATA,
    validation: str | None = typer.Option(None, "--validation", help="Held-out pairs."),
    algorithm: str | None = typer.Option(
        None, "--algorithm", help=_help("algorithm", PreferenceParams)
    ),
    beta: float | None = typer.Option(None, "--beta", help=_help("beta", PreferenceParams)),
    lora: bool | None = LORA,
    merge: bool = MERGE,
    max_steps: int | None = MAX_STEPS,
    epochs: float | None = EPOCHS,
    batch_size: int | None = BATCH_SIZE,
    micro_batch_size: int | None = MICRO_BATCH_SIZE,
    learning_rate: float | None = LEARNING_RATE,
    seq_len: int | None = SEQ_LEN,
    warmup_fraction: float | None = WARMUP,
    lora_rank: int | None = LORA_RANK,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    precision: str | None = PRECISION,
    name: str | None = NAME,
    seed: int = SEED,
    report_to: list[str] = REPORT_TO,
) -> None:
    """Preference tuning (DPO, ORPO or KTO) on chosen / rejected pairs."""
    params = _common(
        report_to,
        algorithm=algorithm,
        beta=beta,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        learning_rate=learning_rate,
        seq_len=seq_len,
        warmup_fraction=warmup_fraction,
        lora_rank=lora_rank,
        checkpoint_every=checkpoint_every,
        precision=precision,
        name=name,
    )
    result = _run(ctx, "train.preference", params, {"model": model, "dataset": data, "validation": validation}, lora, merge, seed)  # fmt: skip
    if not options(ctx).json:
        console.print(_summary(result.metrics, "train_loss", "reward_accuracy", "reward_margin"))


def rl(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = DATA,
    reward: list[str] = typer.Option(
        [],
        "--reward",
        help="Reward (repeatable): exact_match[:FIELD], regex:PATTERN, json_schema:FILE, "
        "tool_call, length:MAX_CHARS, module:function or a JSON grader; @WEIGHT to weigh it.",
    ),
    num_generations: int | None = typer.Option(
        None, "--num-generations", help=_help("num_generations", RLParams)
    ),
    max_completion_length: int | None = typer.Option(
        None, "--max-completion-length", help=_help("max_completion_length", RLParams)
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help=_help("temperature", RLParams)
    ),
    beta: float | None = typer.Option(None, "--beta", help=_help("beta", RLParams)),
    lora: bool | None = LORA,
    merge: bool = MERGE,
    max_steps: int | None = MAX_STEPS,
    epochs: float | None = EPOCHS,
    batch_size: int | None = typer.Option(None, "--batch-size", help=_help("batch_size", RLParams)),
    micro_batch_size: int | None = MICRO_BATCH_SIZE,
    learning_rate: float | None = LEARNING_RATE,
    seq_len: int | None = SEQ_LEN,
    warmup_fraction: float | None = WARMUP,
    lora_rank: int | None = LORA_RANK,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    precision: str | None = PRECISION,
    name: str | None = NAME,
    seed: int = SEED,
    report_to: list[str] = REPORT_TO,
) -> None:
    """Reinforcement learning (GRPO) on prompts, scored by reward functions."""
    params = _common(
        report_to,
        rewards=[parse_reward_option(text) for text in reward] or None,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=beta,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        learning_rate=learning_rate,
        seq_len=seq_len,
        warmup_fraction=warmup_fraction,
        lora_rank=lora_rank,
        checkpoint_every=checkpoint_every,
        precision=precision,
        name=name,
    )
    result = _run(ctx, "train.rl", params, {"model": model, "dataset": data}, lora, merge, seed)
    if not options(ctx).json:
        console.print(_summary(result.metrics, "first_reward", "final_reward"))


def classify(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = DATA,
    validation: str | None = typer.Option(
        None, "--validation", help="Held-out labelled dataset: accuracy, macro-F1, confusion."
    ),
    lora: bool = typer.Option(
        False, "--lora", help="Train a LoRA adapter and the head, merged into the output."
    ),
    max_steps: int | None = MAX_STEPS,
    epochs: float | None = typer.Option(None, "--epochs", help=_help("epochs", ClassifyParams)),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help=_help("batch_size", ClassifyParams)
    ),
    micro_batch_size: int | None = MICRO_BATCH_SIZE,
    learning_rate: float | None = LEARNING_RATE,
    seq_len: int | None = typer.Option(None, "--seq-len", help=_help("seq_len", ClassifyParams)),
    warmup_fraction: float | None = WARMUP,
    lora_rank: int | None = LORA_RANK,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    eval_every: int | None = EVAL_EVERY,
    early_stopping_patience: int | None = PATIENCE,
    precision: str | None = PRECISION,
    name: str | None = NAME,
    seed: int = SEED,
    report_to: list[str] = REPORT_TO,
) -> None:
    """Train a classifier: a head over the model, on Mistral's classifier format
    ({"text" or "messages", "labels": {"set": "label" or [labels]}})."""
    params = _common(
        report_to,
        lora=lora or None,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        learning_rate=learning_rate,
        seq_len=seq_len,
        warmup_fraction=warmup_fraction,
        lora_rank=lora_rank,
        checkpoint_every=checkpoint_every,
        eval_every=eval_every,
        early_stopping_patience=early_stopping_patience,
        precision=precision,
        name=name,
    )
    inputs = {"model": model, "dataset": data, "validation": validation}
    result = _run(ctx, "train.classify", params, inputs, False, False, seed)
    if not options(ctx).json:
        console.print(_summary(result.metrics, "first_loss", "train_loss", "val_accuracy", "val_macro_f1"))  # fmt: skip
