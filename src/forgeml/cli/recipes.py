"""`forgeml run RECIPE` executes a recipe; `forgeml stages` lists what a step can use."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options, table
from forgeml.core.errors import InputError
from forgeml.core.recipes import PlannedStep, execute, load_recipe, parse_variables, plan
from forgeml.core.runs import launch_rank
from forgeml.core.stages import get_stage, list_stages
from forgeml.core.sweeps import Cell, parse_axis, parse_duration, run_sweep

stages_app = typer.Typer(
    help="List the stages recipes can use, with their parameters.", no_args_is_help=True
)


def run_recipe(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the plan; run nothing."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a parameter: STEP.PARAM=VALUE (repeatable)."
    ),
    variables: list[str] = typer.Option(
        [], "--var", help="Set a recipe variable `${NAME}`: NAME=VALUE (repeatable)."
    ),
    sweep: list[str] = typer.Option(
        [],
        "--sweep",
        help="Run the recipe for each value: STEP.PARAM=V1,V2,... or VAR=V1,V2 (repeatable: "
        "the grid of all combinations). Needs --select.",
    ),
    select: str | None = typer.Option(
        None,
        "--select",
        help="STEP/METRIC naming the sweep's winner, e.g. eval-final/eval-routing/json_match.",
    ),
    minimize: bool = typer.Option(
        False, "--minimize", help="The lowest --select metric wins (a loss); else the highest."
    ),
    max_runs: int = typer.Option(
        16, "--max-runs", min=1, max=1024, help="Refuse a sweep of more cells than this."
    ),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        help="Start no new sweep cell after this long, e.g. 90m or 2h (finished cells count).",
    ),
) -> None:
    """Run a recipe's steps in order, reusing every step that already succeeded."""
    opts = options(ctx)
    if sweep or select:
        if not (sweep and select):
            raise InputError("a sweep needs both --sweep and --select (STEP/METRIC)")
        if dry_run:
            raise InputError("--dry-run plans one recipe run; drop --sweep to use it")
        run_recipe_sweep(ctx, recipe, overrides, variables, sweep, select, minimize, max_runs,
                         time_budget)  # fmt: skip
        return
    loaded = load_recipe(recipe, overrides, parse_variables(variables))
    workspace = opts.open(create=True)
    if dry_run:
        steps = plan(workspace, loaded)
        data = [_step_dict(step) for step in steps]
        emit(
            ctx,
            {"recipe": loaded.recipe.name, "steps": data},
            lambda: table(
                f"plan for {loaded.recipe.name} ({recipe})",
                ["step", "stage", "action", "run key", "detail"],
                [[s.name, s.stage, s.action, (s.key or "")[:12], s.detail] for s in steps],
            ),
        )
        return
    started = time.monotonic()
    step_started = [time.monotonic()]

    def on_step(step: PlannedStep) -> None:
        took = time.monotonic() - step_started[0]
        step_started[0] = time.monotonic()
        step.detail = f"{took:.1f}s"
        if not opts.json:
            refs = ", ".join(a.ref for a in step.outputs.values())
            console.print(
                f"[green]✓[/] {step.name:<16} {step.stage:<20} {step.action:<6} {took:6.1f}s  {refs}"
            )

    # Under torchrun every process runs the recipe (core.recipes.execute); rank 0 alone
    # reports.
    reporting = launch_rank()[0] == 0
    done = execute(workspace, loaded, on_step=on_step if reporting else None, quiet=opts.json)
    if not reporting:
        raise typer.Exit(0)
    total = time.monotonic() - started
    emit(
        ctx,
        {
            "recipe": loaded.recipe.name,
            "seconds": round(total, 2),
            "steps": [_step_dict(s) for s in done],
        },
        lambda: console.print(f"{loaded.recipe.name}: {len(done)} steps in {total:.1f}s"),
    )


