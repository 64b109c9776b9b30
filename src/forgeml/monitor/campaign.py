"""`monitor.campaign`: production traffic, selected and graded, becomes the next round's data.

    forgeml monitor campaign support-bot --since 7d --max-rating 2 --name round-4
    forgeml monitor campaign support-bot --since 1d --language de \\
        --judge-endpoint http://127.0.0.1:8000/v1 --judge-model big-judge --name german
    forgeml train rl --model support-bot@prod --data round-4 ...

Reads the request log of a model (prompts are there only when the server runs with
`--log-prompts`), keeps the answered conversations that match every filter (a feedback
rating at most `max_rating`, the prompt's language, a finish reason, a JSON answer that
did not parse) and, with a judge, those the judge scores at most `max_judge_score` of 5:
the traffic the model handles badly. The result is a prompt dataset (`{"messages"}`,
what train.rl and labelling read) whose every record names the request-log row it came
from. Rows erased by `data forget-feedback` are gone from the log and never used.

Like `data.from_feedback`, the rows are a registry source: their hash joins the run key,
so new traffic makes a new run and the same traffic reuses the finished one.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator
from sqlalchemy import select

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.hashing import sha256_json
from forgeml.core.schema import Feedback, RequestLog
from forgeml.core.stages import StageParams, stage
from forgeml.data.dataset import DatasetWriter
from forgeml.data.formats import check_record
from forgeml.monitor.usage import served_names

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

SOURCE_PATH = "registry:request_log"


class CampaignParams(StageParams):
    model: str = Field(description="Model as served: NAME, NAME@ALIAS or NAME:N.")
    since: datetime | None = Field(None, description="Traffic from (ISO; UTC unless it says).")
    until: datetime | None = Field(None, description="Traffic before (ISO).")
    max_rating: int | None = Field(
        None, ge=1, le=5, description="Only completions rated at most this (1..5; thumbs down 1)."
    )
    language: str | None = Field(None, description="Only prompts in this language (e.g. de).")
    finish_reason: str | None = Field(None, description="Only answers that ended so (length, ...).")
    json_invalid: bool = Field(
        False, description="Only answers asked for as JSON that did not parse."
    )
    judge_endpoint: str | None = Field(None, description="OpenAI-compatible /v1 of a judge model.")
    judge_model: str | None = Field(None, description="The judge model's name at that endpoint.")
    judge_rubric: str | None = Field(None, description="What the judge grades by (1-5).")
    max_judge_score: int = Field(
        2, ge=1, le=5, description="Keep answers the judge scores at most this."
    )
    max_records: int = Field(10_000, ge=1, le=1_000_000, description="Keep at most this many.")
    name: str | None = Field(None, description="Name the dataset.")

    @model_validator(mode="after")
    def _whole_judge(self) -> CampaignParams:
        if bool(self.judge_endpoint) != bool(self.judge_model):
            raise ValueError("a judge needs both --judge-endpoint and --judge-model")
        return self


def _selected(workspace: Workspace, params: CampaignParams) -> list[dict[str, Any]]:
    query = (
        select(RequestLog.id, RequestLog.completion_id, RequestLog.time, RequestLog.finish_reason,
               RequestLog.request, RequestLog.response)
        .where(RequestLog.status == 200, RequestLog.route == "chat.completions",
               RequestLog.model.in_(served_names(workspace, params.model)))
        .order_by(RequestLog.id)
    )  # fmt: skip
    if params.since:
        query = query.where(RequestLog.time >= params.since)
    if params.until:
        query = query.where(RequestLog.time < params.until)
    if params.finish_reason:
        query = query.where(RequestLog.finish_reason == params.finish_reason)
    rows = []
    with workspace.registry.reading() as session:
        ratings: dict[str, int] = {}
        if params.max_rating is not None:
            for completion_id, rating in session.execute(
                select(Feedback.completion_id, Feedback.rating).where(Feedback.rating.is_not(None))
            ):
                ratings[completion_id] = min(rating, ratings.get(completion_id, rating))
        for row in session.execute(query.execution_options(yield_per=5000)):
            request, signals = row.request or {}, (row.request or {}).get("signals") or {}
            if not request.get("messages"):
                continue  # logged without its text: nothing to learn from
            if (
                params.max_rating is not None
                and ratings.get(row.completion_id, 6) > params.max_rating
            ):
                continue
            if params.language and signals.get("language") != params.language:
                continue
            if params.json_invalid and signals.get("json_valid") is not False:
                continue
            outputs = (row.response or {}).get("outputs") or [""]
            rows.append({"log_id": row.id, "completion_id": row.completion_id,
                         "time": row.time.isoformat(), "messages": request["messages"],
                         "tools": request.get("tools") or None, "output": outputs[0]})  # fmt: skip
    return rows


def campaign_source(workspace: Workspace, params: CampaignParams) -> list[dict[str, Any]]:
    """The selected rows as a run source: their hash joins the run key like a file's."""
    rows = _selected(workspace, params)
    return [{"path": SOURCE_PATH, "sha256": sha256_json(rows), "size": len(rows)}]


