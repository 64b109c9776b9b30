"""`forgeml eval`: evaluate models on task suites and held-out text; compare them.

forgeml eval run my-model --suite qa.jsonl --perplexity-on docs-mix --reasoning none,high
forgeml eval compare my-model:3 my-model:4 --suite qa.jsonl
forgeml eval endpoint https://vendor.example/v1 --model vendor-large --suite qa.jsonl
forgeml eval classifier router-cls --data held-out-tickets     # accuracy, F1, confusion
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from forgeml.cli.output import console, options, report_run, table
from forgeml.core.errors import InputError
from forgeml.core.runs import RunResult, run_stage

app = typer.Typer(
    help="Evaluate models: held-out perplexity, task suites, comparisons, remote endpoints.",
    no_args_is_help=True,
)

API_KEY_ENV = "FORGEML_EVAL_API_KEY"
JUDGE_KEY_ENV = "FORGEML_JUDGE_API_KEY"
SUITE_HELP = "Task suite JSONL file (repeatable)."
REASONING_HELP = "Reasoning efforts to run each task with, comma-separated: none, high."


def _efforts(text: str) -> list[str]:
    efforts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [e for e in efforts if e not in ("none", "high")]
    if unknown or not efforts:
        raise InputError(
            f"--reasoning takes none and/or high, got {text!r}", hint="e.g. --reasoning none,high"
        )
    return efforts


def _suites(paths: list[Path]) -> list[str]:
    return [str(path.resolve()) for path in paths]


def _perplexity_inputs(workspace, ref: str | None) -> dict[str, Any]:
    if not ref:
        return {}
    artifact = workspace.registry.resolve(ref, purpose="be evaluated on")
    if artifact.kind not in ("dataset", "mixture"):
        raise InputError(
            f"--perplexity-on needs a dataset or a mixture, got {artifact.ref} (a {artifact.kind})"
        )
    return {artifact.kind: artifact}


def _endpoint(url: str, model: str, api_key: str | None) -> dict[str, Any]:
    # The key travels in the environment, named in the parameters, so it is never
    # recorded in the run's parameters or the registry.
    if api_key:
        os.environ[API_KEY_ENV] = api_key
    return {"url": url, "model": model, "api_key_env": API_KEY_ENV}


def _judge(url: str | None, model: str | None, api_key: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    if not model:
        raise InputError("--judge-endpoint needs --judge-model")
    if api_key:
        os.environ[JUDGE_KEY_ENV] = api_key
    return {"url": url, "model": model, "api_key_env": JUDGE_KEY_ENV}


def _judge_options():
    """The same three judge options on every command that runs suites."""
    return (
        typer.Option(None, "--judge-endpoint", help="Grade answers with this served model (URL)."),
        typer.Option(None, "--judge-model", help="The judge's model name."),
        typer.Option(None, "--judge-api-key", envvar=JUDGE_KEY_ENV, help="The judge's API key."),
    )


JUDGE_URL, JUDGE_MODEL, JUDGE_KEY = _judge_options()


def _print_metrics(result: RunResult) -> None:
    metrics = {
        name: value
        for name, value in result.metrics.items()
        if isinstance(value, float) and "/" not in name and name != "seconds"
    }
    if metrics:
        table(
            None,
            ["metric", "value"],
            [[name, f"{value:.4f}"] for name, value in sorted(metrics.items())],
        )


def _report(ctx: typer.Context, result: RunResult, file: str) -> None:
    workspace = options(ctx).open()
    artifact = next(iter(result.outputs.values()))
    page = workspace.local_path(artifact) / file
    report_run(ctx, result, {"report": str(page)})
    if not options(ctx).json:
        _print_metrics(result)
        console.print(f"report: {page}")


@app.command("run")
def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model: NAME, NAME:N, NAME@ALIAS or model/SHA."),
    suite: list[Path] = typer.Option([], "--suite", "-s", help=SUITE_HELP),
    perplexity_on: str | None = typer.Option(
        None, "--perplexity-on", help="Dataset or mixture (its validation split) to measure."
    ),
    reasoning: str = typer.Option("none,high", "--reasoning", help=REASONING_HELP),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest answer."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts generated together."),
    context: int | None = typer.Option(None, "--context", help="Perplexity window in tokens."),
    stride: int | None = typer.Option(None, "--stride", help="New tokens per perplexity window."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Measure perplexity on at most this many tokens."
    ),
    judge_endpoint: str | None = JUDGE_URL,
    judge_model: str | None = JUDGE_MODEL,
    judge_api_key: str | None = JUDGE_KEY,
    name: str | None = typer.Option(None, "--name", help="Name the eval artifact."),
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Evaluate a model on task suites (per reasoning effort) and held-out perplexity."""
    workspace = options(ctx).open()
    params = {
        "suites": _suites(suite),
        "reasoning": _efforts(reasoning),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "perplexity": {"context": context, "stride": stride, "max_tokens": max_tokens},
        "judge": _judge(judge_endpoint, judge_model, judge_api_key),
        "name": name,
    }
    inputs = {"model": model, **_perplexity_inputs(workspace, perplexity_on)}
    # A remote judge can change its grades: ask it again rather than reuse a result.
    result = run_stage(workspace, "eval.run", params, inputs, seed=seed, force=bool(judge_endpoint))
    _report(ctx, result, "eval.html")


