"""`forgeml models`: named model versions, aliases, sizes, promotion and cards."""

from __future__ import annotations

import typer

from forgeml.cli import models_checkpoints, models_governance, models_vision
from forgeml.cli.output import console, emit, options, table

models_app = typer.Typer(
    help="Model versions and their aliases (prod, candidate, ...).", no_args_is_help=True
)


@models_app.command("list")
def list_versions(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only versions of this name."),
    kind: str | None = typer.Option(
        "model", help="Artifact kind; pass '' for every named artifact."
    ),
) -> None:
    """List named versions and the aliases pointing at them."""
    workspace = options(ctx).open()
    rows = workspace.registry.list_versions(name, kind or None)
    emit(
        ctx,
        rows,
        lambda: table(
            None,
            ["name", "version", "aliases", "artifact", "made by"],
            [
                [r["name"], r["version"], ", ".join(r["aliases"]), r["artifact"], r["run_id"] or ""]
                for r in rows
            ],
        ),
    )


@models_app.command("alias")
def set_alias(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model (or any named artifact) name."),
    version: int = typer.Argument(..., help="Version number to point the alias at."),
    alias: str = typer.Argument(..., help="Alias, e.g. candidate."),
    reason: str = typer.Option("", help="Why; recorded in the audit log."),
) -> None:
    """Point ALIAS of NAME at VERSION (recorded in the audit log)."""
    workspace = options(ctx).open()
    workspace.registry.set_alias(name, alias, version, reason)
    emit(
        ctx,
        {"name": name, "alias": alias, "version": version},
        lambda: console.print(f"{name}@{alias} -> {name}:{version}"),
    )


models_app.command("promote")(models_governance.promote)
models_app.command("rollback")(models_governance.rollback)
models_app.command("card")(models_governance.card)
models_app.command("checkpoints")(models_checkpoints.list_checkpoints)
models_app.command("from-checkpoint")(models_checkpoints.from_checkpoint)
models_app.command("add-vision")(models_vision.add_vision)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
