"""/v1/batches (scope: admin, like the files they read and write)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from forgeml.serve.audit import api_key_details
from forgeml.serve.auth import require
from forgeml.serve.batches import store
from forgeml.serve.batches.protocol import BatchList, BatchObject, CreateBatchRequest
from forgeml.serve.batches.serving import batch_object, create_batch

router = APIRouter(dependencies=[Depends(require("admin"))])


@router.post("/v1/batches")
async def create(body: CreateBatchRequest, request: Request) -> BatchObject:
    workspace = request.app.state.workspace
    caller = request.state.caller
    batch = await asyncio.to_thread(
        create_batch, workspace, body, caller.key_id, api_key_details(request)
    )
    request.app.state.batches.wake()
    return batch_object(batch)


@router.get("/v1/batches")
async def list_batches(
    request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)
) -> BatchList:
    rows, more = await asyncio.to_thread(
        store.list_batches, request.app.state.workspace, after, limit
    )
    data = [batch_object(row) for row in rows]
    return BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


@router.get("/v1/batches/{batch_id}")
async def retrieve(batch_id: str, request: Request) -> BatchObject:
    batch = await asyncio.to_thread(store.get, request.app.state.workspace, batch_id)
    return batch_object(batch)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel(batch_id: str, request: Request) -> BatchObject:
    batch = await asyncio.to_thread(
        store.request_cancel, request.app.state.workspace, batch_id, api_key_details(request)
    )
    return batch_object(batch)
