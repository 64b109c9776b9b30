"""`forgeml data synthesize`: training examples made from a dataset of documents
(data.synthesize), by rules offline or by a teacher endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from forgeml.cli.output import console, options, report_run
from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage


def synthesize(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset of documents to make examples from."),
    name: str | None = typer.Option(None, "--name", help="Name the output dataset."),
    task: list[str] = typer.Option(
        [],
        "--task",
        help="qa, summary, extract or cloze (repeatable; all four by default). Cloze is "
        "always rule-based.",
    ),
    generator: str = typer.Option(
        "rules", "--generator", help="rules (offline, no model) or teacher (an endpoint)."
    ),
    teacher_url: str | None = typer.Option(
        None, "--teacher-url", help="Teacher's OpenAI-compatible base URL, e.g. http://host/v1."
    ),
    teacher_model: str | None = typer.Option(
        None, "--teacher-model", help="Model name the teacher endpoint serves."
    ),
    teacher_prompt: list[str] = typer.Option(
        [],
        "--teacher-prompt",
        help="TASK=FILE: a prompt template for a teacher task, with {passage} in it (repeatable).",
    ),
    teacher_concurrency: int = typer.Option(4, "--teacher-concurrency", min=1, max=256),
    per_passage: int = typer.Option(
        3, "--per-passage", help="At most this many examples per task per passage."
    ),
    max_examples: int = typer.Option(20000, "--max-examples", help="Stop after this many."),
    passage_chars: int = typer.Option(
        1500, "--passage-chars", help="Longest passage an example is made from, in characters."
    ),
    min_grounding: float = typer.Option(
        0.7,
        "--min-grounding",
        help="Share of an answer's content words that must appear in its passage.",
    ),
    keep_pii: bool = typer.Option(
        False, "--keep-pii", help="Keep examples whose question or answer contains PII."
    ),
    system_prompt: str | None = typer.Option(
        None, "--system-prompt", help="A system message put first in every example."
    ),
    seed: int = typer.Option(0, help="Seed for choosing among a passage's candidates."),
) -> None:
    """Make training examples (Q&A, summaries, extraction, cloze) from documents, each
    traced to the passage it came from.

    The teacher's API key is read from FORGEML_TEACHER_API_KEY, never stored."""
    workspace = options(ctx).open()
    params: dict[str, Any] = {
        "generator": generator,
        "per_passage": per_passage,
        "max_examples": max_examples,
        "passage_chars": passage_chars,
        "min_grounding": min_grounding,
        "pii": "keep" if keep_pii else "drop",
        "system_prompt": system_prompt,
        "name": name,
    }
    if task:
        params["tasks"] = task
    if teacher_url or teacher_model or teacher_prompt:
        if not (teacher_url and teacher_model):
            raise InputError("a teacher needs both --teacher-url and --teacher-model")
        params["teacher"] = {
            "url": teacher_url,
            "model": teacher_model,
            "concurrency": teacher_concurrency,
            "prompts": _teacher_prompts(teacher_prompt),
        }
    result = run_stage(workspace, "data.synthesize", params, {"dataset": dataset}, seed=seed)
    report_run(ctx, result)
    if not options(ctx).json:
        metrics = result.metrics
        made = ", ".join(
            f"{metrics[key]} {key.removeprefix('examples_')}"
            for key in sorted(metrics)
            if key.startswith("examples_")
        )
        dropped = ", ".join(
            f"{metrics[key]} {key.removeprefix('dropped_').replace('_', ' ')}"
            for key in sorted(metrics)
            if key.startswith("dropped_")
        )
        console.print(
            f"{metrics.get('examples', 0)} examples ({made}) from {metrics.get('passages', 0)} "
            f"passages of {metrics.get('documents', 0)} documents; dropped: {dropped or 'none'}"
        )


def _teacher_prompts(pairs: list[str]) -> dict[str, str]:
    prompts = {}
    for pair in pairs:
        task, separator, file = pair.partition("=")
        if not separator or not task or not file:
            raise InputError(
                f"--teacher-prompt {pair!r} is not TASK=FILE", hint="e.g. qa=prompts/qa.txt"
            )
        try:
            prompts[task] = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the {task} prompt template: {exc}", path=file) from exc
    return prompts
