"""Errors in the OpenAI shape, with the status codes clients expect.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": null}}

    400  a well-formed request we cannot serve (bad value, context too long, bad schema)
    401  no or unknown API key          403  the key lacks the scope
    404  unknown model or route         413  the body is larger than the server takes
    422  the body does not match the API's schema
    429  the engine's queue is full, or the key's rate or concurrency limit (Retry-After)
    500  a bug (logged with its traceback)
    503  the engine is restarting, or the registry is unreachable (Retry-After)

A 422 also carries FastAPI's `detail` list, which the Mistral SDK reads for that status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from forgeml.core.errors import ForgeError, InputError, NotFoundError
from forgeml.core.registry import ForgottenError
from forgeml.serve.engine.base import EngineUnavailable, QueueFullError

log = logging.getLogger("forgeml.serve")


class ModelNotServed(NotFoundError):
    """The request names a model this server does not hold (HTTP 404, model_not_found)."""


class APIError(Exception):
    """An error the API reports to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, **extra: Any) -> JSONResponse:
        return JSONResponse({**self.body(), **extra}, status_code=self.status, headers=self.headers)


def from_forge_error(error: ForgeError) -> APIError:
    """Map our user-facing errors onto the API's statuses."""
    message = error.message + (f" ({error.hint})" if error.hint else "")
    if isinstance(error, QueueFullError):
        return APIError(
            429, message, "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
        )
    if isinstance(error, EngineUnavailable):
        return APIError(
            503, message, "server_error", code="engine_unavailable", headers={"Retry-After": "5"}
        )
    if isinstance(error, ModelNotServed):
        return APIError(
            404, message, "invalid_request_error", param="model", code="model_not_found"
        )
    if isinstance(error, ForgottenError):  # it exists, but a deletion request blocks it
        return APIError(409, message, "invalid_request_error", code="model_forgotten")
    if isinstance(error, NotFoundError):
        return APIError(404, message, "invalid_request_error", code="not_found")
    if isinstance(error, InputError):
        detail = error.detail + (f" ({error.hint})" if error.hint else "")
        return APIError(400, detail, "invalid_request_error", param=error.field)
    return APIError(400, message)


def generation_failed(error: str | None, unavailable: bool = False) -> APIError:
    """A generation that ended in error: 503 if its engine went down (retry), else 500."""
    message = f"generation failed: {error or 'generation was aborted'}"
    if unavailable:
        return APIError(
            503, message, "server_error", code="engine_unavailable", headers={"Retry-After": "5"}
        )
    return APIError(500, message, "server_error")


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _api_error(_request: Request, error: APIError) -> JSONResponse:
    return error.response()


async def _forge_error(_request: Request, error: ForgeError) -> JSONResponse:
    return from_forge_error(error).response()


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return APIError(400, "the request body is not valid JSON", code="invalid_json").response()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    param = _location(tuple(first.get("loc", ())))
    message = "; ".join(
        f"{_location(tuple(p.get('loc', ())))}: {p.get('msg')}" for p in problems[:5]
    )
    detail = [
        {"loc": list(p.get("loc", ())), "msg": str(p.get("msg")), "type": str(p.get("type"))}
        for p in problems
    ]
    return APIError(422, message, param=param, code="invalid_schema").response(detail=detail)


async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    return APIError(
        error.status_code,
        str(error.detail),
        kinds.get(error.status_code, "invalid_request_error"),
        code=getattr(error, "code", None),  # guard.BodyTooLarge names one
        headers=getattr(error, "headers", None),
    ).response()


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error while serving a request", exc_info=error)
    return APIError(500, "internal server error", "server_error").response()


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(ForgeError, _forge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
