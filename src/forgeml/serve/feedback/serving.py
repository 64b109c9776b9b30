"""Feedback: a rating or correction of one completion, stored with the conversation it rates.

The conversation comes from, in order: the in-memory cache of recent completions
(recent_completions.py), the request log when prompts were logged, or the request body
(for a completion this server no longer remembers the text of). Feedback is only taken
for a completion the request log (or the cache) holds, made by the caller's key (or
rated by an admin key), so a leaked or made-up completion id neither reveals a
conversation nor lets anyone hand in one of their own as production traffic. A
conversation the client sent is stored with `source: client` and left out of
`data from-feedback` unless asked for (`--include-client-conversations`): the server
cannot vouch that the model said it. The feedback row keeps the conversation even when
`log_prompts` is off: rating an answer is handing it in for training.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from forgeml.core.errors import InputError
from forgeml.core.feedback import FeedbackEntry, add_feedback, list_feedback, normalize_rating
from forgeml.core.schema import RequestLog
from forgeml.core.workspace import Workspace
from forgeml.data.formats import Message, check_record
from forgeml.data.formats.normalize import message_dict
from forgeml.models import chat_template as ct
from forgeml.serve.auth import Caller
from forgeml.serve.errors import APIError
from forgeml.serve.feedback import protocol as p


@dataclass(frozen=True)
class Conversation:
    model: str
    artifact: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    outputs: list[str]  # generated texts, one per choice
    api_key_id: int | None
    source: str


class FeedbackService:
    def __init__(self, app_state: Any) -> None:
        self.state = app_state  # workspace, settings, recent_completions

    @property
    def workspace(self) -> Workspace:
        return self.state.workspace

    async def create(self, body: p.FeedbackRequest, caller: Caller) -> p.FeedbackObject:
        rating = normalize_rating(body.rating, body.scale)
        if rating is None and not (
            body.corrected_output or body.preferred_output or body.comment.strip()
        ):
            raise InputError(
                "feedback needs a rating, a corrected_output, a preferred_output or a comment",
                field="rating",
            )
        found, made_by_caller = await self._remembered(body.completion_id, caller)
        if not made_by_caller:
            raise APIError(
                404,
                f"no completion {body.completion_id!r} made by this key is in this server's "
                "request log: feedback is taken for chat completions the server made, by the "
                "key that asked for them (or an admin key), within the request log's retention.",
                param="completion_id",
                code="completion_not_found",
            )
        if found is not None:
            if body.choice_index >= len(found.outputs):
                raise InputError(
                    f"the completion has {len(found.outputs)} choice(s); "
                    f"choice_index {body.choice_index} does not exist",
                    field="choice_index",
                )
            output = assistant_message(found.outputs[body.choice_index])
        else:
            found, output = self._sent(body)
        entry = FeedbackEntry(
            completion_id=body.completion_id,
            model=found.model,
            artifact=found.artifact,
            messages=found.messages,
            tools=found.tools,
            output=output,
            rating=rating,
            scale=body.scale,
            given_rating=body.rating,
            comment=body.comment,
            corrected_output=body.corrected_output,
            preferred_output=body.preferred_output,
            choice_index=body.choice_index,
            source=found.source,
            api_key_id=caller.key_id,
        )
        stored = await asyncio.to_thread(
            add_feedback,
            self.workspace,
            entry,
            api_key=caller.prefix,
            api_key_name=caller.name,
            api_key_id=caller.key_id,
        )
        self.state.metrics.feedback.labels(found.model, str(rating or "none")).inc()
        return feedback_object(stored)

    async def list(
        self, limit: int, after: int | None, model: str | None, completion_id: str | None
    ) -> p.FeedbackList:
        entries = await asyncio.to_thread(
            list_feedback,
            self.workspace,
            model=model,
            completion_id=completion_id,
            after=after,
            limit=limit + 1,
        )
        page = entries[:limit]
        return p.FeedbackList(
            data=[feedback_object(entry, conversation=True) for entry in page],
            has_more=len(entries) > limit,
            last_id=page[-1].id if page else None,
        )

    # --- where the conversation comes from -------------------------------------------------

    async def _remembered(
        self, completion_id: str, caller: Caller
    ) -> tuple[Conversation | None, bool]:
        """(the conversation if the server has its text, whether the caller may rate it)."""
        recent = self.state.recent_completions.get(completion_id)
        if recent is not None:
            found = Conversation(
                recent.model,
                recent.artifact,
                recent.messages,
                recent.tools,
                recent.outputs,
                recent.api_key_id,
                "cache",
            )
            key_id: int | None = recent.api_key_id
        else:
            known, key_id, found = await asyncio.to_thread(_logged, self.workspace, completion_id)
            if not known:
                return None, False
        if not (caller.allows("admin") or key_id == caller.key_id):
            return None, False
        return found, True

    def _sent(self, body: p.FeedbackRequest) -> tuple[Conversation, dict[str, Any]]:
        """The conversation as the client sent it, checked like training data."""
        if body.messages is None or body.output is None:
            seconds = int(self.state.settings.feedback_cache_seconds)
            raise APIError(
                404,
                f"the text of completion {body.completion_id!r} is no longer known to this "
                f"server: completions are remembered for {seconds} seconds by the server that "
                "made them (longer in the request log with log_prompts on). Send the "
                "conversation along with the feedback: `messages` (and `tools`) as in the chat "
                "request, `output` as the model's answer, and `model`.",
                param="completion_id",
                code="completion_not_found",
            )
        record: dict[str, Any] = {"messages": body.messages}
        if body.tools:
            record["tools"] = body.tools
        _, canonical, problems = check_record(record, "prompt")
        if canonical is None:
            raise InputError(problems[0].message, field=problems[0].field or "messages")
        output = {"role": "assistant", "content": body.output}
        if isinstance(body.output, dict):
            output = {"role": "assistant", **body.output}
        try:
            message = Message.model_validate(output)
        except ValueError as error:
            raise InputError(f"not an assistant message: {error}", field="output") from error
        if message.role != "assistant":
            raise InputError("the output must be an assistant message", field="output")
        conversation = Conversation(
            body.model or "",
            "",
            canonical["prompt"],
            canonical.get("tools", []),
            [],
            None,
            "client",
        )
        return conversation, message_dict(message)


def _logged(
    workspace: Workspace, completion_id: str
) -> tuple[bool, int | None, Conversation | None]:
    """(in the request log, the key that made it, the conversation if its text was kept)."""
    with workspace.registry.session() as session:
        row = session.scalars(
            select(RequestLog).where(
                RequestLog.completion_id == completion_id, RequestLog.route == "chat.completions"
            )
        ).first()
    if row is None:
        return False, None, None
    if "messages" not in row.request or "outputs" not in row.response:
        return True, row.api_key_id, None
    conversation = Conversation(
        row.model,
        row.request.get("artifact", ""),
        row.request["messages"],
        row.request.get("tools") or [],
        row.response["outputs"],
        row.api_key_id,
        "request_log",
    )
    return True, row.api_key_id, conversation


def assistant_message(text: str) -> dict[str, Any]:
    """A generated turn (control tokens included) as an OpenAI assistant message."""
    content, reasoning, calls = ct.parse_assistant_output(text)
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


def feedback_object(entry: FeedbackEntry, conversation: bool = False) -> p.FeedbackObject:
    shown = {"messages": entry.messages, "tools": entry.tools, "output": entry.output}
    return p.FeedbackObject(
        id=entry.id,
        created_at=int(entry.created_at.timestamp()) if entry.created_at else 0,
        completion_id=entry.completion_id,
        model=entry.model,
        rating=entry.rating,
        scale=entry.scale,
        given_rating=entry.given_rating,
        comment=entry.comment,
        corrected_output=entry.corrected_output,
        preferred_output=entry.preferred_output,
        source=entry.source,
        **(shown if conversation else {}),
    )
