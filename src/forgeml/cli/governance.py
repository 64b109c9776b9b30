"""`forgeml lineage`, `forgeml audit`, `forgeml reproduce`: trace, account, re-make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.tree import Tree

from forgeml.cli.output import console, emit, options, short_time, table
from forgeml.core.lineage import downstream, flatten, upstream
from forgeml.core.reproduce import reproduce as reproduce_artifact


def lineage(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., help="Artifact or model: KIND/SHA-PREFIX, NAME, NAME:N, NAME@ALIAS."
    ),
    down: bool = typer.Option(False, "--down", help="Show everything derived from REF instead."),
    files: int = typer.Option(
        8, "--files", help="Raw files shown per run (0: all); --json has all."
    ),
) -> None:
    """Show where an artifact came from, down to raw files and their hashes (or, with
    --down, every artifact and model derived from it: what a data-deletion request needs)."""
    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(ref)
    tree = downstream(workspace, artifact) if down else upstream(workspace, artifact)
    if down:
        affected = [n for n in flatten(tree, "used_by") if n["sha256"] != artifact.sha256]
        tree["affected"] = [
            {"ref": n["ref"], "kind": n["kind"], "names": n["names"]} for n in affected
        ]

    def render() -> None:
        view = Tree(_label(tree))
        if down:
            _render_down(view, tree)
        else:
            _render_up(view, tree, files)
        console.print(view)
        if down:
            console.print(f"{len(tree['affected'])} artifacts derived from {artifact.ref}")

    emit(ctx, tree, render)


def _label(node: dict[str, Any]) -> str:
    names = f" ({', '.join(node['names'])})" if node.get("names") else ""
    return f"[bold]{node['ref']}[/]{escape(names)} sha256:{node['sha256'][:16]}"


def _render_up(branch: Tree, node: dict[str, Any], files: int) -> None:
    run = node.get("run")
    if run is None:
        branch.add("[dim](no producing run: imported)[/]")
        return
    run_branch = branch.add(f"made by {run['id']} [cyan]{run['stage']}[/] seed={run['seed']}")
    sources = node.get("sources", [])
    shown = sources if files <= 0 else sources[:files]
    for source in shown:
        run_branch.add(f"file {escape(source['path'])} sha256:{source['sha256'][:16]}")
    if len(shown) < len(sources):
        run_branch.add(
            f"[dim]... and {len(sources) - len(shown)} more files (--files 0 shows all)[/]"
        )
    for child in node.get("inputs", []):
        _render_up(run_branch.add(f"{child['role']}: " + _label(child)), child, files)


def _render_down(branch: Tree, node: dict[str, Any]) -> None:
    for use in node.get("used_by", []):
        run = use["run"]
        run_branch = branch.add(f"read by {run['id']} [cyan]{run['stage']}[/]")
        for child in use["outputs"]:
            _render_down(run_branch.add(f"{child['role']}: " + _label(child)), child)


def audit(
    ctx: typer.Context,
    limit: int = typer.Option(100, help="Show the newest N entries."),
    action: str | None = typer.Option(
        None, help="Only actions starting with this (e.g. run., alias.)."
    ),
    target: str | None = typer.Option(None, help="Only entries whose target contains this."),
) -> None:
    """List the append-only audit log: who did what to what, and when."""
    workspace = options(ctx).open()
    entries = workspace.registry.audit_entries(limit, action, target)
    data = [
        {
            "id": e.id,
            "time": e.time.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "details": e.details,
        }
        for e in entries
    ]
    emit(
        ctx,
        data,
        lambda: table(
            None,
            ["time", "actor", "action", "target", "details"],
            [[short_time(e.time), e.actor, e.action, e.target, e.details or ""] for e in entries],
        ),
    )


def reproduce(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Artifact or model to re-make from its lineage."),
    scratch: Path | None = typer.Option(
        None, help="Scratch workspace directory (default: a temp dir)."
    ),
) -> None:
    """Re-execute REF's recorded lineage in a scratch workspace and check every hash."""
    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(ref, purpose="be reproduced")
    report = reproduce_artifact(workspace, artifact, scratch, quiet=True)
    data = report.to_dict()

    def render() -> None:
        table(
            f"reproduce {report.target} (scratch: {report.scratch})",
            ["step", "artifact", "recorded", "reproduced", "result"],
            [
                [
                    c.step,
                    c.ref,
                    c.recorded_sha256[:12],
                    (c.reproduced_sha256 or "-")[:12],
                    "[green]match[/]"
                    if c.ok
                    else "[red]"
                    + escape(
                        "; ".join(
                            (["hash differs"] if not c.hash_matches else []) + c.stored_problems
                        )
                    )
                    + "[/]",
                ]
                for c in report.checks
            ],
        )
        for name, diff in report.environment_differences.items():
            console.print(f"[yellow]note:[/] {name} was {diff['recorded']}, now {diff['now']}")
        console.print(
            "[green]reproduced: every hash matches[/]" if report.ok else "[red]NOT reproduced[/]"
        )

    emit(ctx, data, render)
    if not report.ok:
        raise typer.Exit(1)
