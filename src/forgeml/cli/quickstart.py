"""`forgeml quickstart`: the whole lifecycle on shipped data, reusing finished steps.

    recipe (data -> tokenizer -> pre-train -> SFT -> DPO -> GRPO -> evals -> export)
    -> gate + promote to @prod -> model card -> GGUF (if llama.cpp is installed)
    -> serve it and chat with the openai client -> summary

`--size`, `--pretrain-steps` ... set the recipe's variables (`forgeml run` takes the same
as `--var NAME=VALUE`); the end-to-end test runs this command with small values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from forgeml.cli.output import console, emit, options, table
from forgeml.core.recipes import PlannedStep, execute, load_recipe
from forgeml.quickstart.corpus import write_quickstart_corpus

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
FINAL_MODEL = "quickstart-router"
# The eval steps of the recipe, in the order the comparison table shows them.
EVAL_STEPS = {"eval-base": "base", "eval-sft": "+ SFT", "eval-dpo": "+ DPO", "eval-final": "+ GRPO"}
EVAL_COLUMNS = {
    "routing (JSON exact)": "eval-routing/json_match",
    "unseen phrasing": "eval-routing-unseen/json_match",
    "valid JSON": "eval-routing/json_schema",
    "tool call": "eval-tools/tool_call",
    "bits/byte": "bits_per_byte",
}


def quickstart(
    ctx: typer.Context,
    fresh: bool = typer.Option(
        False, "--fresh", help="Run every step again instead of reusing finished ones."
    ),
    recipe: Path = typer.Option(RECIPE, help="Recipe to run (default: the shipped quickstart)."),
    size: str | None = typer.Option(None, help="Model size to pre-train (default: the recipe's)."),
    pretrain_steps: int | None = typer.Option(None, help="Pre-training steps."),
    sft_steps: int | None = typer.Option(None, help="Supervised fine-tuning steps."),
    dpo_steps: int | None = typer.Option(None, help="DPO steps."),
    grpo_steps: int | None = typer.Option(None, help="GRPO steps."),
    serve: bool = typer.Option(
        True, "--serve/--no-serve", help="Serve the final model and chat with it at the end."
    ),
    collapse_check: bool = typer.Option(
        True,
        "--collapse-check/--no-collapse-check",
        help="Fail SFT if the model only repeats a token (turn off for few-step smoke runs).",
    ),
) -> None:
    """Run the whole lifecycle on shipped data: Python's docs and a generated help desk."""
    opts = options(ctx)
    workspace = opts.open(create=True)
    data_dir = workspace.root / "quickstart-data"
    write_quickstart_corpus(data_dir)
    chosen = {
        "size": size,
        "pretrain_steps": pretrain_steps,
        "sft_steps": sft_steps,
        "dpo_steps": dpo_steps,
        "grpo_steps": grpo_steps,
        "collapse_check": None if collapse_check else False,
    }
    variables = {"data": str(data_dir), **{k: v for k, v in chosen.items() if v is not None}}
    loaded = load_recipe(recipe, variables=variables)
    if not opts.json:
        console.print(
            f"forgeml quickstart: {len(loaded.recipe.steps)} steps, workspace {workspace.root}"
        )
    started = time.monotonic()
    timings: list[float] = []
    last = [time.monotonic()]

    def on_step(step: PlannedStep) -> None:
        timings.append(time.monotonic() - last[0])
        last[0] = time.monotonic()
        if not opts.json:
            refs = ", ".join(a.ref for a in step.outputs.values())
            console.print(
                f"  [green]✓[/] {step.name:<20} {step.action:<6} {timings[-1]:6.1f}s  {refs}"
            )

    steps = execute(workspace, loaded, on_step=on_step, quiet=opts.json, force=fresh)
    summary = _summary(workspace, steps, timings)
    summary.update(_release_and_demo(workspace, opts, serve))
    summary["seconds"] = round(time.monotonic() - started, 2)
    emit(ctx, summary, lambda: _render(workspace, summary))


