"""`data.from_feedback`: production feedback in, the next round's training data out.

    forgeml data from-feedback --model support-bot@prod --since 2026-01-01 --name round-3
    forgeml train preference --model support-bot@prod --data round-3-preference ...

Three datasets, each readable by its training stage as it is (see feedback_records.py):
`preference` (train.preference), `sft` (train.sft) and `prompts` (train.rl).

The feedback rows are read from the registry, not from an artifact, so the run key
covers them through a registry source: the hash of exactly the rows the filters select.
New feedback is a new key (a new run); the same feedback reuses the finished run. The
hash is also in every output's metadata (`feedback_sha256`), so a model trained on one
of them traces back to the feedback snapshot it learned from.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.feedback import GOOD_FROM, FeedbackEntry, list_feedback, snapshot_sha256
from forgeml.core.stages import StageParams, stage
from forgeml.data.dataset import DatasetWriter
from forgeml.data.feedback_records import FORMAT_OF, build_records

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

SOURCE_PATH = "registry:feedback"
MAX_WARNINGS = 50


class FromFeedbackParams(StageParams):
    min_rating: int = Field(
        default=GOOD_FROM,
        ge=3,
        le=5,
        description="Ratings (1..5; thumbs up is 5, down is 1) from which an answer is good; "
        "2 or less is bad.",
    )
    model: str | None = Field(
        default=None, description="Only feedback on this model, as requests named it."
    )
    since: datetime | None = Field(
        default=None,
        description="Only feedback given from this date or time on (ISO; UTC unless it says).",
    )
    reference_only: bool = Field(
        default=False,
        description="Keep only prompts with a correction (a reference) in the RL dataset, "
        "for rewards that compare with it.",
    )
    name: str | None = Field(
        default=None, description="Name the datasets NAME-preference, NAME-sft and NAME-prompts."
    )
    include_client_conversations: bool = Field(
        default=False,
        description="Also use feedback whose conversation the client sent (the server no "
        "longer had its text, so cannot vouch the model said it); left out by default.",
    )


def _entries(workspace: Workspace, params: FromFeedbackParams) -> list[FeedbackEntry]:
    entries = list_feedback(workspace, model=params.model, since=params.since)
    if params.include_client_conversations:
        return entries
    return [entry for entry in entries if entry.source != "client"]


def feedback_source(workspace: Workspace, params: FromFeedbackParams) -> list[dict[str, Any]]:
    """The feedback snapshot as a run source: it joins the run key like a file's hash."""
    entries = _entries(workspace, params)
    return [{"path": SOURCE_PATH, "sha256": snapshot_sha256(entries), "size": len(entries)}]


@stage(
    "data.from_feedback",
    params=FromFeedbackParams,
    outputs={"preference": "dataset", "sft": "dataset", "prompts": "dataset"},
    registry_sources=feedback_source,
)
def from_feedback(ctx: StageContext, params: FromFeedbackParams):
    """Turn production feedback into preference, SFT and RL prompt datasets."""
    entries = _entries(ctx.workspace, params)
    snapshot = snapshot_sha256(entries)
    ctx.check_source_unchanged(
        SOURCE_PATH,
        snapshot,
        message="feedback arrived while this run was being prepared",
        hint="Run it again: the new feedback makes it a new run.",
    )
    if not entries:
        raise InputError(
            "no feedback matches" + _filters(params),
            hint="Feedback is given with POST /v1/feedback on a running `forgeml serve`; "
            "list it with GET /v1/feedback (admin key). Feedback whose conversation the "
            "client sent counts only with include_client_conversations "
            "(--include-client-conversations).",
        )
    built = build_records(entries, params.min_rating, params.reference_only)
    for skipped in built.skipped[:MAX_WARNINGS]:
        ctx.warn(f"feedback {skipped['feedback_ids']} left out of {skipped['dataset']}", **skipped)
    counts = {role: len(getattr(built, role)) for role in FORMAT_OF}
    outputs = {
        role: _write(ctx, params, role, getattr(built, role), snapshot, len(entries))
        for role in FORMAT_OF
    }
    for role, count in counts.items():
        if count == 0:
            ctx.warn(f"the {role} dataset is empty: no feedback of that kind yet")
    ctx.set_metrics(
        feedback=len(entries),
        feedback_sha256=snapshot,
        preference_pairs=counts["preference"],
        sft_examples=counts["sft"],
        prompts=counts["prompts"],
        references=sum("reference" in row["metadata"].get("fields", {}) for row in built.prompts),
        skipped=len(built.skipped),
    )
    return outputs


def _write(
    ctx: StageContext,
    params: FromFeedbackParams,
    role: str,
    rows: list[dict[str, Any]],
    snapshot: str,
    feedback: int,
):
    writer = ctx.new_artifact("dataset")
    dataset = DatasetWriter(writer.path)
    dataset.extend(rows)
    summary = dataset.close(feedback_sha256=snapshot, feedback_rows=feedback)
    writer.meta.update(
        documents=summary["documents"],
        characters=summary["characters"],
        format=FORMAT_OF[role],
        feedback_sha256=snapshot,
        feedback_rows=feedback,
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, f"{params.name}-{role}" if params.name else None)
    return artifact


def _filters(params: FromFeedbackParams) -> str:
    parts = []
    if params.model:
        parts.append(f"model {params.model!r}")
    if params.since:
        parts.append(f"since {params.since.isoformat()}")
    return f" ({', '.join(parts)})" if parts else ""
