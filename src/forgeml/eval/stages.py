"""The evaluation stages: `eval.run`, `eval.compare`, `eval.endpoint`.

    forgeml eval run my-model --suite qa.jsonl --perplexity-on docs-mix
    forgeml eval compare my-model:3 my-model:4 --suite qa.jsonl
    forgeml eval endpoint http://127.0.0.1:8000/v1 --model vendor-large --suite qa.jsonl

Each writes an `eval` artifact: `eval.json` + `eval.html` for one model (or endpoint),
`compare.json` + `compare.html` for a comparison. The model is an input, so lineage
links the evaluation to it (`forgeml lineage --down MODEL` lists it; promotion finds
it). Suite files are the stage's sources: their hashes join the run key, so an edited
suite is a new evaluation. The JSON holds results only (no timings or hosts, which go
to the run's metrics): the same model and suite give the same bytes. An optional judge
(a served model, see judge.py) adds a `judge` score to every example.

    eval.json
      format, subject {type: model, ref, sha256} | {type: endpoint, url, model}
      settings        the parameters that shaped the numbers
      metrics         flat: exact_match, token_f1, ..., exact_match@high,
                      SUITE/metric (several suites), loss, perplexity, bits_per_byte
      perplexity      {data {ref, sha256, kind, split}, loss, perplexity, bits_per_byte,
                       tokens, text_tokens, bytes, documents, context, stride, windows}
      suites          [{name, path, sha256, examples, results {none|high: summary}}]
      examples        one record per (task, reasoning effort): messages, reference,
                      metric, output, reasoning, tool_calls, score, scores, ...
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from forgeml.core.atomic import write_json_atomic, write_text_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.data.dataset import iter_texts
from forgeml.eval.compare import build_comparison
from forgeml.eval.endpoint import EndpointChatModel
from forgeml.eval.judge import judge_records
from forgeml.eval.local import LocalChatModel, load_for_eval
from forgeml.eval.params import (
    CompareParams,
    EndpointEvalParams,
    EndpointParams,
    EvalParams,
    PerplexityParams,
    SuiteParams,
)
from forgeml.eval.perplexity import measure
from forgeml.eval.report import compare_html, eval_html
from forgeml.eval.suite import ChatModel, Suite, flat_metrics, load_suite, run_suite, summarize

FORMAT = "forgeml.eval/1"

# --- shared steps ------------------------------------------------------------------------


def _load_suites(paths: list[Path]) -> list[Suite]:
    suites = [load_suite(path) for path in paths]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise InputError(
            f"suite names (file names without .jsonl) must differ: {', '.join(names)}",
            field="suites",
        )
    return suites


def _perplexity_input(ctx: StageContext) -> tuple[Any, Path, str] | None:
    """(artifact, directory of texts, split) to measure perplexity on, if any."""
    dataset, mixture = ctx.inputs.get("dataset"), ctx.inputs.get("mixture")
    if dataset is not None and mixture is not None:
        raise InputError("measure perplexity on a dataset or a mixture, not both")
    if dataset is not None:
        return dataset, ctx.artifact_path(dataset), "all"
    if mixture is not None:
        return mixture, ctx.artifact_path(mixture) / "validation", "validation"
    return None


def _perplexity(model, tokenizer, source, options: PerplexityParams) -> dict[str, Any]:
    artifact, directory, split = source
    result = measure(
        model,
        tokenizer,
        iter_texts(directory),
        context=options.context,
        stride=options.stride,
        batch_size=options.batch_size,
        max_tokens=options.max_tokens,
    )
    data = {"ref": artifact.ref, "sha256": artifact.sha256, "kind": artifact.kind, "split": split}
    return {"data": data, **result.to_dict()}


Judge = tuple[ChatModel, str]  # the judge model and its default rubric


def _judge(params: SuiteParams, suites: list[Suite]) -> Judge | None:
    """The judge to grade answers with, if the stage has one (and a check that tasks
    asking for one get it)."""
    judged = [f"{s.name}/{e.id}" for s in suites for e in s.examples if e.metric == "judge"]
    if params.judge is None:
        if judged:
            raise InputError(
                f"task {judged[0]} is graded by a judge, but no judge is configured",
                hint="pass --judge-endpoint URL --judge-model NAME",
            )
        return None
    # A judge writes a score and a sentence of reason: room for both.
    return _endpoint_model(params.judge, max_new_tokens=256), params.judge.rubric


def _run_suites(
    ctx: StageContext,
    chat: ChatModel,
    suites: list[Suite],
    efforts: list[str],
    judge: Judge | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(records, per-suite summaries, notes) of every suite at every supported effort."""
    notes = []
    if "high" in efforts and not chat.supports_reasoning:
        efforts = [e for e in efforts if e != "high"] or ["none"]
        notes.append("reasoning 'high' skipped: the tokenizer has no [THINK] token")
        ctx.warn(notes[-1])
    records, sections = [], []
    for suite in suites:
        ctx.log(f"suite {suite.name}: {len(suite.examples)} tasks x {len(efforts)} efforts")
        mine = run_suite(chat, suite, efforts)
        if judge is not None:
            rubrics = {(suite.name, e.id): e.rubric for e in suite.examples if e.rubric}
            judge_records(judge[0], mine, rubrics, judge[1])
        records += mine
        sections.append(
            {
                "name": suite.name,
                "path": Path(suite.path).name,  # where it lay: the run record, not here
                "sha256": suite.sha256,
                "examples": len(suite.examples),
                "results": {
                    effort: summarize([r for r in mine if r["reasoning_effort"] == effort])
                    for effort in efforts
                },
            }
        )
        ctx.raise_if_cancelled()
    return records, sections, notes


