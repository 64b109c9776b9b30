"""/v1/files: one file object both clients parse.

OpenAI's `FileObject` (bytes, purpose, status) and Mistral's `FileSchema` (the same
plus sample_type, source, num_lines, and `deleted` on retrieve) differ only in fields
the other ignores, so every route answers with their union.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from forgeml.core.schema import StoredFile, unix_time

# Mistral's sample types: what the lines of a file are for.
SAMPLE_TYPES = {"fine-tune": "instruct", "batch": "batch_request", "batch_output": "batch_result"}


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    # Mistral
    sample_type: str
    source: Literal["upload"] = "upload"
    num_lines: int | None = None
    mimetype: str | None = None
    signature: str | None = None  # we give the sha256 of the bytes
    deleted: bool = False

    @classmethod
    def of(cls, stored: StoredFile) -> FileObject:
        counts = (stored.details or {}).get("counts") or {}
        return cls(
            id=stored.id,
            bytes=stored.bytes,
            created_at=unix_time(stored.created_at),
            filename=stored.filename,
            purpose=stored.purpose,
            status="processed" if stored.status == "processed" else "uploaded",
            sample_type=SAMPLE_TYPES.get(stored.purpose, "instruct"),
            num_lines=sum(counts.values()) if counts else None,
            mimetype="application/jsonl" if stored.filename.endswith(".jsonl") else None,
            signature=stored.sha256,
            deleted=stored.deleted_at is not None,
        )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool  # OpenAI's cursor pages
    first_id: str | None = None
    last_id: str | None = None
    total: int  # Mistral's pages


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
