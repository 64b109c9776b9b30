"""POST /v1/moderations (scope: inference)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from forgeml.serve.auth import require
from forgeml.serve.moderations.protocol import ModerationRequest, ModerationResponse
from forgeml.serve.moderations.serving import moderate

router = APIRouter()


@router.post("/v1/moderations", dependencies=[Depends(require("inference"))])
async def moderations(body: ModerationRequest, request: Request) -> ModerationResponse:
    return await moderate(body, request)
