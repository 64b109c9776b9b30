"""What a server needs to know of classifiers without loading torch: whether a model
directory holds one (to pick its engine) and how scores become labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgeml.models.classifier import HeadLayout

LABEL_SETS_KEY = "forgeml_label_sets"


def is_classifier(directory: Path) -> bool:
    """Whether a model directory holds a forgeml classifier (without loading weights)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get(LABEL_SETS_KEY))


def decide(scores: dict[str, dict[str, float]], layout: HeadLayout) -> dict[str, Any]:
    """The predicted label of each single-label set; the labels at >= 0.5 of a multi-label one."""
    out: dict[str, Any] = {}
    for label_set in layout.sets:
        values = scores[label_set.name]
        if label_set.multi_label:
            out[label_set.name] = sorted(label for label, p in values.items() if p >= 0.5)
        else:
            out[label_set.name] = max(values, key=lambda label: (values[label], label))
    return out
