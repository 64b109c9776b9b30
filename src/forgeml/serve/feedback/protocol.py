"""POST /v1/feedback and GET /v1/feedback: forgeml's own endpoint (OpenAI has none), in
the same style as the rest of the API.

    POST /v1/feedback
    {"completion_id": "chatcmpl-...", "rating": -1, "corrected_output": "The right answer"}
    {"completion_id": "chatcmpl-...", "rating": 4, "scale": "stars", "comment": "close"}

`rating` is a thumbs rating (-1 bad, 1 good) unless `"scale": "stars"` makes it 1..5.
`corrected_output` is what the answer should have been; `preferred_output` an answer the
person liked better (say, another choice). For a completion the server no longer
remembers, send the conversation along: `messages` (and `tools`) as in the chat request,
`output` as the model's answer (text or an assistant message) and `model`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=64)
    rating: int | None = None
    scale: Literal["thumbs", "stars"] = "thumbs"
    comment: str = Field("", max_length=10_000)
    corrected_output: str | None = None
    preferred_output: str | None = None
    choice_index: int = Field(0, ge=0, description="Which choice is rated, when n > 1.")
    # Only read when the server does not remember the completion:
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    output: str | dict[str, Any] | None = None
    model: str | None = None


class FeedbackObject(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    created_at: int
    completion_id: str
    model: str
    rating: int | None  # on the stored 1..5 scale (thumbs down 1, up 5)
    scale: str
    given_rating: int | None  # as sent
    comment: str
    corrected_output: str | None
    preferred_output: str | None
    source: str  # where the conversation came from: cache, request_log or client
    # The conversation, in the admin listing only:
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    output: dict[str, Any] | None = None


class FeedbackList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FeedbackObject]
    has_more: bool
    last_id: int | None = None
