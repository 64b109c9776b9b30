"""How well a classifier does on labelled records: per label set, accuracy, macro-F1 and
a confusion matrix (single-label sets), or exact-set accuracy and micro-F1 (multi-label).

    report = classifier_report(records, predictions, layout)
    report["metrics"]        # flat: accuracy, macro_f1, category/accuracy, ...
    report["sets"]["category"]["confusion"]   # {"gold": {"predicted": count}}

The flat `accuracy` and `macro_f1` are the means over the single-label sets (or over
every set's exact accuracy / micro-F1 when all are multi-label), so a gate can read
`accuracy` whatever the label sets are called.
"""

from __future__ import annotations

from typing import Any

from forgeml.eval.metrics import classification_report
from forgeml.models.classifier import HeadLayout
from forgeml.train.classify_data import ClassifyRecord, LabelSet


def classifier_report(
    records: list[ClassifyRecord], predictions: list[dict[str, Any]], layout: HeadLayout
) -> dict[str, Any]:
    sets: dict[str, dict[str, Any]] = {}
    for label_set in layout.sets:
        pairs = [
            (record.labels[label_set.name], prediction[label_set.name])
            for record, prediction in zip(records, predictions, strict=True)
            if label_set.name in record.labels
        ]
        if pairs:
            sets[label_set.name] = (
                _multi_label(label_set, pairs) if label_set.multi_label else _single(pairs)
            )
    metrics: dict[str, float] = {}
    for name, report in sets.items():
        metrics[f"{name}/accuracy"] = report["accuracy"]
        metrics[f"{name}/{'micro_f1' if 'micro_f1' in report else 'macro_f1'}"] = report.get(
            "micro_f1", report.get("macro_f1", 0.0)
        )
    single = [r for r in sets.values() if "macro_f1" in r] or list(sets.values())
    if single:
        metrics["accuracy"] = sum(r["accuracy"] for r in single) / len(single)
        metrics["macro_f1"] = sum(r.get("macro_f1", r.get("micro_f1", 0.0)) for r in single) / len(
            single
        )
    metrics["examples"] = len(records)
    return {"metrics": metrics, "sets": sets}


def _single(pairs: list[tuple[list[str], str]]) -> dict[str, Any]:
    gold = [labels[0] for labels, _ in pairs]
    predicted = [prediction for _, prediction in pairs]
    report = classification_report(gold, predicted)
    confusion: dict[str, dict[str, int]] = {}
    for g, p in zip(gold, predicted, strict=True):
        row = confusion.setdefault(g, {})
        row[p] = row.get(p, 0) + 1
    return {**report, "confusion": confusion, "examples": len(pairs)}


def _multi_label(label_set: LabelSet, pairs: list[tuple[list[str], list[str]]]) -> dict[str, Any]:
    exact = sum(1 for gold, predicted in pairs if sorted(gold) == sorted(predicted))
    tp = sum(len(set(gold) & set(predicted)) for gold, predicted in pairs)
    fp = sum(len(set(predicted) - set(gold)) for gold, predicted in pairs)
    fn = sum(len(set(gold) - set(predicted)) for gold, predicted in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": exact / len(pairs),
        "micro_f1": f1,
        "precision": precision,
        "recall": recall,
        "labels": list(label_set.labels),
        "examples": len(pairs),
    }
