"""Who may see a console page: the guard's check for /ui paths (serve/guard.py).

The API's gate reads a bearer key; a browser page carries the session cookie instead
(sessions.py), which names a key the same `KeyChecker` verifies, so a revoked key's
sessions end within the key cache's few seconds. Open without a session: the login
page and the static files (vendored libraries and the stylesheet: nothing private).

    no session, or it expired     303 to /ui/login (htmx: HX-Redirect), saying why
    an inference key's session    303 to /ui/login (the console needs viewer or admin)
    a form posted from elsewhere  403 (Origin differs; SameSite=Strict stops it first)
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from forgeml.console.render import environment
from forgeml.console.sessions import COOKIE, SessionStore
from forgeml.serve.auth import Caller, KeyChecker
from forgeml.serve.errors import APIError

PREFIX = "/ui"
OPEN_PATHS = frozenset({"/ui/login"})
STATIC_PREFIX = "/ui/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Refused(Exception):
    """The request gets `response` instead of reaching a page."""

    def __init__(self, response: Response) -> None:
        self.response = response


def refusal_page(status: int, title: str, message: str, hint: str | None = None) -> Response:
    html = environment.get_template("error.html").render(
        title=title, message=message, hint=hint, caller=None, nav=[], csrf=""
    )
    return HTMLResponse(html, status_code=status)


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ConsoleGate:
    def __init__(self, keys: KeyChecker, sessions: SessionStore) -> None:
        self.keys = keys
        self.sessions = sessions

    async def caller(self, scope: Scope, headers: Headers) -> Caller | None:
        """The logged-in caller, None on an open path; raises `Refused` otherwise."""
        path = scope["path"]
        if scope["method"] not in SAFE_METHODS:
            _check_origin(scope, headers)
        if path in OPEN_PATHS or path.startswith(STATIC_PREFIX):
            return None
        token = _cookie(headers)
        session = await asyncio.to_thread(self.sessions.get, token)
        if session is None:
            raise Refused(_to_login(scope, headers, "expired" if token else ""))
        try:
            caller = await self.keys.authenticate_digest(session.key_digest)
        except APIError as error:
            if error.status != 401:
                raise
            await asyncio.to_thread(self.sessions.end, token)
            raise Refused(_to_login(scope, headers, "revoked")) from None
        if not caller.allows("viewer"):
            await asyncio.to_thread(self.sessions.end, token)
            raise Refused(_to_login(scope, headers, "scope"))
        scope.setdefault("state", {})["console_session"] = session
        return caller


def _cookie(headers: Headers) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def _check_origin(scope: Scope, headers: Headers) -> None:
    origin = headers.get("origin")
    if origin is None:  # not sent by every browser on same-origin posts
        return
    host = headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise Refused(
            refusal_page(
                403,
                "Refused",
                "This form was sent from another site, so it was not acted on.",
                "Open the console at its own address and submit the form there.",
            )
        )


def _to_login(scope: Scope, headers: Headers, reason: str) -> Response:
    target = scope["path"]
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    if current := headers.get("hx-current-url"):  # a fragment: come back to its page
        target = "/" + current.split("://", 1)[-1].partition("/")[2]
    url = f"/ui/login?next={quote(target, safe='')}" + (f"&reason={reason}" if reason else "")
    if headers.get("hx-request"):  # htmx follows this header instead of swapping
        return Response(status_code=401, headers={"HX-Redirect": url})
    response = RedirectResponse(url, status_code=303)
    if reason:
        response.delete_cookie(COOKIE, path="/ui")
    return response
