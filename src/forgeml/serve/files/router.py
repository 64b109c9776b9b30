"""/v1/files (scope: admin): upload, list, get, download and delete files.

A `fine-tune` file is validated line by line on upload; a bad one is refused with a 400
naming the line and the problem ("train.jsonl:3: messages[0].role: ..."). The list
pages both ways: OpenAI's `after`/`limit`/`order` and Mistral's `page`/`page_size`.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from forgeml.core.errors import InputError
from forgeml.jobs import files
from forgeml.serve.audit import api_key_details
from forgeml.serve.auth import require
from forgeml.serve.files.protocol import FileDeleted, FileList, FileObject

router = APIRouter(dependencies=[Depends(require("admin"))])


@router.post("/v1/files")
async def upload_file(
    request: Request,
    file: UploadFile = File(...),
    purpose: str = Form("fine-tune"),  # OpenAI requires it; Mistral defaults to fine-tune
) -> FileObject:
    if file.size is not None and file.size > files.MAX_BYTES:  # before reading it into memory
        raise InputError(
            f"the file is {file.size} bytes; the limit is {files.MAX_BYTES}", field="file"
        )
    content = await file.read()
    workspace = request.app.state.pool.workspace
    stored = await asyncio.to_thread(
        files.store_file, workspace, file.filename or "", content, purpose, api_key_details(request)
    )
    return FileObject.of(stored)


@router.get("/v1/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    page: int | None = Query(None, ge=0, le=10**9),
    page_size: int = Query(100, ge=1, le=10000),
) -> FileList:
    workspace = request.app.state.pool.workspace
    stored = await asyncio.to_thread(files.list_files, workspace, purpose)
    if page is not None:  # Mistral: numbered pages, oldest first
        shown = stored[page * page_size : (page + 1) * page_size]
        more = (page + 1) * page_size < len(stored)
    else:  # OpenAI: a cursor, newest first by default
        ordered = stored[::-1] if order == "desc" else stored
        ids = [f.id for f in ordered]
        start = ids.index(after) + 1 if after in ids else 0
        shown = ordered[start : start + limit]
        more = start + limit < len(ordered)
    data = [FileObject.of(f) for f in shown]
    return FileList(
        data=data,
        has_more=more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        total=len(stored),
    )


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request) -> FileObject:
    workspace = request.app.state.pool.workspace
    return FileObject.of(await asyncio.to_thread(files.get_file, workspace, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> FileResponse:
    workspace = request.app.state.pool.workspace
    stored = await asyncio.to_thread(files.get_file, workspace, file_id)
    return FileResponse(
        workspace.local_path(stored),
        media_type="application/octet-stream",
        filename=stored.filename,
    )


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> FileDeleted:
    workspace = request.app.state.pool.workspace
    deleted = await asyncio.to_thread(
        files.delete_file, workspace, file_id, api_key_details(request)
    )
    return FileDeleted(id=deleted.id)
