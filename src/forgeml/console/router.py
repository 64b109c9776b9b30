"""Every console page, one module per area under pages/; /ui itself goes to Models."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from forgeml.console.pages import (
    admin,
    data,
    evals,
    feedback,
    jobs,
    lineage,
    login,
    models,
    monitor,
    runs,
)
from forgeml.console.render import ConsoleRoute, error_page

router = APIRouter(route_class=ConsoleRoute)
for module in (login, models, lineage, runs, data, feedback, evals, jobs, monitor, admin):
    router.include_router(module.router)


@router.get("/ui", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/models", status_code=303)


@router.api_route("/ui/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
def not_found(request: Request, rest: str):
    return error_page(
        request,
        404,
        "No such page",
        f"There is no console page at /ui/{rest}.",
        "Use the navigation above.",
    )
