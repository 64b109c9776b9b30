"""/v1/fine_tuning/jobs (scope: admin): create, list, get, cancel, start, pause, resume,
events, checkpoints.

Jobs are queued in the registry and run by `forgeml jobs worker` processes (the server
starts them; see job_workers.py). `start` is Mistral's (for `auto_start: false`, and for
a paused job, which Mistral's API shows as VALIDATED); `pause`, `resume`, `events` and
`checkpoints` are OpenAI's, and Mistral reads events and checkpoints inside the job object.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select

from forgeml.core.schema import FineTuningJob
from forgeml.core.workspace import Workspace
from forgeml.jobs import queue
from forgeml.serve.audit import api_key_details
from forgeml.serve.auth import require
from forgeml.serve.fine_tuning import protocol as p
from forgeml.serve.fine_tuning import serving
from forgeml.serve.fine_tuning.submission import create_job, is_mistral_body

router = APIRouter(dependencies=[Depends(require("admin"))])
JOBS = "/v1/fine_tuning/jobs"


def _workspace(request: Request) -> Workspace:
    return request.app.state.pool.workspace


async def _answer(request: Request, job: FineTuningJob, mistral: bool | None = None) -> Any:
    hardware = request.app.state.settings.plan_hardware
    view = await asyncio.to_thread(serving.load_view, _workspace(request), job, True, hardware)
    if mistral is None:
        mistral = serving.wants_mistral(request, job)
    return serving.mistral_job(view) if mistral else serving.openai_job(view)


@router.post(JOBS)
async def create(body: p.CreateJobRequest, request: Request) -> Any:
    job = await asyncio.to_thread(create_job, _workspace(request), body, api_key_details(request))
    if job.status == "queued":
        request.app.state.job_workers.ensure_started()
    return await _answer(request, job, mistral=is_mistral_body(body))


@router.get(JOBS)
async def list_jobs(
    request: Request,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
    page: int = Query(0, ge=0, le=10**9),
    page_size: int = Query(100, ge=1, le=1000),
) -> Any:
    workspace = _workspace(request)
    if serving.wants_mistral(request):  # numbered pages, newest first, with a total
        wanted = (page + 1) * page_size
        jobs = (await asyncio.to_thread(queue.list_jobs, workspace, wanted))[page * page_size :]
        total = await asyncio.to_thread(_count_jobs, workspace)
        views = await asyncio.to_thread(_views, workspace, jobs)
        data = [serving.mistral_job(view, details=False) for view in views]
        return p.MistralJobList(data=data, total=total)
    jobs = await asyncio.to_thread(queue.list_jobs, workspace, limit + 1, after)
    views = await asyncio.to_thread(_views, workspace, jobs[:limit])
    return p.OpenAIJobList(
        data=[serving.openai_job(view) for view in views], has_more=len(jobs) > limit
    )


def _views(workspace: Workspace, jobs: list[FineTuningJob]) -> list[serving.JobView]:
    return [serving.load_view(workspace, job, events=False) for job in jobs]


def _count_jobs(workspace: Workspace) -> int:
    with workspace.registry.session() as session:
        return session.scalar(select(func.count()).select_from(FineTuningJob)) or 0


@router.get(JOBS + "/{job_id}")
async def get(job_id: str, request: Request) -> Any:
    job = await asyncio.to_thread(queue.get_job, _workspace(request), job_id)
    return await _answer(request, job)


async def _change(request: Request, action, job_id: str, wakes_workers: bool = False) -> Any:
    """Cancel, start, pause or resume, as the calling key (audited); the job after."""
    job = await asyncio.to_thread(action, _workspace(request), job_id, api_key_details(request))
    if wakes_workers:
        request.app.state.job_workers.ensure_started()
    return await _answer(request, job)


@router.post(JOBS + "/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> Any:
    return await _change(request, queue.cancel, job_id)


@router.post(JOBS + "/{job_id}/start")
async def start(job_id: str, request: Request) -> Any:
    return await _change(request, queue.start, job_id, wakes_workers=True)


@router.post(JOBS + "/{job_id}/pause")
async def pause(job_id: str, request: Request) -> Any:
    return await _change(request, queue.pause, job_id)


@router.post(JOBS + "/{job_id}/resume")
async def resume(job_id: str, request: Request) -> Any:
    return await _change(request, queue.resume, job_id, wakes_workers=True)


@router.get(JOBS + "/{job_id}/events")
async def events(
    job_id: str,
    request: Request,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
) -> p.OpenAIEventList:
    workspace = _workspace(request)
    job = await asyncio.to_thread(queue.get_job, workspace, job_id)
    view = await asyncio.to_thread(serving.load_view, workspace, job)
    return serving.openai_events(view, after, limit)


@router.get(JOBS + "/{job_id}/checkpoints")
async def checkpoints(job_id: str, request: Request) -> p.OpenAICheckpointList:
    workspace = _workspace(request)
    job = await asyncio.to_thread(queue.get_job, workspace, job_id)
    view = await asyncio.to_thread(serving.load_view, workspace, job)
    return serving.openai_checkpoints(view)
