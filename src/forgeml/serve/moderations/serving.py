"""Moderation with a served classifier: each input's label scores become categories.

The classification service does the work (limits, accounting, the `labels` drift
signal); this module only reshapes its scores. A category is true when the classifier
decides it (the top label of a single-label set, >= 0.5 in a multi-label one), and an
input is `flagged` when any decided category is not a negative class (NEGATIVE_LABELS):
a moderation classifier trained on {"safety": "ok" | "abuse" | "pii"} flags abuse and
PII, not ok.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from forgeml.models.classifier_config import decide
from forgeml.serve.classifications.serving import ClassificationService
from forgeml.serve.moderations.protocol import (
    NEGATIVE_LABELS,
    ModerationRequest,
    ModerationResponse,
    ModerationResult,
)

if TYPE_CHECKING:  # torch loads only with a classifier
    from forgeml.models.classifier import HeadLayout


async def moderate(body: ModerationRequest, request: Request) -> ModerationResponse:
    texts = [body.input] if isinstance(body.input, str) else [
        part if isinstance(part, str) else part.text for part in body.input
    ]  # fmt: skip
    service = ClassificationService(request.app.state)
    classified = await service.classify_texts(body.model, texts, request)
    return ModerationResponse(
        id=classified.id.replace("clf", "modr", 1),
        model=classified.model,
        results=[moderation_result(scores, classified.layout) for scores in classified.scores],
    )


def moderation_result(scores: dict[str, dict[str, float]], layout: HeadLayout) -> ModerationResult:
    """One input's label scores as moderation categories."""
    decided = decide(scores, layout)
    several = len(layout.sets) > 1
    categories, category_scores, flagged = {}, {}, False
    for label_set in layout.sets:
        chosen = decided[label_set.name]
        chosen = set(chosen) if isinstance(chosen, list) else {chosen}
        for label, score in scores[label_set.name].items():
            name = f"{label_set.name}/{label}" if several else label
            categories[name] = label in chosen
            category_scores[name] = score
            flagged |= label in chosen and label.lower() not in NEGATIVE_LABELS
    return ModerationResult(
        flagged=flagged,
        categories=categories,
        category_scores=category_scores,
        category_applied_input_types={name: ["text"] for name in categories},
    )
