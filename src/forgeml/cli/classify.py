"""`forgeml classify`: a classifier model's labels for texts, on this machine.

    forgeml classify router-cls "My parcel never came" "Refund my order"
    forgeml classify router-cls --file tickets.jsonl          # {"text"} or {"messages"} lines
    forgeml --json classify router-cls "..."                  # scores per label set

The same model the server answers `/v1/classifications` with; for a backlog, serve it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from forgeml.cli.output import emit, options, table
from forgeml.core.errors import InputError

MAX_INPUTS = 10_000
MAX_FILE_BYTES = 64 * 1024 * 1024


def classify(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Classifier: NAME, NAME:N, NAME@ALIAS or model/SHA."),
    texts: list[str] = typer.Argument(None, help="Texts to classify."),
    file: Path | None = typer.Option(
        None, "--file", help='JSONL of {"text": ...} or {"messages": [...]} lines.'
    ),
) -> None:
    """Classify texts (or a JSONL file's lines) with a classifier model."""
    from forgeml.models.classifier import Classifier
    from forgeml.models.classifier_config import decide
    from forgeml.train.classify_data import classification_input

    inputs = list(texts or []) + (_read(file) if file else [])
    if not inputs:
        raise InputError("nothing to classify: give texts or --file", field="texts")
    if len(inputs) > MAX_INPUTS:
        raise InputError(f"{len(inputs):,} inputs; at most {MAX_INPUTS:,} at once", field="texts")
    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(model, kind="model", purpose="classify")
    classifier = Classifier.load(workspace.local_path(artifact))
    rendered = [classification_input(i) if isinstance(i, list) else i for i in inputs]
    scores = classifier.scores(rendered)
    results = [{"labels": decide(s, classifier.layout), "scores": s} for s in scores]

    def render() -> None:
        names = [s.name for s in classifier.layout.sets]
        rows = []
        for given, result in zip(inputs, results, strict=True):
            shown = given if isinstance(given, str) else json.dumps(given)[:80]
            labels = result["labels"]
            rows.append([shown[:80], *(_label(labels[n], result["scores"][n]) for n in names)])
        table(None, ["input", *names], rows)

    emit(ctx, {"model": artifact.ref, "results": results}, render)


def _label(value, scores: dict[str, float]) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "(none)"
    return f"{value} ({scores[value]:.2f})"


def _read(path: Path) -> list:
    if not path.is_file():
        raise InputError("no such file", path=path)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"larger than {MAX_FILE_BYTES // 2**20} MiB", path=path)
    found = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"line {number}: not valid JSON: {error.msg}", path=path) from None
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                found.append(record["text"])
            elif isinstance(record, dict) and isinstance(record.get("messages"), list):
                found.append(record["messages"])
            else:
                raise InputError(
                    f'line {number}: expected {{"text": "..."}} or {{"messages": [...]}}',
                    path=path,
                )
    return found
