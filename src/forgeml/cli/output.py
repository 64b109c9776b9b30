"""How commands report: rich tables for people, JSON (`--json`) for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from forgeml.core.workspace import Workspace, default_workspace_path

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Options:
    workspace: Path
    json: bool = False
    debug: bool = False

    def open(self, create: bool = False) -> Workspace:
        return Workspace.open(self.workspace, create=create)


def options(ctx: typer.Context) -> Options:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = Options(default_workspace_path())
    return root.obj


def emit(ctx: typer.Context, data: Any, render: Callable[[], None] | None = None) -> None:
    """Print `data` as JSON with --json, else call `render` (or pretty-print data)."""
    if options(ctx).json or render is None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    view = Table(title=title, title_justify="left", show_lines=False)
    for index, column in enumerate(columns):
        # The first column names the row: narrow terminals wrap the others, never it.
        view.add_column(column, no_wrap=index == 0, min_width=len(column) if index == 0 else None)
    for row in rows:
        view.add_row(*["" if cell is None else str(cell) for cell in row])
    console.print(view)


def short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def report_run(ctx: typer.Context, result: Any, extra: dict[str, Any] | None = None) -> None:
    """Print what a stage run produced: its artifact refs, whether it was reused, metrics."""
    data = {
        "run_id": result.run_id,
        "stage": result.stage,
        "reused": result.reused,
        "outputs": {role: artifact.ref for role, artifact in result.outputs.items()},
        "metrics": result.metrics,
        **(extra or {}),
    }

    def render() -> None:
        how = "reused" if result.reused else "made"
        for role, artifact in result.outputs.items():
            console.print(f"{how} {role} [bold]{artifact.ref}[/] (run {result.run_id})")

    emit(ctx, data, render)
