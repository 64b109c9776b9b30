"""A batch's input file: its requests, checked whole before the batch is accepted.

Every line must be `{"custom_id", "method": "POST", "url": <the batch's endpoint>,
"body": {...}}` with a unique `custom_id` and a `model` in the body (or a default model,
as `forgeml batch run MODEL` gives). A bad line refuses the whole batch with its line
number, as an upload does, rather than failing an hour into the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError

MAX_REQUESTS = 50_000  # OpenAI's limit per batch
MAX_CUSTOM_ID_CHARS = 512
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class BatchRequest:
    line: int
    custom_id: str
    body: dict[str, Any]


def read_requests(
    path: Path, endpoint: str, default_model: str | None = None
) -> list[BatchRequest]:
    requests: list[BatchRequest] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            if len(requests) >= MAX_REQUESTS:
                problems.append(f"line {number}: more than {MAX_REQUESTS:,} requests in one batch")
                break
            request, problem = _request(raw, number, endpoint, default_model, seen)
            if problem:
                problems.append(f"line {number}: {problem}")
            elif request is not None:
                requests.append(request)
                seen[request.custom_id] = number
    if problems:
        shown = "; ".join(problems[:MAX_ERRORS_SHOWN])
        more = (
            f" (and {len(problems) - MAX_ERRORS_SHOWN} more)"
            if len(problems) > MAX_ERRORS_SHOWN
            else ""
        )
        raise InputError(
            f"the batch input file is not valid: {shown}{more}",
            field="input_file_id",
            hint='each line: {"custom_id": "...", "method": "POST", "url": "'
            + endpoint
            + '", "body": {"model": ..., ...}}',
        )
    if not requests:
        raise InputError("the batch input file has no requests", field="input_file_id")
    return requests


def _request(
    raw: bytes, number: int, endpoint: str, default_model: str | None, seen: dict[str, int]
) -> tuple[BatchRequest | None, str | None]:
    try:
        line = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"not valid JSON: {getattr(error, 'msg', error)}"
    if not isinstance(line, dict):
        return None, "expected a JSON object"
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return None, f"custom_id: expected a string of 1 to {MAX_CUSTOM_ID_CHARS} characters"
    if custom_id in seen:
        return (
            None,
            f"custom_id {custom_id!r} is also on line {seen[custom_id]}; each must be unique",
        )
    if line.get("method", "POST") != "POST":
        return None, "method: only POST"
    if line.get("url") != endpoint:
        return None, f"url: {line.get('url')!r}, but this batch's endpoint is {endpoint}"
    body = line.get("body")
    if not isinstance(body, dict):
        return None, "body: expected the request's JSON object"
    if body.get("stream"):
        return None, "body.stream: a batch request cannot stream"
    if "model" not in body:
        if default_model is None:
            return None, "body.model: missing"
        body = {**body, "model": default_model}
    return BatchRequest(number, custom_id, body), None
