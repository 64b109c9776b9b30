"""`forgeml models promote` and `forgeml models card`: gated promotion, model cards.

    forgeml models promote my-model:4 --alias prod
    forgeml models promote my-model:4 --alias prod --force --reason "hotfix, evals pending"
    forgeml models rollback my-model --alias prod --reason "answers got worse"
    forgeml models card my-model@prod -o MODEL_CARD.md

Attach to the `models` group: `models_app.command("promote")(promote)`, and so on.
"""

from __future__ import annotations

from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options, table
from forgeml.core.atomic import write_text_atomic
from forgeml.eval.card import model_card
from forgeml.eval.promote import promote as promote_model


def promote(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model version: NAME:N, NAME (newest) or model/SHA."),
    alias: str = typer.Option("prod", "--alias", help="Alias to move, e.g. prod or candidate."),
    force: bool = typer.Option(
        False, "--force", help="Promote even if gates fail (needs --reason)."
    ),
    reason: str = typer.Option("", "--reason", help="Why; recorded in the audit log."),
) -> None:
    """Point NAME@ALIAS at REF if its latest evaluation passes the gates.

    Gates come from forgeml.yaml (`gates:`) and the eval step's `gates`. A failed gate
    refuses the promotion (exit 2) and says which and by how much; --force --reason
    promotes anyway and the audit log records the override and the reason.
    """
    workspace = options(ctx).open()
    result = promote_model(workspace, ref, alias, force=force, reason=reason)

    def render() -> None:
        if result.gates:
            table(
                None,
                ["gate", "result", "detail"],
                [[g.gate, g.status, g.message] for g in result.gates],
            )
        else:
            console.print("no gates configured")
        verb = "forced" if result.forced else "promoted"
        before = (
            f" (was {result.name}:{result.previous_version})" if result.previous_version else ""
        )
        console.print(f"{verb}: {result.name}@{alias} -> {result.name}:{result.version}{before}")

    emit(ctx, result.to_dict(), render)


def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name (not a version: the alias says which)."),
    alias: str = typer.Option("prod", "--alias", help="Alias to move back."),
    reason: str = typer.Option("", "--reason", help="Why; recorded in the audit log."),
) -> None:
    """Move NAME@ALIAS back to the version it pointed at before its last move.

    No gate is checked (that version was promoted before); a version forgotten by a
    deletion request since is refused. A running server answers from it within seconds.
    """
    from forgeml.eval.rollback import rollback as rollback_alias

    result = rollback_alias(options(ctx).open(), name, alias, reason)
    emit(
        ctx,
        result.to_dict(),
        lambda: console.print(
            f"rolled back: {name}@{alias} -> {name}:{result.to_version} "
            f"(was {name}:{result.from_version})"
        ),
    )


def card(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model: NAME, NAME:N, NAME@ALIAS or model/SHA."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the card here."),
) -> None:
    """Write a model card (markdown) from the registry: data, training, evals, gates."""
    workspace = options(ctx).open()
    text = model_card(workspace, ref)
    if output is not None:
        write_text_atomic(output, text)
    data = {"ref": ref, "output": str(output) if output else None, "markdown": text}

    def render() -> None:
        if output is None:
            # Plain text, not rich: `forgeml models card X > card.md` must be the markdown.
            typer.echo(text, nl=False)
        else:
            console.print(f"wrote {output}")

    emit(ctx, data, render)
