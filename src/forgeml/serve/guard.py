"""The first thing a request meets: its API key, its key's limits, its body's size.

Plain ASGI middleware, so it runs before FastAPI reads a byte of the body:

    no key / wrong key           401   before the body is read
    inference key on an admin    403   /v1/files and /v1/fine_tuning (big bodies) only;
      upload route                     every route checks its scope again (auth.require)
    over the key's limits        429   Retry-After (limits.py)
    Content-Length over the cap  413   before the body is read
    body over the cap            413   counted while it streams in, chunked bodies too

The cap is `max_request_bytes` everywhere but `/v1/files`, which takes uploads up to
`max_upload_bytes` (multipart parsing spools them to disk in chunks as they arrive;
the count stops the stream at the cap). /health and /health/ready need no key.

The web console's pages (/ui, console/) are checked here too, by their session cookie
instead of a bearer header (console/gate.py): the same keys, the same limits.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forgeml.console.gate import ConsoleGate, Refused, is_console
from forgeml.serve.auth import Caller, KeyChecker, scope_error
from forgeml.serve.errors import APIError
from forgeml.serve.holds import release_request_holds
from forgeml.serve.limits import KeyLimits
from forgeml.serve.settings import ServeSettings

OPEN_PATHS = frozenset({"/health", "/health/ready"})
UPLOAD_PREFIX = "/v1/files"
ADMIN_PREFIXES = ("/v1/files", "/v1/fine_tuning", "/v1/batches")


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the cap: FastAPI re-raises an
    HTTPException from body parsing, and errors.py renders it as a 413."""

    code = "request_too_large"

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes, the most this route takes "
            f"(the server's serving.{setting} setting)",
        )


def _in(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyChecker,
        limits: KeyLimits,
        settings: ServeSettings,
        console: ConsoleGate | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limits = limits
        self.settings = settings
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = Headers(scope=scope)
        if _in(path, UPLOAD_PREFIX):
            limit, setting = self.settings.max_upload_bytes, "max_upload_bytes"
        else:
            limit, setting = self.settings.max_request_bytes, "max_request_bytes"
        caller: Caller | None
        try:
            if self.console is not None and is_console(path):
                caller = await self.console.caller(scope, headers)  # None: login, static
            else:
                caller = await self.keys.authenticate(headers.get("authorization"))
                if any(_in(path, p) for p in ADMIN_PREFIXES) and not caller.allows("admin"):
                    raise scope_error(caller, "admin")
            _check_declared_length(headers.get("content-length"), limit, setting)
            if caller is not None:
                self.limits.acquire(caller.key_id)
        except APIError as error:
            await error.response()(scope, receive, send)
            return
        except Refused as refused:
            await refused.response(scope, receive, send)
            return
        if caller is not None:
            scope.setdefault("state", {})["caller"] = caller
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as error:  # a reader that did not turn it into a response
            if started:
                raise
            too_large = APIError(413, str(error.detail), code=error.code)
            await too_large.response()(scope, receive, send)
        finally:
            release_request_holds(scope)  # the models it chose may be unloaded now
            if caller is not None:
                self.limits.release(caller.key_id)


def _check_declared_length(value: str | None, limit: int, setting: str) -> None:
    if value is None:
        return
    if not value.strip().isdigit():
        raise APIError(400, "Content-Length must be a number of bytes", code="invalid_request")
    if int(value) > limit:
        error = BodyTooLarge(limit, setting)
        raise APIError(413, str(error.detail), code=error.code)
