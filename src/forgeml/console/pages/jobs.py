"""Jobs and files: upload a training file (checked line by line: a bad line is shown
with its number), create a fine-tuning job, watch its events, cancel it. The same
functions as /v1/files and /v1/fine_tuning/jobs (jobs/files.py, jobs/queue.py)."""

from __future__ import annotations

import re

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse

from forgeml.console.actions import admin_action
from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import InputError
from forgeml.jobs.files import list_files, store_file
from forgeml.jobs.queue import METHODS, cancel, get_job, is_finished, job_events, list_jobs, submit

router = APIRouter(route_class=ConsoleRoute)


def _jobs_page(request: Request, status: int = 200, upload_error: InputError | None = None,
               filename: str | None = None):  # fmt: skip
    workspace = request.app.state.workspace
    return page(
        request,
        "jobs.html",
        status,
        active="jobs",
        files=list_files(workspace, "fine-tune"),
        jobs=list_jobs(workspace),
        methods=METHODS,
        models=[r for r in workspace.registry.list_versions(kind="model")],
        upload_error=upload_error,
        upload_problems=_problems(upload_error),
        filename=filename,
    )


def _problems(error: InputError | None) -> list[str]:
    """files.py's message, one line per bad line: 'NAME:LINE: field: what'."""
    if error is None:
        return []
    text = error.detail.removeprefix("not a valid fine-tuning file: ")
    return re.split(r"; (?=\S+:\d+: )", text)


@router.get("/ui/jobs")
def jobs(request: Request):
    return _jobs_page(request)


@router.post("/ui/files")
async def upload(request: Request, file: UploadFile = File(...), csrf: str = Form("")):
    content = await file.read()
    with admin_action(request, csrf):
        try:
            stored = store_file(
                request.app.state.workspace, file.filename or "upload.jsonl", content, "fine-tune"
            )
        except InputError as error:  # shown on the form, next to the field, with its lines
            return _jobs_page(request, 400, upload_error=error, filename=file.filename)
    return RedirectResponse(f"/ui/jobs?uploaded={stored.id}#files", status_code=303)


@router.post("/ui/jobs")
def create_job(
    request: Request,
    base_model: str = Form(...),
    training_file: str = Form(...),
    method: str = Form("supervised"),
    suffix: str = Form(""),
    csrf: str = Form(""),
):
    with admin_action(request, csrf):
        job = submit(
            request.app.state.workspace,
            method=method,
            base_model=base_model,
            training_files=[{"file_id": training_file}],
            suffix=suffix or None,
        )
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


def _job_view(request: Request, job_id: str) -> dict:
    workspace = request.app.state.workspace
    job = get_job(workspace, job_id)
    return {
        "job": job,
        "events": job_events(workspace, job)[::-1],
        "live": not is_finished(job.status),
    }


@router.get("/ui/jobs/{job_id}")
def job(request: Request, job_id: str):
    return page(request, "job.html", active="jobs", **_job_view(request, job_id))


@router.get("/ui/jobs/{job_id}/live")
def job_live(request: Request, job_id: str):
    return page(request, "job_live.html", **_job_view(request, job_id))


@router.post("/ui/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str, csrf: str = Form("")):
    with admin_action(request, csrf):
        cancel(request.app.state.workspace, job_id)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)
