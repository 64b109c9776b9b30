"""The moderations endpoint's requests and responses (OpenAI's and Mistral's shape).

    POST /v1/moderations  {"model", "input": "text" | ["text", ...] | [{"type": "text", ...}]}
    -> {"id": "modr-...", "model", "results": [{"flagged", "categories": {"<name>": bool},
        "category_scores": {"<name>": p}, "category_applied_input_types": {"<name>": ["text"]}}]}

A forgeml classifier answers it: its labels are the categories (`set/label` when the
model has several label sets, as OpenAI names `harassment/threatening`). Mistral's
response is the same without `flagged`, which its client ignores.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A single-label set's answer that means "nothing to flag" (any case): the usual names
# of a moderation classifier's negative class. Any other decided category flags.
NEGATIVE_LABELS = frozenset({"none", "safe", "ok", "clean", "benign", "negative", "neutral"})


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[TextPart] = Field(
        ..., description="Text, texts, or OpenAI's text parts (images are not moderated)."
    )


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