def _judge(params: CampaignParams, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from forgeml.eval.endpoint import EndpointChatModel
    from forgeml.eval.judge import DEFAULT_RUBRIC, judge_prompt, parse_verdict
    from forgeml.eval.suite import ChatRequest

    judge = EndpointChatModel(params.judge_endpoint, params.judge_model, max_new_tokens=96)
    rubric = params.judge_rubric or DEFAULT_RUBRIC
    requests = [ChatRequest(judge_prompt(row, rubric)) for row in rows]
    kept = []
    for row, reply in zip(rows, judge.complete(requests), strict=True):
        score, reason = parse_verdict(reply.content)
        row["judge_score"], row["judge_reason"] = score, reason
        if score is not None and score <= params.max_judge_score:
            kept.append(row)
    return kept


@stage(
    "monitor.campaign",
    params=CampaignParams,
    outputs={"dataset": "dataset"},
    registry_sources=campaign_source,
)
def campaign(ctx: StageContext, params: CampaignParams):
    """Select (and grade) production conversations into a prompt dataset."""
    if bool(params.judge_endpoint) != bool(params.judge_model):
        raise InputError(
            "a judge needs both --judge-endpoint and --judge-model", field="judge_model"
        )
    rows = _selected(ctx.workspace, params)
    ctx.check_source_unchanged(
        SOURCE_PATH,
        sha256_json(rows),
        message="the request log changed while this campaign was being prepared",
        hint="Run it again (or close the window with --until): the new rows make it a new run.",
    )
    if not rows:
        raise InputError(
            f"no logged conversation of {params.model} matches the filters",
            hint="Campaigns read prompts from the request log, which keeps them only when the "
            "server runs with --log-prompts; check the window with `forgeml monitor usage`.",
        )
    selected = len(rows)
    if params.judge_endpoint:
        rows = _judge(params, rows)
    rows = rows[: params.max_records]
    writer = ctx.new_artifact("dataset")
    dataset = DatasetWriter(writer.path)
    skipped = 0
    for row in rows:
        record = {"messages": row["messages"], **({"tools": row["tools"]} if row["tools"] else {})}
        if check_record(record, "prompt")[1] is None:
            skipped += 1  # e.g. a conversation that ends with a tool result
            continue
        # Stored as data.ingest stores a prompt line, so train.rl reads it back as is.
        metadata = {"format": "campaign", "request_log_id": row["log_id"],
                    "completion_id": row["completion_id"], "time": row["time"],
                    "answer": row["output"]}  # fmt: skip
        if row["tools"]:
            metadata["tools"] = row["tools"]
        if "judge_score" in row:
            metadata.update(judge_score=row["judge_score"], judge_reason=row["judge_reason"])
        text = "\n\n".join(
            m["content"] for m in row["messages"] if isinstance(m.get("content"), str)
        )
        dataset.add({"id": f"campaign-{row['completion_id']}", "text": text,
                     "metadata": metadata, "messages": row["messages"]})  # fmt: skip
    summary = dataset.close()
    writer.meta.update(documents=summary["documents"], format="prompt", campaign=params.model)
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    ctx.set_metrics(
        selected=selected,
        kept=summary["documents"],
        skipped=skipped,
        judged=bool(params.judge_endpoint),
    )
    return {"dataset": artifact}
