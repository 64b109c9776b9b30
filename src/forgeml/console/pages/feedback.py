"""Feedback review: read rated answers, correct one, and turn the feedback into datasets.

A correction is a new feedback row (the reviewer's), not an edit: the person's rating
and the model's answer stay as they were given, and the audit log names the reviewer's
key. "Make datasets" runs `data.from_feedback`, the stage `forgeml data from-feedback`
runs, so the datasets have the same lineage and the same content hash either way.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from forgeml.console.actions import admin_action
from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.feedback import FeedbackEntry, add_feedback, list_feedback
from forgeml.core.runs import run_stage

router = APIRouter(route_class=ConsoleRoute)
SHOWN = 200
MAX_CORRECTION_CHARS = 20_000


@router.get("/ui/feedback")
def feedback(request: Request, model: str | None = None, made: str | None = None):
    entries = list_feedback(request.app.state.workspace, model=model or None)[::-1][:SHOWN]
    return page(
        request, "feedback.html", active="feedback", entries=entries, model=model or "", made=made
    )


@router.post("/ui/feedback/{feedback_id}/correct")
def correct(
    request: Request, feedback_id: int, correction: str = Form(""), csrf: str = Form("")
) -> RedirectResponse:
    text = correction.strip()
    workspace = request.app.state.workspace
    with admin_action(request, csrf):
        if not text or len(text) > MAX_CORRECTION_CHARS:
            raise InputError(
                f"a correction is 1 to {MAX_CORRECTION_CHARS:,} characters "
                f"(this one: {len(text):,})",
                field="correction",
                hint="Write what the answer should have been.",
            )
        original = _entry(workspace, feedback_id)
        add_feedback(
            workspace,
            FeedbackEntry(
                completion_id=original.completion_id,
                model=original.model,
                messages=original.messages,
                output=original.output,
                corrected_output=text,
                comment=f"correction of feedback {feedback_id} in the console",
                tools=original.tools,
                source=original.source,  # the conversation is as trustworthy as it was
                artifact=original.artifact,
                choice_index=original.choice_index,
            ),
            corrects=feedback_id,
        )
    return RedirectResponse(f"/ui/feedback?model={original.model}", status_code=303)


@router.post("/ui/feedback/datasets")
def make_datasets(
    request: Request,
    model: str = Form(""),
    name: str = Form(""),
    min_rating: int = Form(4),
    csrf: str = Form(""),
):
    params = {"model": model.strip() or None, "name": name.strip() or None}
    params["min_rating"] = min_rating
    with admin_action(request, csrf):
        result = run_stage(request.app.state.workspace, "data.from_feedback", params)
    made = ", ".join(artifact.ref for artifact in result.outputs.values())
    return page(
        request,
        "feedback_datasets.html",
        active="feedback",
        outputs=result.outputs,
        metrics=result.metrics,
        reused=result.reused,
        made=made,
    )


def _entry(workspace, feedback_id: int) -> FeedbackEntry:
    for entry in list_feedback(workspace, after=feedback_id - 1, limit=1):
        if entry.id == feedback_id:
            return entry
    raise NotFoundError(f"there is no feedback {feedback_id}", hint="Pick one from Feedback.")
