"""`forgeml data`: ingest, assess, clean and mix datasets; build them from feedback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from forgeml.cli import data_synthesize
from forgeml.cli.output import console, emit, options, report_run, short_time, table
from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage
from forgeml.data.formats import validate_jsonl

app = typer.Typer(help="Ingest, assess, clean and mix datasets.", no_args_is_help=True)


# Shared by ingest, assess and clean (data/ray_executor.py).
EXECUTOR = typer.Option(
    "local",
    "--executor",
    help="Where the per-file or per-document work runs: local or ray (same output).",
)
RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="With --executor ray: the cluster's head (default RAY_ADDRESS, else a local Ray).",
)


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(
        ...,
        help="Files and directories (txt, md, html, pdf, jsonl, csv, parquet, .gz; images with --images).",
    ),
    name: str | None = typer.Option(None, "--name", help="Name the dataset (e.g. support-docs)."),
    text_field: str = typer.Option(
        "text", help="jsonl field / csv or parquet column holding the text."
    ),
    metadata_field: list[str] = typer.Option(
        [], "--metadata-field", help="Extra field copied to metadata (repeatable)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable file."),
    max_file_mb: int = typer.Option(
        1024,
        "--max-file-mb",
        help="Reject a file (txt, md, html, pdf) or jsonl/csv line larger than this once "
        "decompressed.",
    ),
    images: bool = typer.Option(
        False,
        "--images",
        help="Image files and PDF pages become pictures in chat records (scans, forms): "
        "the picture and --instruction as the user turn, a page's text layer as the answer.",
    ),
    instruction: str = typer.Option(
        "Transcribe this page.",
        "--instruction",
        help="With --images: the words beside each picture.",
    ),
    dpi: int = typer.Option(
        100, "--dpi", help="With --images: PDF pages are drawn at this resolution (36-300)."
    ),
    executor: str = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Read documents into a dataset artifact; unreadable files are reported, not dropped."""
    workspace = options(ctx).open(create=True)
    params = {
        "paths": [str(p) for p in paths],
        "name": name,
        "text_field": text_field,
        "metadata_fields": metadata_field,
        "strict": strict,
        "max_file_mb": max_file_mb,
        "images": images,
        "image_instruction": instruction,
        "pdf_dpi": dpi,
        "executor": executor,
        "ray_address": ray_address,
    }
    result = run_stage(workspace, "data.ingest", params, seed=seed)
    report_run(ctx, result)
    if not options(ctx).json:
        metrics = result.metrics
        console.print(
            f"{metrics.get('documents', 0)} documents from {metrics.get('files', 0)} files, "
            f"{metrics.get('rejected', 0)} rejected"
        )
        for rejection in metrics.get("rejections", [])[:20]:
            where = rejection["source"] + (f":{rejection['line']}" if rejection.get("line") else "")
            console.print(f"  [yellow]rejected[/] {where}: {rejection['reason']}", highlight=False)


@app.command("forget")
def forget(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The dataset (or any artifact) to forget."),
    reason: str = typer.Option(
        ..., "--reason", help="The deletion request, e.g. a ticket id; audited."
    ),
    purge_models: bool = typer.Option(
        False, "--purge-models", help="Also erase the weights of models made from it."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be erased and blocked; change nothing."
    ),
) -> None:
    """Erase a dataset and the data derived from it (tombstones remain), and block every
    use of what was made from it: serve, promote, export, eval, training, fine-tuning,
    reproduce. Models stay on disk, unusable, unless --purge-models."""
    from forgeml.core.forget import forget as forget_artifact

    if not reason.strip():
        raise InputError("a reason is required: the deletion request, e.g. a ticket id")
    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(ref)
    plan = forget_artifact(workspace, artifact, reason, purge_models=purge_models, dry_run=dry_run)
    data = plan.as_dict(dry_run)

    def show() -> None:
        would = "would be " if dry_run else ""
        for key, label in (("erased", "erased"), ("kept_unusable", "kept on disk, blocked")):
            for item in data[key]:
                console.print(f"{would}{label}: {item}")
        shown = set(data["erased"]) | set(data["kept_unusable"])
        for item in [b for b in data["blocked"] if b not in shown]:
            console.print(f"already erased, blocked: {item}")
        console.print(
            f"{len(data['blocked'])} artifacts {would}blocked, {data['erased_bytes']:,} bytes "
            f"{would}erased" + (" (dry run: nothing changed)" if dry_run else "")
        )

    emit(ctx, data, show)


