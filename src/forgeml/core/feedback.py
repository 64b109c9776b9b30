"""Production feedback rows: one shape for the server that writes them and the stage
(`data.from_feedback`) that turns them into training data.

A `feedback` row holds, besides its columns:

    request   {"messages": [...], "tools": [...], "source": "cache" | "request_log" | "client"}
    response  {"message": {assistant message}, "preferred_output": str | None,
               "scale": "thumbs" | "stars", "given_rating": int | None,
               "artifact": "model/<sha256 prefix>", "choice_index": int}

Ratings are stored on one 1..5 scale so they compare across clients: stars as given,
thumbs down as 1 and thumbs up as 5 (the given value and scale are kept in `response`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import InputError
from forgeml.core.hashing import sha256_json
from forgeml.core.schema import Feedback

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

RATING_SCALES: dict[str, dict[int, int]] = {
    "thumbs": {-1: 1, 1: 5},
    "stars": {1: 1, 2: 2, 3: 3, 4: 4, 5: 5},
}
GOOD_FROM = 4  # default lowest rating that counts as a good answer
BAD_UP_TO = 2  # highest rating that counts as a bad answer (3 is neutral)


def normalize_rating(rating: int | None, scale: str) -> int | None:
    """The rating on the stored 1..5 scale, or an `InputError` naming what is allowed."""
    if rating is None:
        return None
    allowed = RATING_SCALES.get(scale)
    if allowed is None:
        raise InputError(f"scale must be thumbs or stars, got {scale!r}", field="scale")
    if rating not in allowed:
        values = " or ".join(str(value) for value in allowed) if scale == "thumbs" else "1..5"
        raise InputError(
            f"rating must be {values} on the {scale} scale, got {rating}",
            field="rating",
            hint='Send {"rating": -1 | 1} for thumbs, or {"rating": 1..5, "scale": "stars"}.',
        )
    return allowed[rating]


@dataclass(frozen=True)
class FeedbackEntry:
    """One feedback row, decoded."""

    completion_id: str
    model: str
    messages: list[dict[str, Any]]  # the conversation the model answered
    output: dict[str, Any]  # the model's answer, an assistant message
    rating: int | None = None  # 1..5
    comment: str = ""
    corrected_output: str | None = None  # what the answer should have been
    preferred_output: str | None = None  # an answer the person liked better
    tools: list[dict[str, Any]] = field(default_factory=list)
    source: str = "client"
    scale: str = "thumbs"
    given_rating: int | None = None
    artifact: str = ""
    choice_index: int = 0
    api_key_id: int | None = None
    id: int | None = None
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Feedback) -> FeedbackEntry:
        request, response = row.request or {}, row.response or {}
        return cls(
            id=row.id,
            completion_id=row.completion_id,
            model=row.model,
            rating=row.rating,
            comment=row.comment,
            corrected_output=row.corrected_output,
            messages=list(request.get("messages") or []),
            tools=list(request.get("tools") or []),
            source=request.get("source", "client"),
            api_key_id=request.get("api_key_id"),
            output=dict(response.get("message") or {}),
            preferred_output=response.get("preferred_output"),
            scale=response.get("scale", "thumbs"),
            given_rating=response.get("given_rating"),
            artifact=response.get("artifact", ""),
            choice_index=response.get("choice_index", 0),
            created_at=_utc(row.created_at),
        )

    def to_row(self) -> Feedback:
        return Feedback(
            completion_id=self.completion_id,
            model=self.model,
            rating=self.rating,
            comment=self.comment,
            corrected_output=self.corrected_output,
            request={
                "messages": self.messages,
                "tools": self.tools,
                "source": self.source,
                "api_key_id": self.api_key_id,
            },
            response={
                "message": self.output,
                "preferred_output": self.preferred_output,
                "scale": self.scale,
                "given_rating": self.given_rating,
                "artifact": self.artifact,
                "choice_index": self.choice_index,
            },
        )

    def content(self) -> dict[str, Any]:
        """What a dataset built from this row depends on (for the snapshot hash)."""
        return {
            "id": self.id,
            "completion_id": self.completion_id,
            "model": self.model,
            "rating": self.rating,
            "corrected_output": self.corrected_output,
            "preferred_output": self.preferred_output,
            "messages": self.messages,
            "tools": self.tools,
            "output": self.output,
        }


def add_feedback(workspace: Workspace, entry: FeedbackEntry, **audit: Any) -> FeedbackEntry:
    """Store a feedback row and its audit entry in one transaction; returns it with its id."""
    registry = workspace.registry
    with registry.session() as session:
        row = entry.to_row()
        session.add(row)
        session.flush()
        registry.audit(
            session,
            "feedback.create",
            f"feedback/{row.id}",
            completion_id=entry.completion_id,
            model=entry.model,
            rating=entry.rating,
            corrected=entry.corrected_output is not None,
            **audit,
        )
        return FeedbackEntry.from_row(row)


def list_feedback(
    workspace: Workspace,
    *,
    model: str | None = None,
    since: datetime | None = None,
    completion_id: str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[FeedbackEntry]:
    """Feedback rows, oldest first, filtered; `after` pages on from a row id."""
    query = select(Feedback).order_by(Feedback.id)
    if model is not None:
        query = query.where(Feedback.model == model)
    if since is not None:
        query = query.where(Feedback.created_at >= _utc(since))
    if completion_id is not None:
        query = query.where(Feedback.completion_id == completion_id)
    if after is not None:
        query = query.where(Feedback.id > after)
    if limit is not None:
        query = query.limit(limit)
    with workspace.registry.session() as session:
        return [FeedbackEntry.from_row(row) for row in session.scalars(query)]


def snapshot_sha256(entries: list[FeedbackEntry]) -> str:
    """A hash of exactly the feedback a dataset is built from: new rows change it."""
    return sha256_json([entry.content() for entry in entries])


def _utc(when: datetime | None) -> datetime | None:
    """In UTC. SQLite hands datetimes back without their zone; every stored time is UTC,
    and a naive time given by a user is taken as UTC too."""
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
