"""Pages from Jinja2 templates, and the one way a console request fails: a clear page.

Every console route uses `ConsoleRoute`, so a `ForgeError` (bad input, a model that no
longer exists, a forgotten artifact, a refused promotion) becomes an error page saying
what and what to do, with the HTTP status an API would use; anything else is logged
with its traceback and shown as a short "internal error" page, never the traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException

from forgeml import __version__
from forgeml.core.errors import ConflictError, ForgeError, NotFoundError
from forgeml.core.registry import ForgottenError
from forgeml.eval.gates import GateFailed

log = logging.getLogger("forgeml.console")

HERE = Path(__file__).parent
NAV = [
    ("models", "Models", "/ui/models"),
    ("lineage", "Lineage", "/ui/lineage"),
    ("runs", "Runs", "/ui/runs"),
    ("data", "Data", "/ui/data"),
    ("evals", "Evaluations", "/ui/evals"),
    ("jobs", "Jobs & files", "/ui/jobs"),
    ("monitor", "Monitoring", "/ui/monitor"),
    ("feedback", "Feedback", "/ui/feedback"),
    ("audit", "Audit log", "/ui/audit"),
    ("keys", "API keys", "/ui/keys"),
]

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=environment)


def page(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    """Render `template` with the caller, its CSRF token and the navigation."""
    session = getattr(request.state, "console_session", None)
    caller = getattr(request.state, "caller", None)
    base = {
        "caller": caller,
        "can_write": caller is not None and caller.allows("admin"),
        "csrf": session.csrf if session else "",
        "nav": NAV,
        "version": __version__,
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=code)


def error_page(
    request: Request, status: int, title: str, message: str, hint: str | None = None, **extra: Any
) -> HTMLResponse:
    return page(request, "error.html", status, title=title, message=message, hint=hint, **extra)


GATES_HINT = (
    "Improve the model, or promote it anyway: tick “Promote even if gates fail” and give "
    "a reason (the override is recorded in the audit log with your key)."
)


def console_hint(hint: str | None) -> str | None:
    """Errors' hints are written for the CLI; the console says where a command is meant."""
    if hint and ("--" in hint or "forgeml " in hint):
        return f"From the command line: {hint}"
    return hint


def forge_error_page(request: Request, error: ForgeError) -> HTMLResponse:
    if isinstance(error, GateFailed):
        return error_page(
            request, 409, "Promotion refused", error.message, GATES_HINT, gates=error.results
        )
    hint = console_hint(error.hint)
    if isinstance(error, ForgottenError):
        return error_page(request, 410, "Forgotten", error.message, hint)
    if isinstance(error, NotFoundError):
        return error_page(request, 404, "Not found", error.message, hint)
    if isinstance(error, ConflictError):
        return error_page(request, 409, "Not possible now", error.message, hint)
    return error_page(request, 400, "Cannot do that", error.message, hint)


class ConsoleRoute(APIRoute):
    """A route whose failures are pages (see the module docstring)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except ForgeError as error:
                return forge_error_page(request, error)
            except RequestValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:]) or 'form'}: {e['msg']}"
                    for e in error.errors()
                )
                return error_page(request, 400, "Incomplete form", problems)
            except HTTPException as error:
                return error_page(request, error.status_code, "Refused", str(error.detail))
            except Exception:
                log.exception("console page %s failed", request.url.path)
                return error_page(
                    request,
                    500,
                    "Internal error",
                    "The server failed to show this page. The error is in the server's log.",
                )

        return guarded
