"""`forgeml models add-vision`: give a text model a fresh vision tower (train.add_vision)."""

from __future__ import annotations

import typer

from forgeml.cli.output import options, report_run


def add_vision(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A text model (name, name@alias, ref)."),
    vision: str = typer.Option(
        "tiny", "--vision", help="The vision tower's size: tiny, small or pixtral."
    ),
    name: str | None = typer.Option(None, "--name", help="Name the new model."),
    seed: int = typer.Option(0, "--seed", help="Seed of the new tower's weights."),
) -> None:
    """Make a vision-language model of a text model: its weights plus a new image encoder.

    Then fine-tune it on chats with images: first `--trainable projector`, then all.
    """
    from forgeml.core.runs import run_stage

    workspace = options(ctx).open()
    result = run_stage(
        workspace,
        "train.add_vision",
        {"vision": vision, "name": name},
        {"model": model},
        seed=seed,
        quiet=options(ctx).json,
    )
    report_run(ctx, result)