def _result(
    subject: dict[str, Any],
    settings: dict[str, Any],
    suites: list[dict[str, Any]],
    records: list[dict[str, Any]],
    perplexity: dict[str, Any] | None,
    notes: list[str],
) -> dict[str, Any]:
    metrics = flat_metrics(suites, records)
    if perplexity:
        metrics.update({k: perplexity[k] for k in ("loss", "perplexity", "bits_per_byte")})
    return {
        "format": FORMAT,
        "subject": subject,
        "settings": settings,
        "metrics": metrics,
        "perplexity": perplexity,
        "suites": suites,
        "notes": notes,
        "examples": records,
    }


def write_eval(ctx: StageContext, params: Any, data: dict[str, Any], started: float):
    writer = ctx.new_artifact("eval")
    write_json_atomic(writer.path / "eval.json", data)
    write_text_atomic(writer.path / "eval.html", eval_html(data))
    headline = {
        k: data["metrics"][k]
        for k in ("score", "perplexity", "bits_per_byte", "accuracy", "macro_f1")
        if k in data["metrics"]
    }
    writer.meta.update(type="evaluation", subject=data["subject"], **headline)
    ctx.set_metrics(**data["metrics"], seconds=round(time.monotonic() - started, 2))
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    return {"eval": artifact}


def _endpoint_model(options: EndpointParams, max_new_tokens: int) -> EndpointChatModel:
    key = os.environ.get(options.api_key_env) if options.api_key_env else None
    return EndpointChatModel(
        options.url,
        options.model,
        key,
        max_new_tokens=max_new_tokens,
        concurrency=options.concurrency,
        timeout=options.timeout,
    )


def _settings(params: SuiteParams, **extra: Any) -> dict[str, Any]:
    return {
        "reasoning": list(params.reasoning),
        "max_new_tokens": params.max_new_tokens,
        "batch_size": params.batch_size,
        "decoding": "greedy",
        **extra,
    }


# --- stages ------------------------------------------------------------------------------


@stage(
    "eval.run",
    params=EvalParams,
    inputs={"model": "model", "dataset": "dataset?", "mixture": "mixture?"},
    outputs={"eval": "eval"},
    sources=lambda p: p.suites,
)
def run(ctx: StageContext, params: EvalParams):
    """Evaluate a model: task suites at each reasoning effort, and held-out perplexity."""
    started = time.monotonic()
    suites = _load_suites(params.suites)
    source = _perplexity_input(ctx)
    if not suites and source is None:
        raise InputError(
            "nothing to evaluate: give a suite, or a dataset or mixture for perplexity",
            hint="forgeml eval run MODEL --suite tasks.jsonl --perplexity-on MIXTURE",
        )
    judge = _judge(params, suites)
    model, tokenizer = load_for_eval(ctx.input_path("model"))
    perplexity = _perplexity(model, tokenizer, source, params.perplexity) if source else None
    chat = LocalChatModel(model, tokenizer, params.max_new_tokens, params.batch_size)
    records, sections, notes = _run_suites(ctx, chat, suites, params.reasoning, judge)
    artifact = ctx.inputs["model"]
    subject = {"type": "model", "ref": artifact.ref, "sha256": artifact.sha256}
    settings = _settings(params, perplexity=params.perplexity.model_dump())
    data = _result(subject, settings, sections, records, perplexity, notes)
    if params.gates is not None:
        data["gates"] = params.gates.model_dump(exclude_defaults=True)
    return write_eval(ctx, params, data, started)


