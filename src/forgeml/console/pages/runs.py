"""Runs: status, events, loss curves and metrics, live while a run trains (htmx polls
the fragment every two seconds until the run ends); cancel, as `forgeml runs cancel`."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from forgeml.console.actions import admin_action
from forgeml.console.render import ConsoleRoute, page
from forgeml.core.runs import TERMINAL, get_run, request_cancel
from forgeml.core.schema import Run, RunEvent

router = APIRouter(route_class=ConsoleRoute)
EVENTS_SHOWN = 50


@router.get("/ui/runs")
def runs(request: Request, status: str | None = None):
    query = select(Run).order_by(Run.created_at.desc()).limit(200)
    if status:
        query = query.where(Run.status == status)
    with request.app.state.workspace.registry.reading() as session:
        rows = list(session.scalars(query))
    return page(request, "runs.html", active="runs", runs=rows, status=status)


def series(events: list[RunEvent]) -> dict[str, Any]:
    """Metric events as uPlot columns: steps on x, one series per metric (None: gaps)."""
    points = [e for e in events if e.kind == "metric" and e.step is not None]
    steps = sorted({e.step for e in points})
    names = sorted({k for e in points for k, v in e.data.items() if isinstance(v, int | float)})
    by_step: dict[int, dict[str, float]] = {}
    for e in points:
        by_step.setdefault(e.step, {}).update(e.data)
    return {
        "x": steps,
        "series": {n: [by_step[s].get(n) for s in steps] for n in names},
    }


def _run_view(workspace, run_id: str) -> dict[str, Any]:
    run = get_run(workspace, run_id)
    with workspace.registry.reading() as session:
        events = list(
            session.scalars(select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id))
        )
    chart = series(events)
    return {
        "run": run,
        "live": run.status not in TERMINAL,
        "events": events[-EVENTS_SHOWN:][::-1],
        "chart": json.dumps(chart),
        "points": len(chart["x"]),
        "latest": {n: v[-1] for n, v in chart["series"].items() if v},
    }


@router.get("/ui/runs/{run_id}")
def run(request: Request, run_id: str):
    view = _run_view(request.app.state.workspace, run_id)
    return page(request, "run.html", active="runs", **view)


@router.get("/ui/runs/{run_id}/live")
def run_live(request: Request, run_id: str):
    view = _run_view(request.app.state.workspace, run_id)
    return page(request, "run_live.html", **view)


@router.post("/ui/runs/{run_id}/cancel")
def cancel(request: Request, run_id: str, csrf: str = Form("")):
    with admin_action(request, csrf):
        row = request_cancel(request.app.state.workspace, run_id)
    return RedirectResponse(f"/ui/runs/{row.id}", status_code=303)
