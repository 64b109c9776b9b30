"""POST /v1/feedback (scope: inference) and GET /v1/feedback (scope: admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from forgeml.serve.auth import Caller, require
from forgeml.serve.feedback.protocol import FeedbackList, FeedbackObject, FeedbackRequest
from forgeml.serve.feedback.serving import FeedbackService

router = APIRouter()


@router.post("/v1/feedback")
async def create_feedback(
    body: FeedbackRequest, request: Request, caller: Caller = Depends(require("inference"))
) -> FeedbackObject:
    return await FeedbackService(request.app.state).create(body, caller)


@router.get("/v1/feedback", dependencies=[Depends(require("admin"))])
async def list_feedback(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(
        None, ge=0, le=2**63 - 1, description="Page on from this feedback id."
    ),
    model: str | None = None,
    completion_id: str | None = None,
) -> FeedbackList:
    return await FeedbackService(request.app.state).list(limit, after, model, completion_id)