@stage(
    "eval.endpoint", params=EndpointEvalParams, outputs={"eval": "eval"}, sources=lambda p: p.suites
)
def endpoint(ctx: StageContext, params: EndpointEvalParams):
    """Evaluate a remote OpenAI-compatible endpoint on task suites."""
    started = time.monotonic()
    suites = _load_suites(params.suites)
    if not suites:
        raise InputError("give at least one suite to evaluate an endpoint on", field="suites")
    judge = _judge(params, suites)
    chat = _endpoint_model(params.endpoint, params.max_new_tokens)
    records, sections, notes = _run_suites(ctx, chat, suites, params.reasoning, judge)
    subject = {"type": "endpoint", "url": params.endpoint.url, "model": params.endpoint.model}
    data = _result(subject, _settings(params), sections, records, None, notes)
    return write_eval(ctx, params, data, started)


@stage(
    "eval.compare",
    params=CompareParams,
    inputs={"models": "model[]", "dataset": "dataset?", "mixture": "mixture?"},
    outputs={"comparison": "eval"},
    sources=lambda p: p.suites,
)
def compare(ctx: StageContext, params: CompareParams):
    """Compare models (and endpoints) side by side on the same suites."""
    started = time.monotonic()
    suites = _load_suites(params.suites)
    source = _perplexity_input(ctx)
    models = ctx.inputs["models"]
    if len(models) + len(params.endpoints) < 2:
        raise InputError("a comparison needs at least two models or endpoints")
    if not suites and source is None:
        raise InputError("nothing to compare on: give a suite, or a dataset or mixture")
    judge = _judge(params, suites)
    subjects, results, sections = [], [], []
    for artifact in models:
        # One model in memory at a time: a comparison of large models must still fit.
        model, tokenizer = load_for_eval(ctx.artifact_path(artifact))
        perplexity = _perplexity(model, tokenizer, source, params.perplexity) if source else None
        chat = LocalChatModel(model, tokenizer, params.max_new_tokens, params.batch_size)
        records, sections_i, notes = _run_suites(ctx, chat, suites, params.reasoning, judge)
        sections = sections or sections_i
        subjects.append(
            {
                "type": "model",
                "label": artifact.ref,
                "ref": artifact.ref,
                "sha256": artifact.sha256,
                "notes": notes,
            }
        )
        results.append(_result({}, {}, sections_i, records, perplexity, notes))
        del model, tokenizer, chat
        gc.collect()
    for options in params.endpoints:
        records, sections_i, notes = _run_suites(
            ctx, _endpoint_model(options, params.max_new_tokens), suites, params.reasoning, judge
        )
        sections = sections or sections_i
        subjects.append(
            {
                "type": "endpoint",
                "label": f"{options.model} @ {options.url}",
                "url": options.url,
                "model": options.model,
                "notes": notes,
            }
        )
        results.append(_result({}, {}, sections_i, records, None, notes))
    suite_info = [{k: s[k] for k in ("name", "path", "sha256", "examples")} for s in sections]
    data = build_comparison(subjects, results, _settings(params), suite_info)
    writer = ctx.new_artifact("eval")
    write_json_atomic(writer.path / "compare.json", data)
    write_text_atomic(writer.path / "compare.html", compare_html(data))
    writer.meta.update(type="comparison", subjects=[s["label"] for s in subjects])
    ctx.set_metrics(
        subjects=[s["label"] for s in subjects],
        examples_differing=data["examples_differing"],
        seconds=round(time.monotonic() - started, 2),
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    return {"comparison": artifact}


# The classifier evaluation lives in its own module; importing it registers it here.
from forgeml.eval import classifier_stage  # noqa: E402, F401