@app.command("compare")
def compare(
    ctx: typer.Context,
    models: list[str] = typer.Argument(
        ..., help="Models to compare (two or more, or one plus --endpoint)."
    ),
    suite: list[Path] = typer.Option([], "--suite", "-s", help=SUITE_HELP),
    endpoint: list[str] = typer.Option(
        [], "--endpoint", help="Also compare a remote OpenAI-compatible API (base URL, repeatable)."
    ),
    endpoint_model: list[str] = typer.Option(
        [], "--endpoint-model", help="Model name for each --endpoint, in order."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar=API_KEY_ENV, help="API key for the endpoints."
    ),
    perplexity_on: str | None = typer.Option(None, "--perplexity-on", help="Dataset or mixture."),
    reasoning: str = typer.Option("none,high", "--reasoning", help=REASONING_HELP),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest answer."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts generated together."),
    judge_endpoint: str | None = JUDGE_URL,
    judge_model: str | None = JUDGE_MODEL,
    judge_api_key: str | None = JUDGE_KEY,
    name: str | None = typer.Option(None, "--name", help="Name the comparison artifact."),
) -> None:
    """Compare models side by side on the same suites: metrics and per-example answers."""
    if len(endpoint) != len(endpoint_model):
        raise InputError("give one --endpoint-model for each --endpoint")
    workspace = options(ctx).open()
    params = {
        "suites": _suites(suite),
        "reasoning": _efforts(reasoning),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "endpoints": [
            _endpoint(u, m, api_key) for u, m in zip(endpoint, endpoint_model, strict=True)
        ],
        "judge": _judge(judge_endpoint, judge_model, judge_api_key),
        "name": name,
    }
    inputs = {"models": models, **_perplexity_inputs(workspace, perplexity_on)}
    # Endpoints can change behind their URL: ask them again rather than reuse a result.
    remote = bool(endpoint or judge_endpoint)
    result = run_stage(workspace, "eval.compare", params, inputs, force=remote)
    report_run(ctx, result)
    if not options(ctx).json:
        artifact = result.outputs["comparison"]
        console.print(
            f"{result.metrics.get('examples_differing', 0)} answers differ; "
            f"report: {workspace.local_path(artifact) / 'compare.html'}"
        )


@app.command("endpoint")
def endpoint(
    ctx: typer.Context,
    url: str = typer.Argument(
        ..., help="Base URL of an OpenAI-compatible API, e.g. http://host:8000/v1."
    ),
    model: str = typer.Option(..., "--model", help="Model name the endpoint serves."),
    suite: list[Path] = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar=API_KEY_ENV, help=f"API key (or set {API_KEY_ENV})."
    ),
    reasoning: str = typer.Option("none", "--reasoning", help=REASONING_HELP),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest answer."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at once."),
    judge_endpoint: str | None = JUDGE_URL,
    judge_model: str | None = JUDGE_MODEL,
    judge_api_key: str | None = JUDGE_KEY,
    name: str | None = typer.Option(None, "--name", help="Name the eval artifact."),
) -> None:
    """Evaluate a remote model (a vendor's, or a served one) on the same suites."""
    workspace = options(ctx).open(create=True)
    params = {
        "suites": _suites(suite),
        "reasoning": _efforts(reasoning),
        "max_new_tokens": max_new_tokens,
        "endpoint": {**_endpoint(url, model, api_key), "concurrency": concurrency},
        "judge": _judge(judge_endpoint, judge_model, judge_api_key),
        "name": name,
    }
    result = run_stage(workspace, "eval.endpoint", params, force=True)
    _report(ctx, result, "eval.html")


@app.command("classifier")
def classifier(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Classifier model (trained with train classify)."),
    data: str = typer.Option(..., "--data", help="Labelled dataset (Mistral classifier format)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Inputs per forward pass."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per input; longer are cut."),
    name: str | None = typer.Option(None, "--name", help="Name the eval artifact."),
    seed: int = typer.Option(0, help="Seed recorded with the run."),
) -> None:
    """Evaluate a classifier: accuracy, macro-F1 and a confusion matrix per label set."""
    workspace = options(ctx).open()
    params = {"batch_size": batch_size, "seq_len": seq_len, "name": name}
    result = run_stage(
        workspace, "eval.classifier", params, {"model": model, "dataset": data}, seed=seed
    )
    _report(ctx, result, "eval.html")
