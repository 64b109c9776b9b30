"""`forgeml monitor ...`: what production does to a model, from the registry's request log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options, table
from forgeml.core.errors import InputError

MODEL = typer.Argument(..., help="Model as served: NAME, NAME@ALIAS or NAME:N.")
UNTIL = typer.Option(None, "--until", help="Window end (default: now), same forms as --since.")
ALPHA = typer.Option(
    None,
    "--alpha",
    help="Significance level, split over the signals (default: monitoring.alpha, 0.01).",
)


def since_option(default: str) -> typer.Option:
    return typer.Option(default, "--since", help="Window start: 15m, 24h, 7d, 2w or an ISO date.")


def window(since: str, until: str | None) -> tuple[datetime, datetime | None]:
    from forgeml.monitor.usage import parse_window

    return parse_window(since), parse_window(until) if until else None


app = typer.Typer(
    help="Watch production: usage and drift from the request log.",
    no_args_is_help=True,
)


@app.command("usage")
def usage(
    ctx: typer.Context,
    model: str = typer.Argument(
        None, help="Model as served (NAME, NAME@ALIAS, NAME:N); all models when left out."
    ),
    since: str = since_option("7d"),
    until: str = UNTIL,
    by: str = typer.Option(
        "model",
        "--by",
        help="One row per: model, key, day, version (NAME:N that answered) or alias "
        "(prod vs candidate).",
    ),
) -> None:
    """Requests, outcomes (errors, 429s), tokens, latency and time-to-first-token
    percentiles, finish reasons, tool-call rate, how often JSON answers parsed, and
    feedback, per model, key, day, version or alias (a canary against prod)."""
    from forgeml.monitor.usage import usage as measure

    start, end = window(since, until)
    report = measure(options(ctx).open(), model, since=start, until=end, by=by)

    def render() -> None:
        if not report["groups"]:
            console.print(f"no requests logged between {report['since']} and {report['until']}")
            return
        rows = []
        for name, group in report["groups"].items():
            latency, ttft, feedback = group["latency_ms"], group["ttft_ms"], group["feedback"]
            rows.append([
                name, group["requests"],
                f"{group['error_rate']:.1%} / {group['rate_limited_rate']:.1%}",
                f"{group['prompt_tokens']} / {group['completion_tokens']}",
                f"{latency['p50']} / {latency['p99']}",
                f"{ttft['p50']} / {ttft['p99']}" if ttft["p50"] is not None else "",
                f"{group['tool_call_rate']:.1%}",
                "" if group["json_valid_rate"] is None else f"{group['json_valid_rate']:.1%} of {group['json_requests']}",
                f"{feedback['count']}" + (f" ({feedback['mean_rating']})" if feedback["rated"] else ""),
            ])  # fmt: skip
        table(
            f"usage {report['since'][:19]} .. {report['until'][:19]} by {by}",
            [by, "requests", "errors / 429", "tokens in / out", "latency ms p50 / p99",
             "ttft ms p50 / p99", "tool calls", "JSON valid", "feedback (mean 1-5)"],
            rows,
        )  # fmt: skip

    emit(ctx, report, render)


@app.command("drift")
def drift(
    ctx: typer.Context,
    model: str = MODEL,
    since: str = since_option("1h"),
    until: str = UNTIL,
    alpha: float | None = ALPHA,
) -> None:
    """Compare a window of production prompts with the model's training data: each signal
    (prompt length, turns, chars per token, language, topic sketch, prompt log-probability
    under the model, answer labels), its test, effect
    size, threshold, and `drift: true|false`. Exit code 0 either way; read `drift` (or --json)."""
    from forgeml.monitor.drift import drift as measure

    start, end = window(since, until)
    report = measure(options(ctx).open(), model, since=start, until=end, alpha=alpha)

    def render() -> None:
        rows = [
            [
                s["signal"], f"{s['test']} p={s['p_value']:.2g}", f"{s['effect']} {s['value']}",
                s["threshold"], "DRIFT" if s["drifted"] else "ok",
            ]
            if s["measured"] else [s["signal"], "-", s["reason"], "-", "not measured"]
            for s in report["signals"]
        ]  # fmt: skip
        reference = report["reference"]
        table(
            f"{report['model']} ({report['artifact']}): {report['requests']} requests "
            f"{report['since'][:19]} .. {report['until'][:19]} vs {reference['records']} "
            f"{reference['kind']} records of its training data",
            ["signal", "test", "effect", "threshold", "verdict"],
            rows,
        )
        console.print(f"drift: {'true' if report['drift'] else 'false'}")

    emit(ctx, report, render)


@app.command("report")
def report(
    ctx: typer.Context,
    model: str = MODEL,
    since: str = since_option("30d"),
    until: str = UNTIL,
    buckets: int = typer.Option(24, "--buckets", help="Equal time buckets, each tested for drift."),
    alpha: float | None = ALPHA,
    output: Path = typer.Option(
        Path("drift-report.html"), "--output", "-o", help="HTML file; its .json sits beside it."
    ),
) -> None:
    """Write a self-contained HTML drift report (opens from disk, no network): each
    signal's effect per time bucket against its threshold band, and the buckets that
    drifted with the signals that moved. The same data goes to a .json beside it."""
    from forgeml.core.atomic import write_json_atomic, write_text_atomic
    from forgeml.monitor.report import drift_report, render_html

    start, end = window(since, until)
    data = drift_report(
        options(ctx).open(), model, since=start, until=end, buckets=buckets, alpha=alpha
    )
    try:
        write_text_atomic(output, render_html(data))
        write_json_atomic(output.with_suffix(".json"), data)
    except OSError as exc:
        raise InputError(f"cannot write the report: {exc}", path=output) from exc
    emit(
        ctx,
        {**data, "html": str(output), "json": str(output.with_suffix(".json"))},
        lambda: console.print(
            f"{'drift' if data['drift'] else 'no drift'}: {data['drifted_buckets']} of "
            f"{len(data['buckets'])} buckets drifted; wrote {output} and "
            f"{output.with_suffix('.json')}"
        ),
    )


@app.command("campaign")
def campaign(
    ctx: typer.Context,
    model: str = MODEL,
    since: str = since_option("7d"),
    until: str = UNTIL,
    max_rating: int = typer.Option(
        None, "--max-rating", help="Only completions rated at most this (1-5)."
    ),
    language: str = typer.Option(
        None, "--language", help="Only prompts in this language (en, de, ...)."
    ),
    finish_reason: str = typer.Option(None, "--finish-reason", help="Only answers that ended so."),
    json_invalid: bool = typer.Option(
        False, "--json-invalid", help="Only JSON answers that did not parse."
    ),
    judge_endpoint: str = typer.Option(
        None, "--judge-endpoint", help="A judge's OpenAI-compatible /v1."
    ),
    judge_model: str = typer.Option(None, "--judge-model", help="The judge model's name there."),
    rubric: str = typer.Option(None, "--rubric", help="What the judge grades by (1-5)."),
    max_judge_score: int = typer.Option(
        2, "--max-judge-score", help="Keep what the judge scores at most this."
    ),
    max_records: int = typer.Option(10_000, "--max-records", help="Keep at most this many."),
    name: str = typer.Option(None, "--name", help="Name the dataset."),
) -> None:
    """Turn production traffic the model handles badly into a prompt dataset (for
    `forgeml train rl` or labelling), each record traced to its request-log row: logged
    conversations (the server must run with --log-prompts) that match every filter, and,
    with a judge, that the judge scores low."""
    from forgeml.cli.output import report_run
    from forgeml.core.runs import run_stage

    start, end = window(since, until)
    if bool(judge_endpoint) != bool(judge_model):
        raise InputError(
            "a judge needs both --judge-endpoint and --judge-model", field="--judge-model"
        )
    params = {
        "model": model, "since": start, "max_rating": max_rating, "until": end,
        "language": language,
        "finish_reason": finish_reason, "json_invalid": json_invalid,
        "judge_endpoint": judge_endpoint, "judge_model": judge_model, "judge_rubric": rubric,
        "max_judge_score": max_judge_score, "max_records": max_records, "name": name,
    }  # fmt: skip
    opts = options(ctx)
    result = run_stage(opts.open(), "monitor.campaign", params, quiet=opts.json)
    report_run(ctx, result)
