"""Erase production data about a person or a conversation: feedback rows, the request log
rows of the same completions, and everything trained on them.

    forgeml data forget-feedback --containing "jane@example.com" --reason "GDPR-1234"

`forgeml data forget` marks a dataset artifact and what derives from it. Production
data lives in registry rows instead, so it needs its own path:

1. select the feedback rows (by id, completion id, API key name, or text they contain);
2. find the datasets `data.from_feedback` built from any of them (each record names its
   `feedback_ids`) and forget them: erased, and every model trained on them blocked;
3. delete those feedback rows and the request log rows of the same completions (with
   `--key`, every request log row of that key; with `--containing`, also logged prompts
   that contain the text);
4. audit it, with counts and the reason but never the text searched for.

Rows are deleted, not marked: the point is that the text is gone. The datasets built from
them are erased as `forgeml data forget` erases (tombstones remain), and the models made
from them are refused wherever they would be used until retrained without the data
(see core/forget.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from forgeml.core.errors import InputError
from forgeml.core.forget import forget
from forgeml.core.schema import ApiKey, Artifact, Feedback, LineageEdge, RequestLog, Run
from forgeml.data.dataset import iter_records

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

FROM_FEEDBACK = "data.from_feedback"


@dataclass
class FeedbackErasure:
    feedback_ids: list[int] = field(default_factory=list)
    request_log_rows: int = 0
    forgotten: list[str] = field(default_factory=list)  # artifact refs now marked

    def as_dict(self) -> dict[str, Any]:
        return {
            "feedback_deleted": len(self.feedback_ids),
            "feedback_ids": self.feedback_ids,
            "request_log_deleted": self.request_log_rows,
            "forgotten": self.forgotten,
        }


def forget_feedback(
    workspace: Workspace,
    reason: str,
    *,
    ids: list[int] | None = None,
    completion_id: str | None = None,
    key_name: str | None = None,
    containing: str | None = None,
) -> FeedbackErasure:
    """Delete the matching feedback (and request log) rows; mark what was trained on them."""
    if not (ids or completion_id or key_name or containing):
        raise InputError(
            "say which feedback to forget",
            hint="--id, --completion, --key or --containing (they combine: all must match)",
        )
    if not reason.strip():
        raise InputError("a reason is required: the deletion request, e.g. a ticket id")
    key_ids = _key_ids(workspace, key_name) if key_name else None
    rows = _matching_feedback(workspace, ids, completion_id, key_ids, containing)
    erasure = FeedbackErasure(feedback_ids=[row.id for row in rows])
    for dataset in _datasets_built_from(workspace, set(erasure.feedback_ids)):
        plan = forget(workspace, dataset, f"{reason} (feedback erased)")
        erasure.forgotten += [artifact.ref for artifact in plan.marked]
    completions = {row.completion_id for row in rows}
    with workspace.registry.session() as session:
        doomed = _request_log_ids(session, completions, key_ids, containing)
        if erasure.feedback_ids:
            session.execute(delete(Feedback).where(Feedback.id.in_(erasure.feedback_ids)))
        if doomed:
            session.execute(delete(RequestLog).where(RequestLog.id.in_(doomed)))
        erasure.request_log_rows = len(doomed)
        selectors = {
            "ids": ids or None,
            "completion_id": completion_id,
            "key": key_name,
            "containing": "(text withheld)" if containing else None,
        }
        workspace.registry.audit(
            session,
            "feedback.forget",
            "registry:feedback",
            reason=reason,
            selectors={name: value for name, value in selectors.items() if value},
            feedback_deleted=len(erasure.feedback_ids),
            request_log_deleted=len(doomed),
            forgotten=erasure.forgotten,
        )
    return erasure


def _key_ids(workspace: Workspace, name: str) -> set[int]:
    """Every key of that name, revoked ones included: an app's data outlives its key."""
    with workspace.registry.session() as session:
        ids = set(session.scalars(select(ApiKey.id).where(ApiKey.name == name)))
    if not ids:
        raise InputError(f"no API key is named {name!r}", hint="list them with `forgeml keys list`")
    return ids


def _matching_feedback(
    workspace: Workspace,
    ids: list[int] | None,
    completion_id: str | None,
    key_ids: set[int] | None,
    containing: str | None,
) -> list[Feedback]:
    query = select(Feedback).order_by(Feedback.id)
    if ids:
        query = query.where(Feedback.id.in_(ids))
    if completion_id:
        query = query.where(Feedback.completion_id == completion_id)
    with workspace.registry.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
    if key_ids is not None:
        rows = [row for row in rows if (row.request or {}).get("api_key_id") in key_ids]
    if containing:
        rows = [
            row
            for row in rows
            if _contains(containing, row.request, row.response, row.comment, row.corrected_output)
        ]
    return rows


def _contains(text: str, *values: Any) -> bool:
    needle = text.casefold()
    return any(
        needle
        in (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).casefold()
        for value in values
        if value
    )


def _datasets_built_from(workspace: Workspace, feedback_ids: set[int]) -> list[Artifact]:
    """Outputs of `data.from_feedback` runs with a record made from any of these rows."""
    if not feedback_ids:
        return []
    with workspace.registry.session() as session:
        outputs = list(
            session.scalars(
                select(Artifact)
                .join(LineageEdge, LineageEdge.artifact_id == Artifact.id)
                .join(Run, LineageEdge.run_id == Run.id)
                .where(Run.stage == FROM_FEEDBACK, LineageEdge.direction == "output")
            )
        )
        session.expunge_all()
    found = []
    for artifact in outputs:
        directory = workspace.local_path(artifact)
        if not directory.is_dir():
            continue
        for record in iter_records(directory, ["metadata"]):
            used = (record.get("metadata") or {}).get("feedback_ids") or []
            if feedback_ids.intersection(used):
                found.append(artifact)
                break
    return found


def _request_log_ids(
    session, completions: set[str], key_ids: set[int] | None, containing: str | None
) -> list[int]:
    ids = set()
    if completions:
        ids |= set(
            session.scalars(select(RequestLog.id).where(RequestLog.completion_id.in_(completions)))
        )
    if key_ids is not None:
        ids |= set(session.scalars(select(RequestLog.id).where(RequestLog.api_key_id.in_(key_ids))))
    if containing:  # prompts are there only with --log-prompts
        for row in session.scalars(select(RequestLog)):
            if _contains(containing, row.request, row.response):
                ids.add(row.id)
    return sorted(ids)
