"""Task suites: local JSONL files of prompts with references, run and scored per example.

    forgeml eval run my-model --suite support-qa.jsonl --reasoning none,high

One task per line:

    {"id"?: "q1",
     "prompt": "What is the capital of France?"  | "messages": [...chat messages...],
     "reference": "Paris",              # a string, a list of acceptable strings, a JSON
                                        # value (json tasks) or the expected tool call(s)
     "schema"?: {...JSON schema...},    # the answer must be JSON valid against it
     "tools"?: [...OpenAI tool definitions...],   # the answer must be a right tool call
     "labels"?: ["billing", "bug", ...],          # classification: the answer names one
     "rubric"?: "5: cites the policy ...",        # how a judge grades (see judge.py)
     "metric"?: "exact_match"}          # the score to report; inferred when absent

Every example is scored with the metrics that fit it (see `score`); its `score` is the
one named by `metric`, or, when absent: tool_call with tools, json_schema with a schema,
accuracy with labels, else exact_match. A suite is run once per reasoning effort
("none", "high"), so a model's thinking can be judged by what it changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from forgeml.core.errors import InputError
from forgeml.data.images import inline_images
from forgeml.eval import metrics
from forgeml.models.chat_template import render

TEXT_METRICS = ("exact_match", "token_f1", "rouge_l")
METRICS = (*TEXT_METRICS, "accuracy", "json_schema", "json_match", "tool_call", "judge")
_FIELDS = {"id", "prompt", "messages", "reference", "schema", "tools", "labels", "rubric", "metric"}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    reasoning_effort: str = "none"


@dataclass(frozen=True)
class Completion:
    content: str
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    raw: str = ""
    tokens: int | None = None
    finished: bool = True


class ChatModel(Protocol):
    """What a suite runs on: a local model (local.py) or a remote endpoint (endpoint.py)."""

    @property
    def supports_reasoning(self) -> bool: ...

    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...


@dataclass(frozen=True)
class Example:
    id: str
    messages: list[dict[str, Any]]
    reference: Any
    metric: str
    schema: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    labels: list[str] | None = None
    rubric: str | None = None
    image_hashes: tuple[str, ...] = ()  # sha256 of each image file a task points at


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    sha256: str
    examples: list[Example]


def _text_reference(reference: Any) -> bool:
    """A string, or a non-empty list of acceptable strings."""
    if isinstance(reference, list):
        return bool(reference) and all(isinstance(item, str) for item in reference)
    return isinstance(reference, str)


def _example(record: Any, line: int, path: Path) -> Example:
    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    if not isinstance(record, dict):
        raise fail("a task must be a JSON object")
    unknown = sorted(set(record) - _FIELDS)
    if unknown:
        raise fail(
            f"unknown field(s) {', '.join(unknown)}; a task has {', '.join(sorted(_FIELDS))}"
        )
    if ("prompt" in record) == ("messages" in record):
        raise fail('a task needs exactly one of "prompt" (a string) or "messages" (a list)')
    if "messages" in record:
        messages = record["messages"]
        if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)):
            raise fail("messages must be a non-empty list of chat messages", "messages")
        if messages[-1].get("role") not in ("user", "tool"):
            raise fail("messages must end with a user or tool turn: the model answers it")
    elif isinstance(record["prompt"], str):
        messages = [{"role": "user", "content": record["prompt"]}]
    else:
        raise fail("prompt must be a string", "prompt")
    tools, schema, labels = record.get("tools"), record.get("schema"), record.get("labels")
    if schema is not None:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise fail(f"not a valid JSON schema: {exc.message}", "schema") from exc
    if labels is not None and not (
        isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
    ):
        raise fail("labels must be a non-empty list of strings", "labels")
    metric = record.get("metric") or (
        "tool_call"
        if tools
        else "json_schema"
        if schema
        else "accuracy"
        if labels
        else "exact_match"
    )
    if metric not in METRICS:
        raise fail(f"unknown metric {metric!r}; one of {', '.join(METRICS)}", "metric")
    reference = record.get("reference")
    if metric == "accuracy" and (labels is None or reference not in labels):
        raise fail("a classification task needs labels and a reference that is one of them")
    if metric in TEXT_METRICS and not _text_reference(reference):
        raise fail(f"{metric} needs a string reference (or a list of them)", "reference")
    if not isinstance(record.get("rubric", ""), str):
        raise fail("rubric must be a string", "rubric")
    if metric == "tool_call" and not tools:
        raise fail("a tool_call task needs tools", "tools")
    image_hashes: tuple[str, ...] = ()
    if any(isinstance(m.get("content"), list) for m in messages if isinstance(m, dict)):
        try:  # image files beside the suite become data URLs, checked (data/images.py)
            messages, images = inline_images(messages, path.parent)
        except InputError as exc:
            raise fail(exc.detail, exc.field) from exc
        image_hashes = tuple(image["sha256"] for image in images)
    try:
        render(messages, tools, reasoning_effort="none")  # the chat template's own checks
    except InputError as exc:
        raise fail(exc.detail, exc.field) from exc
    return Example(
        id=str(record.get("id", line)),
        messages=messages,
        reference=reference,
        metric=metric,
        schema=schema,
        tools=tools,
        labels=labels,
        rubric=record.get("rubric"),
        image_hashes=image_hashes,
    )


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every problem names its file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the suite: {exc.strerror}", path=path) from exc
    examples = []
    for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc.msg}", path=path, line=line_number) from exc
        examples.append(_example(record, line_number, path))
    if not examples:
        raise InputError("the suite has no tasks", path=path)
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise InputError("task ids must be unique within a suite", path=path)
    digest = hashlib.sha256(data)
    for example in examples:  # a suite's hash covers the image files its tasks point at
        for image in example.image_hashes:
            digest.update(bytes.fromhex(image))
    return Suite(path.stem, str(path), digest.hexdigest(), examples)


def score(example: Example, completion: Completion) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, details) of one completion: every metric that applies to the task."""
    answer = completion.content.strip()
    details: dict[str, Any] = {}
    scores: dict[str, float] = {}
    if example.metric == "tool_call":
        result = metrics.tool_call_correctness(
            completion.tool_calls, example.tools or [], example.reference
        )
        details["calls"] = result.pop("calls")
        scores.update(result)
    elif example.metric in ("json_schema", "json_match"):
        validity = metrics.json_validity(answer, example.schema)
        details["error"] = validity.pop("error")
        scores.update(json_valid=validity["json_valid"], json_schema=validity["schema_valid"])
        if example.reference is not None:
            scores["json_match"] = metrics.json_match(answer, example.reference)
    elif example.metric == "accuracy":
        predicted = metrics.match_label(answer, example.labels or [])
        details["predicted_label"] = predicted
        scores["accuracy"] = float(predicted == example.reference)
    elif example.metric in TEXT_METRICS or _text_reference(example.reference):
        scores = {
            "exact_match": metrics.exact_match(answer, example.reference),
            "token_f1": metrics.token_f1(answer, example.reference),
            "rouge_l": metrics.rouge_l(answer, example.reference),
        }
    # A judged task's score comes later, from the judge (judge.py).
    if example.metric != "judge" and example.metric not in scores:
        raise InputError(f"task {example.id}: metric {example.metric} needs a reference")
    return scores, details


