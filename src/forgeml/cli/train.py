"""`forgeml train`: pre-train (from scratch or continued) on a mixture.

    forgeml train pretrain --mixture docs-mix --tokenizer docs-tok --size tiny --max-steps 300
    forgeml train pretrain --mixture docs-mix --base-path ./hf-model --max-seconds 600
    torchrun --nproc_per_node 2 -m forgeml train pretrain --mixture docs-mix --tokenizer docs-tok

Options left out take the stage's defaults (`forgeml stages show train.pretrain`), so
the command line and recipes share one set of defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from forgeml.cli.output import console, options, report_run
from forgeml.core.errors import InputError
from forgeml.train.distributed import run_stage_on_this_rank
from forgeml.train.params import PretrainParams

app = typer.Typer(
    help="Pre-train models from scratch or continue pre-training a base model.",
    no_args_is_help=True,
)


def _help(field: str) -> str:
    info = PretrainParams.model_fields[field]
    default = info.get_default(call_default_factory=True)
    return f"{info.description} [default: {default}]"


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs, each value parsed as YAML (3 → int, true → bool, grouped_mm → str)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--model {item!r}: expected KEY=VALUE", field="model")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


@app.command("pretrain")
def pretrain(
    ctx: typer.Context,
    mixture: str = typer.Option(..., "--mixture", help="Mixture ref to train on."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer ref (training from scratch)."
    ),
    base: str | None = typer.Option(
        None, "--base", help="Model ref to continue pre-training (brings its tokenizer)."
    ),
    base_path: Path | None = typer.Option(None, "--base-path", help=_help("base_path")),
    size: str | None = typer.Option(None, "--size", help=_help("size")),
    model: list[str] = typer.Option(
        [], "--model", help="Model setting KEY=VALUE, e.g. num_hidden_layers=3 (repeatable)."
    ),
    seq_len: int | None = typer.Option(None, "--seq-len", help=_help("seq_len")),
    batch_size: int | None = typer.Option(None, "--batch-size", help=_help("batch_size")),
    micro_batch_size: int | None = typer.Option(
        None, "--micro-batch-size", help=_help("micro_batch_size")
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help=_help("max_steps")),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help=_help("max_seconds")),
    learning_rate: float | None = typer.Option(None, "--lr", help=_help("learning_rate")),
    schedule: str | None = typer.Option(None, "--schedule", help=_help("schedule")),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help=_help("warmup_steps")),
    eval_every: int | None = typer.Option(None, "--eval-every", help=_help("eval_every")),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help=_help("checkpoint_every")
    ),
    precision: str | None = typer.Option(None, "--precision", help=_help("precision")),
    distributed: str | None = typer.Option(None, "--distributed", help=_help("distributed")),
    name: str | None = typer.Option(None, "--name", help="Name the model."),
    seed: int = typer.Option(0, help="Seed: model initialisation and data order."),
) -> None:
    """Pre-train a model on a mixture; rerun the same command to resume a killed run."""
    opts = options(ctx)
    given = {
        "base_path": str(base_path) if base_path else None,
        "size": size,
        "model": parse_settings(model) or None,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "micro_batch_size": micro_batch_size,
        "max_steps": max_steps,
        "max_seconds": max_seconds,
        "learning_rate": learning_rate,
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "eval_every": eval_every,
        "checkpoint_every": checkpoint_every,
        "precision": precision,
        "distributed": distributed,
        "name": name,
    }
    params = {key: value for key, value in given.items() if value is not None}
    inputs = {"mixture": mixture, "tokenizer": tokenizer, "base": base}
    workspace = opts.open(create=True)
    result = run_stage_on_this_rank(
        workspace,
        "train.pretrain",
        params,
        {key: ref for key, ref in inputs.items() if ref},
        seed=seed,
        quiet=opts.json,
    )
    if result is None:  # a worker rank of a multi-process launch: rank 0 reports
        return
    report_run(ctx, result)
    if not opts.json:
        metrics = result.metrics
        bpb = metrics.get("val_bpb")
        console.print(
            f"{metrics.get('steps')} steps ({metrics.get('stopped_by')}), "
            f"{metrics.get('tokens_seen', 0):,} tokens, train loss {metrics.get('train_loss', 0):.3f}"
            + (f", validation {bpb:.3f} bits/byte" if bpb is not None else "")
        )
