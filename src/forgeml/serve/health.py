"""GET /health and GET /health/ready: what a load balancer or an orchestrator asks.

    /health        200 while the process serves HTTP (liveness), with the state of
                   each model's engine and of the registry: status "ok" or "degraded"
    /health/ready  200 only when every engine is ready and the registry answers,
                   else 503 (readiness: send traffic elsewhere meanwhile)

Neither needs a key, so neither names models: engine states are counted. The registry
check (`SELECT 1` in a read transaction) is remembered for a couple of seconds, so a
busy probe costs the database little.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("forgeml.serve")

REGISTRY_CHECK_SECONDS = 2.0
REGISTRY_TIMEOUT_SECONDS = 5.0

router = APIRouter()


class RegistryProbe:
    def __init__(self, workspace) -> None:
        self.workspace = workspace
        self._checked: tuple[float, str] | None = None

    async def state(self) -> str:
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > REGISTRY_CHECK_SECONDS:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._ping), REGISTRY_TIMEOUT_SECONDS)
                state = "ok"
            except (SQLAlchemyError, TimeoutError) as error:
                log.warning("health: the registry does not answer: %s", error)
                state = "unavailable"
            self._checked = (now, state)
        return self._checked[1]

    def _ping(self) -> None:
        with self.workspace.registry.reading() as session:
            session.execute(text("SELECT 1"))


async def _report(request: Request) -> tuple[bool, dict[str, Any]]:
    state = request.app.state
    engines = Counter(served.engine.health() for served in state.pool.models)
    registry = await state.registry_probe.state()
    ready = registry == "ok" and set(engines) <= {"ready"}
    return ready, {"engines": dict(engines), "registry": registry}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    ready, report = await _report(request)
    return JSONResponse({"status": "ok" if ready else "degraded", **report})


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    is_ready, report = await _report(request)
    status = "ready" if is_ready else "not_ready"
    return JSONResponse({"status": status, **report}, status_code=200 if is_ready else 503)