def run_suite(model: ChatModel, suite: Suite, efforts: list[str]) -> list[dict[str, Any]]:
    """Per-example records for every (example, reasoning effort), in suite order."""
    requests = [
        (effort, example, ChatRequest(example.messages, example.tools, effort))
        for effort in efforts
        for example in suite.examples
    ]
    completions = model.complete([request for _, _, request in requests])
    records = []
    for (effort, example, _), completion in zip(requests, completions, strict=True):
        scores, details = score(example, completion)
        records.append(
            {
                "suite": suite.name,
                "id": example.id,
                "reasoning_effort": effort,
                "messages": example.messages,
                "reference": example.reference,
                "metric": example.metric,
                "output": completion.content,
                "reasoning": completion.reasoning,
                # Without the random call ids, so the same outputs give the same bytes.
                "tool_calls": [
                    {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                    for c in completion.tool_calls
                ],
                "finished": completion.finished,
                "score": scores.get(example.metric),
                "scores": scores,
                **details,
            }
        )
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every score (and classification report) over a group of records."""
    sums: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record["score"] is not None:  # a judged task the judge has not graded
            sums["score"].append(record["score"])
        for name, value in record["scores"].items():
            sums[name].append(value)
    summary: dict[str, Any] = {
        "examples": len(records),
        "metrics": {name: sum(values) / len(values) for name, values in sums.items()},
    }
    classified = [r for r in records if r["metric"] == "accuracy"]
    if classified:
        report = metrics.classification_report(
            [r["reference"] for r in classified], [r.get("predicted_label") for r in classified]
        )
        summary["metrics"]["macro_f1"] = report["macro_f1"]
        summary["classification"] = report
    return summary


def flat_metrics(suites: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, float]:
    """One flat table of metrics for gates and comparisons.

    `exact_match` is over every example of every suite with reasoning off;
    `exact_match@high` with it on; `SUITE/exact_match` for one suite.
    """
    flat: dict[str, float] = {}
    efforts = sorted({r["reasoning_effort"] for r in records})
    for effort in efforts:
        suffix = "" if effort == "none" else f"@{effort}"
        chosen = [r for r in records if r["reasoning_effort"] == effort]
        for name, value in summarize(chosen)["metrics"].items():
            flat[name + suffix] = value
        if len(suites) > 1:
            for suite in suites:
                mine = [r for r in chosen if r["suite"] == suite["name"]]
                for name, value in summarize(mine)["metrics"].items():
                    flat[f"{suite['name']}/{name}{suffix}"] = value
    return flat
