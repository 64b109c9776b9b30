"""Data: datasets, assessment reports (their own HTML, served as written), what cleaning
rejected (feedback review is feedback.py)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import InputError
from forgeml.core.registry import forgotten_error

router = APIRouter(route_class=ConsoleRoute)
REJECTS_SHOWN = 50


@router.get("/ui/data")
def data(request: Request):
    registry = request.app.state.workspace.registry
    return page(
        request,
        "data.html",
        active="data",
        datasets=registry.list_artifacts("dataset")[::-1],
        reports=registry.list_artifacts("report")[::-1],
        rejects=registry.list_artifacts("rejects")[::-1],
    )


@router.get("/ui/data/report/{sha}/report.html")
def report(request: Request, sha: str):
    """An assessment's report.html, as `forgeml data assess` wrote it."""
    workspace = request.app.state.workspace
    artifact = workspace.registry.resolve(
        f"report/{sha}", kind="report", purpose="be shown in the console"
    )
    if artifact.forgotten_at is not None:
        raise forgotten_error(artifact.ref, artifact.forgotten_reason or "", "be shown")
    path = workspace.local_path(artifact) / "report.html"
    if not path.is_file():
        raise InputError(f"{artifact.ref} has no HTML report")
    return FileResponse(path, media_type="text/html")


@router.get("/ui/data/rejects/{sha}")
def rejects(request: Request, sha: str):
    from forgeml.data.rejects import SUMMARY_FILE, iter_rejects  # pyarrow: ~50 MB, on use

    workspace = request.app.state.workspace
    artifact = workspace.registry.resolve(
        f"rejects/{sha}", kind="rejects", purpose="be shown in the console"
    )
    if artifact.forgotten_at is not None:
        raise forgotten_error(artifact.ref, artifact.forgotten_reason or "", "be shown")
    directory = workspace.local_path(artifact)
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    rows = []
    for row in iter_rejects(directory):
        rows.append(row)
        if len(rows) >= REJECTS_SHOWN:
            break
    return page(
        request, "rejects.html", active="data", artifact=artifact, summary=summary, rows=rows
    )
