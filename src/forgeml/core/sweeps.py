"""Sweeps: a recipe run over a grid of parameter values, the best cell named.

    forgeml run recipe.yaml --sweep sft.learning_rate=3e-4,1e-3 \\
        --sweep sft.max_steps=200,400 --select eval-final/eval-routing/json_match

Each cell of the grid is the recipe with `--set STEP.PARAM=VALUE` (or `--var NAME=VALUE`
for a target without a dot) for its values: a normal recipe run, so steps that do not
depend on the swept values are shared by every cell, a cell that already ran is reused,
and every model keeps its lineage. The selected metric is read from the named step's
run; the winner is the best cell (the first of equals, in grid order).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.recipes import PlannedStep, execute, load_recipe

MAX_VALUES = 64
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class SweepAxis:
    target: str  # STEP.PARAM, a recipe variable, or seed
    values: tuple[Any, ...]

    def override(self, value: Any) -> tuple[str, str]:
        """("set" | "var", "TARGET=VALUE") as `forgeml run` would take it."""
        text = f"{self.target}={yaml.safe_dump(value, default_flow_style=True).strip()}"
        text = text.removesuffix("\n...").removesuffix(" ...")
        return ("set" if "." in self.target or self.target == "seed" else "var"), text


@dataclass
class Cell:
    index: int
    values: dict[str, Any]
    status: str = "pending"  # ran | reused | failed | skipped
    metric: float | None = None
    seconds: float = 0.0
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.index,
            "values": self.values,
            "status": self.status,
            "metric": self.metric,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "outputs": self.outputs,
        }


@dataclass
class SweepResult:
    select: str
    minimize: bool
    cells: list[Cell]

    @property
    def winner(self) -> Cell | None:
        scored = [cell for cell in self.cells if cell.metric is not None]
        if not scored:
            return None
        best = min if self.minimize else max
        return best(scored, key=lambda cell: cell.metric)  # first of equals wins

    def as_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "select": self.select,
            "goal": "minimize" if self.minimize else "maximize",
            "cells": [cell.as_dict() for cell in self.cells],
            "winner": winner.as_dict() if winner else None,
        }


def parse_axis(item: str) -> SweepAxis:
    target, separator, listed = item.partition("=")
    if not separator or not target or not listed.strip():
        raise InputError(
            f"--sweep {item!r}: expected TARGET=V1,V2,...",
            hint="e.g. --sweep sft.learning_rate=3e-4,1e-3 (STEP.PARAM) or --sweep "
            "sft_steps=200,400 (a recipe variable)",
        )
    values = tuple(_value(text) for text in listed.split(","))
    if len(values) > MAX_VALUES:
        raise InputError(f"--sweep {target}: {len(values)} values; at most {MAX_VALUES}")
    if len(set(map(repr, values))) != len(values):
        raise InputError(f"--sweep {target}: a value is listed twice")
    return SweepAxis(target, values)


def _value(text: str) -> Any:
    """A value as YAML reads it, except that 3e-4 is a number (YAML 1.1 wants 3.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


def parse_duration(text: str) -> float:
    """'90m', '2h', '3600' (seconds) → seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group("number")) <= 0:
        raise InputError(f"--time-budget {text!r}: expected a duration such as 90m, 2h or 3600s")
    return float(match.group("number")) * _UNIT_SECONDS[match.group("unit") or "s"]


def grid(axes: list[SweepAxis]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest."""
    targets = [axis.target for axis in axes]
    if len(set(targets)) != len(targets):
        raise InputError("the same target is swept twice; list its values in one --sweep")
    return [
        dict(zip(targets, combo, strict=True))
        for combo in itertools.product(*(a.values for a in axes))
    ]


def _metric(steps: list[PlannedStep], select: str) -> float:
    step_name, _, metric = select.partition("/")
    step = next(s for s in steps if s.name == step_name)
    metrics = step.result.metrics if step.result else {}
    value = metrics.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        known = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, int | float)))
        raise InputError(
            f"step {step_name!r} has no numeric metric {metric!r}",
            hint=f"its metrics: {known or 'none'}",
        )
    return float(value)


def run_sweep(
    open_workspace: Callable[[], Any],
    recipe: Path,
    axes: list[SweepAxis],
    select: str,
    *,
    overrides: list[str] | None = None,
    variables: dict[str, Any] | None = None,
    minimize: bool = False,
    max_runs: int = 16,
    time_budget: float | None = None,
    quiet: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
) -> SweepResult:
    """Run every cell (after checking all of them load), stopping new cells once the
    time budget is spent. A cell that fails is reported and the others go on."""
    cells_values = grid(axes)
    if len(cells_values) > max_runs:
        raise InputError(
            f"the sweep has {len(cells_values)} cells, more than --max-runs {max_runs}",
            hint="drop some values or raise --max-runs",
        )
    step_name, slash, metric = select.partition("/")
    loaded_cells = []
    by_target = {axis.target: axis for axis in axes}
    for values in cells_values:
        sets, given = list(overrides or []), dict(variables or {})
        for target, value in values.items():
            kind, text = by_target[target].override(value)
            if kind == "set":
                sets.append(text)
            else:
                given[target] = yaml.safe_load(text.partition("=")[2])
        loaded = load_recipe(recipe, sets, given)
        undeclared = [
            t
            for t in values
            if "." not in t and t != "seed" and t not in (loaded.recipe.vars or {})
        ]
        if undeclared:
            raise InputError(
                f"--sweep {undeclared[0]}: the recipe has no step parameter or variable by that name",
                path=recipe,
                hint="sweep STEP.PARAM, or a name from the recipe's `vars:`",
            )
        loaded_cells.append(loaded)
    if not slash or not metric or step_name not in {s.name for s in loaded_cells[0].recipe.steps}:
        raise InputError(
            f"--select {select!r}: expected STEP/METRIC with a step of the recipe",
            path=recipe,
            hint="e.g. --select eval-final/eval-routing/json_match",
        )
    result = SweepResult(select, minimize, [Cell(i + 1, v) for i, v in enumerate(cells_values)])
    workspace = open_workspace()
    started = time.monotonic()
    for cell, loaded in zip(result.cells, loaded_cells, strict=True):
        spent = time.monotonic() - started
        if time_budget is not None and cell.index > 1 and spent > time_budget:
            cell.status, cell.error = "skipped", "time budget spent"
        else:
            _run_cell(workspace, loaded, cell, select, quiet, started=time.monotonic())
        if on_cell:
            on_cell(cell)
    return result


def _run_cell(workspace, loaded, cell: Cell, select: str, quiet: bool, started: float) -> None:
    try:
        steps = execute(workspace, loaded, quiet=quiet)
        cell.metric = _metric(steps, select)
        cell.status = "reused" if all(step.action == "reuse" for step in steps) else "ran"
        cell.outputs = {s.name: a.ref for s in steps for a in list(s.outputs.values())[:1]}
    except ForgeError as exc:
        cell.status, cell.error = "failed", str(exc)
    cell.seconds = time.monotonic() - started
