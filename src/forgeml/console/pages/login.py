"""Log in with an API key (admin or viewer), log out."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from forgeml.console.actions import actor
from forgeml.console.render import ConsoleRoute, page
from forgeml.console.sessions import COOKIE, COOKIE_PATH, SessionStore
from forgeml.core.registry import acting_as
from forgeml.serve.auth import hash_key
from forgeml.serve.errors import APIError

router = APIRouter(route_class=ConsoleRoute)

REASONS = {
    "expired": "Your session has expired or ended. Log in again to continue.",
    "revoked": "The key this session used has been revoked. Log in with another key.",
    "scope": "That key cannot open the console: it needs the admin or viewer scope.",
    "logout": "You are logged out.",
}


def _safe_next(target: str | None) -> str:
    """Only a console path: a login link must not send anyone to another site."""
    if target and target.startswith("/ui/") and not target.startswith("/ui//"):
        return target
    return "/ui/models"


@router.get("/ui/login")
def login_form(request: Request, next: str | None = None, reason: str | None = None):
    return page(
        request, "login.html", notice=REASONS.get(reason or ""), next=_safe_next(next), error=None
    )


@router.post("/ui/login")
async def login(request: Request, key: str = Form(""), next: str | None = Form(None)) -> Response:
    digest = hash_key(key.strip())
    error = None
    try:
        caller = await request.app.state.keys.authenticate_digest(digest)
    except APIError as refused:
        if refused.status != 401:
            raise
        error = "That key is not valid: it is unknown or was revoked."
    else:
        if not caller.allows("viewer"):
            error = (
                f"The key {caller.name} has scope {caller.scope!r}; the console needs an "
                "admin or viewer key (`forgeml keys create --scope viewer`)."
            )
    if error:
        return page(request, "login.html", 401, notice=None, next=_safe_next(next), error=error)
    sessions: SessionStore = request.app.state.console_sessions
    session = sessions.create(digest)
    with acting_as(actor(caller)):
        workspace = request.app.state.workspace
        with workspace.registry.session() as db:
            workspace.registry.audit(db, "console.login", f"api_key/{caller.key_id}")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        session.token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    session = getattr(request.state, "console_session", None)
    caller = getattr(request.state, "caller", None)
    if session is not None:
        request.app.state.console_sessions.end(session.token)
    if caller is not None:
        with acting_as(actor(caller)):
            workspace = request.app.state.workspace
            with workspace.registry.session() as db:
                workspace.registry.audit(db, "console.logout", f"api_key/{caller.key_id}")
    response = RedirectResponse("/ui/login?reason=logout", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
