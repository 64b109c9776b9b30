"""Mistral's classification requests and responses, field by field.

    POST /v1/classifications        {"model", "input": "text" | ["text", ...]}
    POST /v1/chat/classifications   {"model", "input": {"messages": [...]} | [{"messages"}, ...]}
    -> {"id", "model", "results": [{"<label set>": {"scores": {"<label>": p}}}], "usage"}

Bounds: at most MAX_INPUTS inputs a request and MAX_INPUT_CHARS characters an input;
longer inputs are cut at the model's token limit as in training.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from forgeml.serve.chat.protocol import ChatMessage

MAX_INPUTS = 256
MAX_INPUT_CHARS = 100_000
MAX_MESSAGES = 256


class ClassificationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(..., description="Text, or texts, to classify.")
    metadata: dict[str, Any] | None = None


class Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)


class ChatClassificationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: Conversation | list[Conversation]


class TargetResult(BaseModel):
    scores: dict[str, float]


class ClassificationUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ClassificationResponse(BaseModel):
    id: str
    model: str
    results: list[dict[str, TargetResult]]
    usage: ClassificationUsage