@app.command("tombstones")
def list_tombstones(ctx: typer.Context, limit: int = typer.Option(200, help="Newest N.")) -> None:
    """What data deletion erased: kind, sha256, size, reason, when and who (no content)."""
    from forgeml.core.forget import tombstones

    rows = tombstones(options(ctx).open(), limit)
    data = [
        {
            "ref": t.ref,
            "kind": t.kind,
            "sha256": t.sha256,
            "size_bytes": t.size_bytes,
            "reason": t.reason,
            "erased_at": t.erased_at.isoformat(),
            "erased_by": t.erased_by,
        }
        for t in rows
    ]
    columns = ["ref", "kind", "bytes", "reason", "erased", "by"]
    rows = [
        [t.ref, t.kind, t.size_bytes, t.reason, short_time(t.erased_at), t.erased_by] for t in rows
    ]
    emit(ctx, data, lambda: table(None, columns, rows))


@app.command("forget-feedback")
def forget_feedback(
    ctx: typer.Context,
    ids: list[int] = typer.Option([], "--id", help="A feedback row id; repeat for several."),
    completion: str | None = typer.Option(None, "--completion", help="A completion id."),
    key: str | None = typer.Option(None, "--key", help="Everything sent with this API key name."),
    containing: str | None = typer.Option(
        None, "--containing", help="Rows whose conversation contains this text (any case)."
    ),
    reason: str = typer.Option(
        ..., "--reason", help="The deletion request, e.g. a ticket id; audited."
    ),
) -> None:
    """Delete production feedback (and its request log rows) about a person or conversation;
    mark the datasets and models trained on it as forgotten. Selectors combine."""
    from forgeml.data.feedback_erasure import forget_feedback as erase

    workspace = options(ctx).open()
    erasure = erase(
        workspace, reason, ids=ids, completion_id=completion, key_name=key, containing=containing
    )
    data = erasure.as_dict()

    def show() -> None:
        console.print(
            f"deleted {data['feedback_deleted']} feedback rows and "
            f"{data['request_log_deleted']} request log rows"
        )
        for ref in data["forgotten"]:
            console.print(f"forgotten: {ref}")

    emit(ctx, data, show)


@app.command("assess")
def assess(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset to assess (name, name:version, dataset/sha)."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer artifact for real token counts; default: chars / 4."
    ),
    size: str = typer.Option("small", "--size", help="Model size the pre-training verdict is for."),
    name: str | None = typer.Option(None, "--name", help="Name the report."),
    workers: int | None = typer.Option(
        None, "--workers", help="Detector processes (default: one per core, up to 4)."
    ),
    executor: str = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Report a dataset's size, sources, duplicates, PII, languages, quality and readiness."""
    workspace = options(ctx).open()
    params = {"size": size, "name": name, "workers": workers, "executor": executor,
              "ray_address": ray_address}  # fmt: skip
    inputs = {"dataset": dataset, "tokenizer": tokenizer}
    result = run_stage(workspace, "data.assess", params, inputs, seed=seed)
    report = result.outputs["report"]
    directory = workspace.local_path(report)
    steps = [
        step.replace("--report REPORT", f"--report {report.ref}")
        for step in result.metrics.get("next_steps", [])
    ]
    report_run(ctx, result, {"html": str(directory / "report.html"), "next_steps": steps})
    if options(ctx).json:
        return
    metrics = result.metrics
    console.print(
        f"{metrics['documents']:,} documents, {metrics['tokens']:,} tokens "
        f"({metrics['tokens_method']}); duplicates: {metrics['exact_duplicates']:,} exact, "
        f"{metrics['near_duplicates']:,} near; {metrics['pii_matches']:,} PII matches; "
        f"{metrics['documents_failing_quality']:,} failing quality filters"
    )
    table(None, ["use", "verdict"], [[use, v] for use, v in metrics["readiness"].items()])
    console.print("Next:")
    for number, step in enumerate(steps, start=1):
        console.print(f"  {number}. {step}")
    console.print(f"Report: {directory / 'report.html'}")


