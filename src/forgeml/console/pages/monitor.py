"""Monitoring: usage by day (requests, errors, latency) and a drift check per model,
from the same `monitor.usage` and `monitor.drift` as `forgeml monitor`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request

from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import InputError
from forgeml.monitor.drift import drift
from forgeml.monitor.usage import parse_window, usage

router = APIRouter(route_class=ConsoleRoute)


def _day_chart(days: dict) -> str:
    xs = [datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp() for d in days]
    return json.dumps(
        {
            "x": xs,
            "time": True,
            "xlabel": "day",
            "series": {
                "requests": [g["requests"] for g in days.values()],
                "errors": [g["client_errors"] + g["server_errors"] for g in days.values()],
            },
        }
    )


@router.get("/ui/monitor")
def monitor(request: Request, since: str = "7d", model: str | None = None):
    workspace = request.app.state.workspace
    start = parse_window(since)
    by_model = usage(workspace, model or None, since=start)
    by_day = usage(workspace, model or None, since=start, by="day")
    drift_result, drift_error = None, None
    if model:
        try:
            drift_result = drift(workspace, model, since=start)
        except InputError as error:
            drift_error = error
    return page(
        request,
        "monitor.html",
        active="monitor",
        since=since,
        model=model or "",
        by_model=by_model["groups"],
        chart=_day_chart(by_day["groups"]),
        drift=drift_result,
        drift_error=drift_error,
    )
