"""OpenAI's Batch API, field by field.

    POST /v1/batches {"input_file_id", "endpoint", "completion_window": "24h", "metadata"?}
    GET  /v1/batches/{id}    POST /v1/batches/{id}/cancel    GET /v1/batches?after=&limit=

An input file (uploaded with purpose "batch") has one request a line:

    {"custom_id": "ticket-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

The output file has one line per answered request, the error file one per refused one:

    {"id": "batch_req_...", "custom_id": "ticket-1",
     "response": {"status_code": 200, "request_id": "...", "body": {...}}, "error": null}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/classifications",
    "/v1/chat/classifications",
    "/v1/moderations",
)
STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "cancelling",
    "cancelled",
)


class CreateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(max_length=40)
    endpoint: str
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=16)


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str = "24h"
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
