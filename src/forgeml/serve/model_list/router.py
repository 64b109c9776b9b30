"""GET /v1/models and /v1/models/{id} (scope: inference)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from forgeml.serve.auth import require
from forgeml.serve.model_list.protocol import ModelCard, ModelList
from forgeml.serve.served_models import ServedModel

router = APIRouter(dependencies=[Depends(require("inference"))])


def card(served: ServedModel) -> ModelCard:
    return ModelCard(
        id=served.id,
        created=served.created,
        root=served.artifact_ref,
        parent=served.parent.id if served.parent is not None else None,
        name=served.id,
        max_context_length=served.max_context,
    )


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[card(served) for served in request.app.state.pool.models])


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    served = await request.app.state.pool.get(model_id, getattr(request.state, "caller", None))
    request.state.model = served.id
    return card(served)