def _quality_overrides(values: list[str]) -> dict[str, Any]:
    """`--quality max_dup_line_fraction=0.5` pairs into QualityThresholds fields."""
    overrides: dict[str, Any] = {}
    for item in values:
        key, separator, raw = item.partition("=")
        if not separator:
            raise InputError(f"--quality {item!r}: expected FIELD=VALUE", hint="e.g. min_words=20")
        try:
            overrides[key.strip()] = None if raw.lower() in ("none", "null") else json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(
                f"--quality {item!r}: {raw!r} is not a number, true/false or none"
            ) from None
    return overrides


@app.command("clean")
def clean(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset to clean."),
    report: str | None = typer.Option(
        None, "--report", help="Its assessment: reuse the findings instead of recomputing them."
    ),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="Keep duplicates."),
    no_pii: bool = typer.Option(False, "--no-pii", help="Do not redact PII."),
    no_quality: bool = typer.Option(False, "--no-quality", help="Skip the quality filters."),
    min_words: int | None = typer.Option(None, "--min-words", help="Fewest words (Gopher: 50)."),
    max_words: int | None = typer.Option(None, "--max-words", help="Most words (100,000)."),
    quality: list[str] = typer.Option(
        [], "--quality", help="Any quality threshold, FIELD=VALUE (repeatable; none = off)."
    ),
    language: list[str] = typer.Option(
        [], "--language", help="Keep only this language, e.g. en (repeatable)."
    ),
    min_language_confidence: float = typer.Option(
        0.5, help="With --language: drop documents identified less surely."
    ),
    near_threshold: float = typer.Option(0.8, help="Near-duplicate Jaccard threshold."),
    pii_type: list[str] = typer.Option([], "--pii-type", help="Only this PII type (repeatable)."),
    name: str | None = typer.Option(None, "--name", help="Name the cleaned dataset."),
    workers: int | None = typer.Option(None, "--workers", help="Detector processes."),
    executor: str = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Remove duplicates and poor documents, redact PII; every change goes to a rejects artifact."""
    workspace = options(ctx).open()
    thresholds = _quality_overrides(quality)
    if min_words is not None:
        thresholds["min_words"] = min_words
    if max_words is not None:
        thresholds["max_words"] = max_words
    params = {
        "dedup": not no_dedup,
        "near_threshold": near_threshold,
        "pii": not no_pii,
        "pii_types": pii_type or None,
        "quality": None if no_quality else thresholds,
        "languages": language or None,
        "min_language_confidence": min_language_confidence,
        "workers": workers,
        "executor": executor,
        "ray_address": ray_address,
        "name": name,
    }
    inputs = {"dataset": dataset, "report": report}
    result = run_stage(workspace, "data.clean", params, inputs, seed=seed)
    report_run(ctx, result)
    if options(ctx).json:
        return
    metrics = result.metrics
    console.print(
        f"{metrics['documents_out']:,} of {metrics['documents_in']:,} documents kept; "
        f"{metrics['removed_documents']:,} removed, {metrics['redacted_documents']:,} redacted"
    )
    rows = [[reason, count] for reason, count in metrics["removed_by_reason"].items()]
    rows += [[f"redacted {kind}", count] for kind, count in metrics["redactions_by_type"].items()]
    if rows:
        table(None, ["reason", "count"], rows)


@app.command("validate")
def validate(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A jsonl (or .jsonl.gz) training file."),
    format_name: str | None = typer.Option(
        None,
        "--format",
        help="chat, preference, prompt or text; default: the format of the first record.",
    ),
    max_errors: int = typer.Option(20, help="Show at most this many problems."),
) -> None:
    """Check every line of a training file; print bad lines as FILE:LINE, exit 2 if any."""
    report = validate_jsonl(file, format_name, max_errors)
    data = {
        "path": report.path,
        "format": report.format,
        "records": report.records,
        "valid": report.valid,
        "counts": dict(report.counts),
        "error_count": report.error_count,
        "errors": [str(error) for error in report.errors],
        "ok": report.ok,
    }

    def render() -> None:
        for error in report.errors:
            console.print(str(error), markup=False)
        more = report.error_count - len(report.errors)
        if more > 0:
            console.print(f"... and {more} more", markup=False)
        console.print(report.summary(), markup=False)

    emit(ctx, data, render)
    if not report.ok:
        raise typer.Exit(2)


@app.command("mix")
def mix(
    ctx: typer.Context,
    parts: list[str] = typer.Argument(
        ..., help="DATASET=WEIGHT pairs, e.g. support-docs=0.7 python-docs=0.3."
    ),
    tokens: int | None = typer.Option(
        None, "--tokens", help="Train token budget (default: the sources' total)."
    ),
    validation_fraction: float = typer.Option(
        0.05, help="Share of each source held out, by document."
    ),
    name: str | None = typer.Option(None, "--name", help="Name the mixture."),
    seed: int = typer.Option(0, help="Seed for the split and the sampling."),
) -> None:
    """Mix datasets by weight into a mixture with train and validation splits."""
    from forgeml.core.errors import InputError

    datasets, weights = [], []
    for part in parts:
        ref, sep, weight = part.rpartition("=")
        try:
            weights.append(float(weight) if sep else 1.0)
        except ValueError:
            raise InputError(
                f"{part!r}: expected DATASET=WEIGHT with a number, e.g. docs=0.7"
            ) from None
        datasets.append(ref if sep else part)
    workspace = options(ctx).open()
    params = {
        "weights": weights,
        "tokens": tokens,
        "validation_fraction": validation_fraction,
        "name": name,
    }
    result = run_stage(workspace, "data.mix", params, {"datasets": datasets}, seed=seed)
    report_run(ctx, result)


@app.command("from-feedback")
def from_feedback(
    ctx: typer.Context,
    min_rating: int = typer.Option(
        4, "--min-rating", help="Rating (1..5; thumbs up is 5) from which an answer is good."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Only feedback on this model, as requests named it."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only feedback from this ISO date or time on, e.g. 2026-01-31."
    ),
    reference_only: bool = typer.Option(
        False, "--reference-only", help="RL prompts only where a correction gives a reference."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Name the datasets NAME-preference, NAME-sft and NAME-prompts."
    ),
    include_client_conversations: bool = typer.Option(
        False,
        "--include-client-conversations",
        help="Also use feedback whose conversation the client sent rather than the server "
        "recorded (left out by default: the server cannot vouch the model said it).",
    ),
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Turn production feedback into preference, SFT and RL prompt datasets."""
    workspace = options(ctx).open()
    params = {
        "min_rating": min_rating,
        "model": model,
        "since": since,
        "reference_only": reference_only,
        "name": name,
        "include_client_conversations": include_client_conversations,
    }
    result = run_stage(workspace, "data.from_feedback", params, seed=seed)
    report_run(ctx, result)
    if not options(ctx).json:
        metrics = result.metrics
        console.print(
            f"from {metrics.get('feedback', 0)} feedback rows: "
            f"{metrics.get('preference_pairs', 0)} preference pairs, "
            f"{metrics.get('sft_examples', 0)} SFT conversations, "
            f"{metrics.get('prompts', 0)} RL prompts ({metrics.get('references', 0)} with a "
            f"reference); {metrics.get('skipped', 0)} left out"
        )


app.command("synthesize")(data_synthesize.synthesize)
