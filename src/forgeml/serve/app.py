"""The HTTP server: an OpenAI- and Mistral-compatible API over the workspace's models.

    app = create_app(Workspace.open("ws"), ["support-bot@prod"], ServeSettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (all but /health need `Authorization: Bearer fml-...`):

    POST /v1/chat/completions   chat/        inference
    POST /v1/completions        completions/ inference
    GET  /v1/models[/{id}]      model_list/  inference
    POST /v1/feedback           feedback/    inference
    GET  /v1/feedback           feedback/    admin
    *    /v1/files[/...]        files/       admin (training data may hold personal data)
    *    /v1/fine_tuning/jobs   fine_tuning/ admin (spends compute, adds registry models)
    GET  /metrics               metrics.py   admin
    GET  /health[/ready]        health.py    none
    GET  /ui[/...]              console/     the web console: a session cookie (admin or viewer)

Every other request passes guard.py first: its key, its key's rate and concurrency
limits and its body's size are checked before the body is read (docs/SECURITY.md).

While it runs, each model it serves has a `deployments` row in the registry (status
running, then stopped, or withdrawn when its model is forgotten while served), so the registry knows what was in production when. Every
completion leaves a row in the registry's request log (request_log.py). Fine-tuning
jobs run in `forgeml jobs worker` subprocesses the server starts (job_workers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response

from forgeml import __version__
from forgeml.console import mount_console
from forgeml.core.workspace import Workspace
from forgeml.jobs.files import clean_interrupted_uploads
from forgeml.monitor.signals import warm_up as warm_up_signals
from forgeml.serve import errors
from forgeml.serve.auth import KeyChecker, require
from forgeml.serve.batches.router import router as batches_router
from forgeml.serve.batches.runner import BatchRunner
from forgeml.serve.chat.router import router as chat_router
from forgeml.serve.classifications.router import router as classifications_router
from forgeml.serve.completions.router import router as completions_router
from forgeml.serve.deployments import start_deployments, stop_deployments
from forgeml.serve.drift_watch import DriftWatch
from forgeml.serve.feedback.router import router as feedback_router
from forgeml.serve.files.router import router as files_router
from forgeml.serve.fine_tuning.router import router as fine_tuning_router
from forgeml.serve.guard import GuardMiddleware
from forgeml.serve.health import RegistryProbe
from forgeml.serve.health import router as health_router
from forgeml.serve.job_workers import JobWorkers
from forgeml.serve.limits import KeyLimits
from forgeml.serve.metrics import CONTENT_TYPE, RequestMetricsMiddleware, ServerMetrics
from forgeml.serve.model_list.router import router as models_router
from forgeml.serve.moderations.router import router as moderations_router
from forgeml.serve.recent_completions import RecentCompletions
from forgeml.serve.request_log import RegistryRequestLog, RequestLog
from forgeml.serve.served_models import ModelPool, ServedModel, load_served_models
from forgeml.serve.settings import ServeSettings
from forgeml.serve.traffic import TrafficRouter, check_canaries, models_to_start

log = logging.getLogger("forgeml.serve")


def create_app(
    workspace: Workspace,
    models: Sequence[str | ServedModel],
    settings: ServeSettings | None = None,
    request_log: RequestLog | None = None,
) -> FastAPI:
    """Load `models` (registry references, or already loaded) and build the app."""
    settings = settings or ServeSettings()
    check_canaries(workspace, settings)
    served = load_served_models(workspace, models_to_start(list(models), settings), settings)
    pool = ModelPool(workspace, served, settings)
    traffic = TrafficRouter(workspace, pool, settings, metrics := ServerMetrics())
    workers = JobWorkers(workspace, settings.job_workers)
    drift_watch = DriftWatch(workspace, pool, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.request_log = request_log or RegistryRequestLog(
            workspace, settings.request_log_days
        )
        await asyncio.to_thread(clean_interrupted_uploads, workspace)  # a kill -9 mid-upload
        if settings.language_signal:  # load the language model off the first request
            await asyncio.to_thread(warm_up_signals)
        await pool.start()
        for model in pool.models:  # build constrained-decoding tables before traffic
            await asyncio.to_thread(lambda model=model: model.vocabulary)
        deployments = await asyncio.to_thread(start_deployments, workspace, pool.started, settings)
        pool.track_deployments(deployments)  # a withdrawn model's row ends with it
        await traffic.start()  # after the deployment rows: a canary's audit entry names them
        await workers.start()
        await drift_watch.start()
        if settings.batch_runner:
            await app.state.batches.start()
        try:
            yield
        finally:
            await app.state.batches.stop()  # first: its requests need the engines
            await drift_watch.stop()
            await traffic.stop()
            await workers.stop()  # first: a running job goes back to the queue
            await pool.stop()
            await asyncio.to_thread(app.state.keys.flush)
            await asyncio.to_thread(stop_deployments, workspace, deployments)
            await asyncio.to_thread(app.state.request_log.close)

    app = FastAPI(
        title="forgeml",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.pool = pool
    app.state.traffic = traffic
    app.state.job_workers = workers
    app.state.batches = BatchRunner(app, workspace, settings.batch_concurrency)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = KeyChecker(workspace, settings.key_cache_seconds, settings.key_cache_size)
    app.state.registry_probe = RegistryProbe(workspace)
    app.state.workspace = workspace
    app.state.recent_completions = RecentCompletions(
        settings.feedback_cache_size, settings.feedback_cache_seconds
    )
    errors.install(app)
    console = mount_console(app, workspace, app.state.keys)
    limits = KeyLimits(settings.key_requests_per_minute, settings.key_max_concurrent)
    app.add_middleware(
        GuardMiddleware, keys=app.state.keys, limits=limits, settings=settings, console=console
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: counts refusals
    app.include_router(health_router)
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(classifications_router)
    app.include_router(moderations_router)
    app.include_router(batches_router)
    app.include_router(models_router)
    app.include_router(feedback_router)
    app.include_router(files_router)
    app.include_router(fine_tuning_router)

    @app.get("/metrics", dependencies=[Depends(require("admin"))])
    async def prometheus_metrics(request: Request) -> Response:
        return Response(metrics.render(request.app.state.pool), media_type=CONTENT_TYPE)

    return app
