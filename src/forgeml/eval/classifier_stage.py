"""`eval.classifier`: a classifier model on a labelled dataset, as an `eval` artifact.

    forgeml eval classifier router-cls --data held-out-tickets

The eval.json has eval.run's shape (`format`, `subject`, `settings`, `metrics`,
`examples`, empty) plus `classifier`: per label set, accuracy and macro-F1 with per-label
precision/recall and the confusion matrix, and `classifier_examples` (input, gold,
predicted, scores), so gates (`min: {accuracy: 0.9}`), the
console and `eval compare` read it like any evaluation.
"""

from __future__ import annotations

import time
from typing import Any

from forgeml.core.context import StageContext
from forgeml.core.stages import stage
from forgeml.eval.classification import classifier_report
from forgeml.eval.params import ClassifierEvalParams
from forgeml.eval.stages import FORMAT, write_eval
from forgeml.models.classifier import Classifier
from forgeml.models.classifier_config import decide
from forgeml.train.classify_data import check_labels_known, load_classification

EXCERPT_CHARS = 300


@stage(
    "eval.classifier",
    params=ClassifierEvalParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"eval": "eval"},
)
def classifier(ctx: StageContext, params: ClassifierEvalParams):
    """Evaluate a classifier on labelled data: accuracy, macro-F1, confusion per label set."""
    started = time.monotonic()
    model = Classifier.load(ctx.input_path("model"), max_tokens=params.seq_len)
    records = load_classification(ctx.input_path("dataset"))
    check_labels_known(records, list(model.layout.sets), "evaluation")
    texts = [record.input_text() for record in records]
    scores = model.scores(texts, batch_size=params.batch_size)
    predictions = [decide(s, model.layout) for s in scores]
    report = classifier_report(records, predictions, model.layout)
    examples = [
        _example(record.where, text, record.labels, predicted, score)
        for record, text, predicted, score in zip(records, texts, predictions, scores, strict=True)
    ][: params.examples_kept]
    artifact = ctx.inputs["model"]
    data: dict[str, Any] = {
        "format": FORMAT,
        "subject": {"type": "model", "ref": artifact.ref, "sha256": artifact.sha256},
        "settings": {"task": "classification", "seq_len": params.seq_len},
        "metrics": report["metrics"],
        "perplexity": None,
        "suites": [],
        "notes": [],
        "classifier": report["sets"],
        "examples": [],  # suite answers; a classifier's rows are below
        "classifier_examples": examples,
    }
    if params.gates is not None:
        data["gates"] = params.gates.model_dump(exclude_defaults=True)
    return write_eval(ctx, params, data, started)


def _example(
    where: str, text: str, gold: dict, predicted: dict, scores: dict[str, Any]
) -> dict[str, Any]:
    right = all(
        (sorted(gold[name]) == predicted[name])
        if isinstance(predicted[name], list)
        else gold[name] == [predicted[name]]
        for name in gold
    )
    return {
        "source": where,
        "input": text[:EXCERPT_CHARS],
        "gold": gold,
        "predicted": predicted,
        "correct": right,
        "scores": {name: {k: round(v, 4) for k, v in s.items()} for name, s in scores.items()},
    }
