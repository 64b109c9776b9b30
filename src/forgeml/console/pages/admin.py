"""API keys (create shows the secret once; revoke) and the audit log, through the same
`serve.auth` functions as `forgeml keys` and the same query as `forgeml audit`."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from forgeml.console.actions import admin_action
from forgeml.console.render import ConsoleRoute, page
from forgeml.serve.auth import SCOPES, create_key, list_keys, revoke_key

router = APIRouter(route_class=ConsoleRoute)


def _keys_page(request: Request, created=None, secret: str | None = None):
    return page(
        request,
        "keys.html",
        active="keys",
        scopes=SCOPES,
        created=created,
        secret=secret,
        keys=list_keys(request.app.state.workspace, include_revoked=True),
    )


@router.get("/ui/keys")
def keys(request: Request):
    return _keys_page(request)


@router.post("/ui/keys")
def create(request: Request, name: str = Form(...), scope: str = Form("inference"),
           csrf: str = Form("")):  # fmt: skip
    with admin_action(request, csrf):
        row, secret = create_key(request.app.state.workspace, name.strip(), scope)
    # Rendered, not redirected: the secret must never sit in a URL or be shown again.
    response = _keys_page(request, created=row, secret=secret)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/ui/keys/{key_id}/revoke")
def revoke(request: Request, key_id: int, csrf: str = Form("")):
    with admin_action(request, csrf):
        revoke_key(request.app.state.workspace, str(key_id))
    return RedirectResponse("/ui/keys", status_code=303)


@router.get("/ui/audit")
def audit(request: Request, action: str | None = None, target: str | None = None,
          limit: int = 200):  # fmt: skip
    entries = request.app.state.workspace.registry.audit_entries(
        min(max(limit, 1), 1000), action or None, target or None
    )
    return page(
        request,
        "audit.html",
        active="audit",
        entries=entries[::-1],
        action=action or "",
        target=target or "",
    )