def _release_and_demo(workspace, opts, serve: bool) -> dict[str, Any]:
    from forgeml.quickstart.release import release

    if not opts.json:
        console.print("  … gate, promote, model card" + (", serve and chat" if serve else ""))
    released = release(workspace, FINAL_MODEL, quiet=opts.json)
    result: dict[str, Any] = {
        "release": {
            "model": released.model,
            "promoted": released.promoted,
            "detail": released.detail,
            "gates": released.gates,
            "card": str(released.card),
            "gguf": released.gguf,
            "gguf_note": released.gguf_note,
            "serve_ref": released.serve_ref,
        }
    }
    if serve:
        from forgeml.quickstart.demo import chat_with_model

        url, exchanges = chat_with_model(workspace, released.serve_ref)
        result["demo"] = {
            "url": url,
            "exchanges": [
                {"request": e.request, "answer": e.answer, "finish_reason": e.finish_reason}
                for e in exchanges
            ],
        }
    return result


def _summary(workspace, steps: list[PlannedStep], timings: list[float]) -> dict[str, Any]:
    by_name = {s.name: s for s in steps}
    evals = {}
    for step_name, label in EVAL_STEPS.items():
        step = by_name.get(step_name)
        if step is not None:
            evals[label] = _eval_metrics(workspace, step.outputs["eval"])
    trained = [s for s in steps if s.stage.startswith("train.")]
    report = by_name.get("assess")
    return {
        "workspace": str(workspace.root),
        "steps": [
            {
                "name": s.name,
                "stage": s.stage,
                "action": s.action,
                "seconds": round(t, 2),
                "run_id": s.result.run_id,
                "outputs": {r: a.ref for r, a in s.outputs.items()},
            }
            for s, t in zip(steps, timings, strict=True)
        ],
        "evals": evals,
        "report": str(workspace.local_path(report.outputs["report"]) / "report.html")
        if report
        else None,
        "loss_curves": {
            s.name: str(workspace.local_path(s.outputs["model"]) / "loss_curve.svg")
            for s in trained
        },
    }


def _eval_metrics(workspace, artifact) -> dict[str, float | None]:
    from forgeml.eval.history import read_eval

    metrics = read_eval(workspace, artifact).get("metrics", {})
    return {column: metrics.get(key) for column, key in EVAL_COLUMNS.items()}


def _render(workspace, summary: dict[str, Any]) -> None:
    table(
        f"quickstart finished in {summary['seconds']:.1f}s",
        ["step", "stage", "action", "time", "artifacts"],
        [
            [
                s["name"],
                s["stage"],
                s["action"],
                f"{s['seconds']}s",
                ", ".join(s["outputs"].values()),
            ]
            for s in summary["steps"]
        ],
    )
    if summary["evals"]:
        table(
            "evaluation: held-out tickets and held-out text",
            ["model", *EVAL_COLUMNS],
            [
                [label, *(_cell(v) for v in metrics.values())]
                for label, metrics in summary["evals"].items()
            ],
        )
    released = summary["release"]
    mark = "[green]promoted[/]" if released["promoted"] else "[red]not promoted[/]"
    console.print(f"\n{mark}: {released['detail']}")
    for exchange in summary.get("demo", {}).get("exchanges", []):
        console.print(f"  {exchange['request']:<13} → {exchange['answer']}")
    where = [
        ("data report", summary["report"]),
        ("model card", released["card"]),
        *((f"loss: {step}", path) for step, path in summary["loss_curves"].items()),
        ("GGUF", released["gguf"] or released["gguf_note"]),
    ]
    console.print()
    for label, value in where:
        if value:
            console.print(f"  {label:<15} {value}")
    root, ref = workspace.root, released["serve_ref"]
    console.print("\nNext:")
    console.print(f"  forgeml -w {root} keys create --name my-app")
    console.print(f"  forgeml -w {root} serve {ref} --port 8000")
    console.print(
        "  curl -H 'Authorization: Bearer fml-...' http://127.0.0.1:8000/v1/chat/completions "
        f"""-d '{{"model": "{ref}", "messages": [{{"role": "user", "content": "Where is my order?"}}]}}'"""
    )
    console.print(f"  forgeml -w {root} lineage {ref}      # every step back to the raw files")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
