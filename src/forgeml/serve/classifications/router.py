"""POST /v1/classifications and /v1/chat/classifications (scope: inference)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from forgeml.serve.auth import require
from forgeml.serve.classifications.protocol import (
    ChatClassificationRequest,
    ClassificationRequest,
    ClassificationResponse,
)
from forgeml.serve.classifications.serving import ClassificationService

router = APIRouter()


@router.post("/v1/classifications", dependencies=[Depends(require("inference"))])
async def classify(body: ClassificationRequest, request: Request) -> ClassificationResponse:
    return await ClassificationService(request.app.state).texts(body, request)


@router.post("/v1/chat/classifications", dependencies=[Depends(require("inference"))])
async def classify_chat(
    body: ChatClassificationRequest, request: Request
) -> ClassificationResponse:
    return await ClassificationService(request.app.state).chats(body, request)
