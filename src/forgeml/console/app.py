"""Mount the console on an app (`forgeml serve`), or build an app of it alone (`forgeml ui`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from forgeml import __version__
from forgeml.console.gate import ConsoleGate
from forgeml.console.render import HERE
from forgeml.console.router import router
from forgeml.console.sessions import SessionStore
from forgeml.core.workspace import Workspace
from forgeml.serve.auth import KeyChecker


def mount_console(app: FastAPI, workspace: Workspace, keys: KeyChecker) -> ConsoleGate:
    """Add the /ui pages and static files; returns the gate for GuardMiddleware."""
    app.state.workspace = workspace
    app.state.console_sessions = SessionStore(workspace)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)
    return ConsoleGate(keys, app.state.console_sessions)


def create_console_app(workspace: Workspace, settings=None) -> FastAPI:
    """The console without the model API: same registry, same keys, same guard."""
    from forgeml.serve.guard import GuardMiddleware
    from forgeml.serve.limits import KeyLimits
    from forgeml.serve.settings import ServeSettings

    settings = settings or ServeSettings()
    keys = KeyChecker(workspace, settings.key_cache_seconds, settings.key_cache_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(keys.flush)

    app = FastAPI(
        title="forgeml console",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.keys = keys
    app.state.settings = settings
    gate = mount_console(app, workspace, keys)
    limits = KeyLimits(settings.key_requests_per_minute, settings.key_max_concurrent)
    app.add_middleware(GuardMiddleware, keys=keys, limits=limits, settings=settings, console=gate)
    return app