def run_recipe_sweep(
    ctx: typer.Context,
    recipe: Path,
    overrides: list[str],
    variables: list[str],
    sweep: list[str],
    select: str,
    minimize: bool,
    max_runs: int,
    time_budget: str | None,
) -> None:
    opts = options(ctx)
    axes = [parse_axis(item) for item in sweep]
    budget = parse_duration(time_budget) if time_budget else None

    def on_cell(cell: Cell) -> None:
        if opts.json:
            return
        values = ", ".join(f"{k}={v}" for k, v in cell.values.items())
        score = f"{cell.metric:.4g}" if cell.metric is not None else "-"
        detail = f"  {cell.error}" if cell.error else ""
        console.print(
            f"cell {cell.index}: {values:<40} {cell.status:<7} {score:>8} {cell.seconds:7.1f}s"
            f"{detail}"
        )

    result = run_sweep(
        lambda: opts.open(create=True), recipe, axes, select, overrides=overrides,
        variables=parse_variables(variables), minimize=minimize, max_runs=max_runs,
        time_budget=budget, quiet=opts.json, on_cell=on_cell,
    )  # fmt: skip
    winner = result.winner

    def show() -> None:
        targets = [axis.target for axis in axes]
        table(
            f"sweep of {recipe.name} by {select} ({'lowest' if minimize else 'highest'} wins)",
            ["cell", *targets, "status", select, "seconds"],
            [
                [
                    f"{cell.index}{' *' if cell is winner else ''}",
                    *(str(cell.values[t]) for t in targets),
                    cell.status,
                    f"{cell.metric:.4g}" if cell.metric is not None else "-",
                    f"{cell.seconds:.1f}",
                ]
                for cell in result.cells
            ],
        )
        if winner:
            values = " ".join(f"--set {k}={v}" if "." in k else f"--var {k}={v}"
                              for k, v in winner.values.items())  # fmt: skip
            console.print(f"winner: cell {winner.index} ({select} {winner.metric:.4g}): {values}")

    emit(ctx, result.as_dict(), show)
    if winner is None:
        raise InputError(
            "no cell of the sweep finished with the selected metric",
            hint="the errors are in the table above (or in the JSON's cells)",
        )


def _step_dict(step: PlannedStep) -> dict:
    return {
        "name": step.name,
        "stage": step.stage,
        "action": step.action,
        "key": step.key,
        "run_id": step.result.run_id if step.result else None,
        "outputs": {role: a.ref for role, a in step.outputs.items()},
        "detail": step.detail,
    }


@stages_app.command("list")
def stages_list(ctx: typer.Context) -> None:
    """List the registered stages."""
    stages = list_stages()
    data = [
        {
            "name": s.name,
            "description": s.description,
            "inputs": {k: v.describe() for k, v in s.inputs.items()},
            "outputs": s.outputs,
        }
        for s in stages
    ]
    emit(
        ctx,
        data,
        lambda: table(
            None,
            ["stage", "inputs", "outputs", "description"],
            [
                [
                    d["name"],
                    ", ".join(f"{k}: {v}" for k, v in d["inputs"].items()),
                    ", ".join(f"{k}: {v}" for k, v in d["outputs"].items()),
                    d["description"],
                ]
                for d in data
            ],
        ),
    )


@stages_app.command("show")
def stages_show(
    ctx: typer.Context, name: str = typer.Argument(..., help="Stage name, e.g. data.ingest.")
) -> None:
    """Show a stage's parameters with their types, defaults and meaning."""
    stage = get_stage(name)
    schema = stage.params.model_json_schema()
    rows = []
    for field_name, field in stage.params.model_fields.items():
        default = (
            "(required)"
            if field.is_required()
            else repr(field.default if field.default_factory is None else field.default_factory())
        )
        annotation = getattr(field.annotation, "__name__", str(field.annotation)).replace(
            "typing.", ""
        )
        rows.append([field_name, annotation, default, field.description or ""])
    emit(
        ctx,
        {"name": stage.name, "description": stage.description, "parameters": schema},
        lambda: (
            console.print(f"[bold]{stage.name}[/]: {stage.description}"),
            table(None, ["parameter", "type", "default", "meaning"], rows),
        ),
    )
