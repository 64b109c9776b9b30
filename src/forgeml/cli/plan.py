"""`forgeml plan RECIPE`: tokens, FLOPs, peak memory, wall time and cost per step."""

from __future__ import annotations

from pathlib import Path

import typer

from forgeml.cli.output import emit, options, table
from forgeml.core.errors import InputError
from forgeml.core.recipes import load_recipe, parse_variables
from forgeml.plan.hardware import HARDWARE


def plan_recipe(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    hardware: str = typer.Option("cpu-2", "--hardware", help=f"One of: {', '.join(HARDWARE)}."),
    price_per_hour: float | None = typer.Option(
        None, "--price-per-hour", min=0, help="What an hour of that hardware costs you."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a parameter: STEP.PARAM=VALUE (repeatable)."
    ),
    variables: list[str] = typer.Option(
        [], "--var", help="Set a recipe variable `${NAME}`: NAME=VALUE (repeatable)."
    ),
) -> None:
    """Estimate a recipe's training steps before running it: tokens, FLOPs, peak memory,
    wall time and cost on the chosen hardware. Nothing runs."""
    if hardware not in HARDWARE:
        raise InputError(
            f"unknown hardware {hardware!r}",
            field="--hardware",
            hint=f"use one of: {', '.join(HARDWARE)}",
        )
    from forgeml.plan.estimate import as_json, estimate_recipe  # torch: not at CLI start-up

    chosen = HARDWARE[hardware]
    loaded = load_recipe(recipe, overrides, parse_variables(variables))
    workspace = options(ctx).open(create=True)
    estimates = estimate_recipe(workspace, loaded, chosen)
    seconds = sum(e.seconds or 0 for e in estimates)
    cost = None if price_per_hour is None else round(seconds / 3600 * price_per_hour, 2)
    memory = max((e.memory_bytes or 0 for e in estimates), default=0)
    device_memory = chosen.memory_gb_per_device * 2**30
    fits = memory <= device_memory * chosen.devices
    data = {
        "recipe": loaded.recipe.name,
        "hardware": {
            "name": chosen.name,
            "description": chosen.description,
            "measured": chosen.measured,
        },
        "steps": as_json(estimates),
        "training_seconds": round(seconds, 1),
        "cost": cost,
        "peak_memory_bytes": memory,
        "fits_in_memory": fits,
    }

    def show() -> None:
        trained = [e for e in estimates if e.flops is not None]
        rows = [
            [e.step, _n(e.steps), _n(e.tokens), _n(e.flops), _bytes(e.memory_bytes),
             _time(e.seconds)]
            for e in trained
        ]  # fmt: skip
        guess = "" if chosen.measured else " (not measured: a peak x MFU guess)"
        table(
            f"plan for {loaded.recipe.name} on {chosen.name}: {chosen.description}{guess}",
            ["step", "steps", "tokens", "FLOPs", "peak memory", "time"],
            rows,
        )
        for e in estimates:
            if e.flops is None and e.stage.startswith("train."):
                typer.echo(f"{e.step}: not estimated: {e.note}")
        others = [e.step for e in estimates if not e.stage.startswith("train.")]
        if others:
            typer.echo(f"not estimated (not training): {', '.join(others)}")
        total = f"training: {_time(seconds)}"
        if cost is not None:
            total += f", cost {cost:,.2f} at {price_per_hour:g} an hour"
        if not fits:
            total += f"; peak memory {_bytes(memory)} does not fit {chosen.name}"
        typer.echo(total)

    emit(ctx, data, show)


def _n(value: float | None) -> str:
    if value is None:
        return ""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:g}"


def _bytes(value: int | None) -> str:
    return "" if value is None else f"{value / 2**30:.2f} GiB"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
