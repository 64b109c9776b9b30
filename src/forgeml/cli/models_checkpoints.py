"""`forgeml models checkpoints` and `forgeml models from-checkpoint`: the checkpoints a
fine-tuning run kept, and one of them made a model (train.from_checkpoint)."""

from __future__ import annotations

import typer

from forgeml.cli.output import emit, options, report_run, table
from forgeml.core.runs import run_stage


def list_checkpoints(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A fine-tuned model (name, name@alias, ref)."),
) -> None:
    """List the checkpoints the model's training run kept, with their losses."""
    from forgeml.train.from_checkpoint import checkpoint_metrics, run_checkpoints, source_run

    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(model, kind="model")
    run = source_run(workspace, artifact)
    rows = [
        {**checkpoint_metrics(path), "run": run.id}
        for _, path in sorted(run_checkpoints(workspace, run).items())
    ]
    emit(
        ctx,
        {
            "model": artifact.ref,
            "run": run.id,
            "final_step": run.metrics.get("steps"),
            "checkpoints": rows,
        },
        lambda: table(
            f"checkpoints kept by {run.id} ({artifact.ref}, {run.metrics.get('steps')} steps)",
            ["step", "train loss", "validation loss"],
            [
                [
                    str(row["step"]),
                    _number(row["train_loss"]),
                    _number(row["valid_loss"]),
                ]
                for row in rows
            ],
        ),
    )


def from_checkpoint(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A fine-tuned model (name, name@alias, ref)."),
    step: int = typer.Option(..., "--step", help="The checkpoint's step."),
    name: str | None = typer.Option(None, "--name", help="Name the new model."),
) -> None:
    """Make a model of one of the checkpoints its training run kept."""
    workspace = options(ctx).open()
    result = run_stage(
        workspace, "train.from_checkpoint", {"step": step, "name": name}, {"model": model}
    )
    report_run(ctx, result)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
