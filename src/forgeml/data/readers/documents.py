"""What the readers produce: documents, rejections, source files, and the reading options.

A reader never drops anything silently: every file, page, line or row it cannot turn into a
`Document` comes out as a `Rejection` in the same stream, in reading order, so the caller can
count and record both next to each other.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forgeml.core.errors import InputError


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file as the caller records it for lineage: the exact bytes that were read.

    `name` is the path relative to what the user named (`docs/` holding `a/b.md` gives
    `docs/a/b.md`; a file named directly gives its file name): documents carry it, so a
    dataset's bytes never depend on the folder its files lay in. `path` (where the file
    is on this machine) belongs in run records and lineage only.
    """

    path: Path
    format: (
        str | None
    )  # "txt", "md", "html", "pdf", "jsonl", "csv", "parquet", "image"; None: unsupported
    compressed: bool  # gzip; sha256 and size are of the compressed bytes on disk
    size_bytes: int
    sha256: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.path.name)

    def to_record(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "compressed": self.compressed,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


def document_id(source_sha256: str, position: int) -> str:
    """A stable id: the same bytes at the same position always get the same id.

    Identical files at two paths give identical ids on purpose: they are the same content,
    which is what deduplication wants to see.
    """
    return f"{source_sha256[:16]}-{position}"


@dataclass(frozen=True, slots=True)
class Document:
    """One unit of text: a whole text/markdown/html file, a pdf page, a jsonl line, a row.

    `messages` is set instead of only `text` for chat records (jsonl lines with a
    `messages` list and no text field), so chat data round-trips unchanged; their `text`
    is the message contents joined by blank lines, for the stages that only look at text.
    """

    id: str
    text: str
    source: str
    source_sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict, the shape a dataset jsonl line takes."""
        record: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "metadata": self.metadata,
        }
        if self.messages is not None:
            record["messages"] = self.messages
        return record


@dataclass(frozen=True, slots=True)
class Rejection:
    """A file, or a part of one (page, line, row), that produced no document, and why."""

    source: str
    reason: str
    line: int | None = None
    field: str | None = None
    hint: str | None = None
    source_sha256: str | None = None

    def __str__(self) -> str:
        return str(self.to_error())

    def to_error(self) -> InputError:
        return InputError(
            self.reason, path=self.source, line=self.line, field=self.field, hint=self.hint
        )

    def to_record(self) -> dict[str, Any]:
        record = {
            "source": self.source,
            "line": self.line,
            "field": self.field,
            "reason": self.reason,
            "source_sha256": self.source_sha256,
        }
        if self.hint:  # what to do about it, where the reader knows
            record["hint"] = self.hint
        return record


class ReadOptions(BaseModel):
    """How to read documents; a stage embeds this in its own parameter model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text_field: str = Field("text", min_length=1)
    """The jsonl field, csv column or parquet column that holds the text."""
    metadata_fields: tuple[str, ...] = ()
    """Other fields/columns copied into each document's metadata (absent ones are skipped)."""
    fallback_encoding: str | None = "cp1252"
    """Used for text that is not UTF-8 (nor UTF-16/32 with a BOM); None rejects such text."""
    strict: bool = False
    """Raise `InputError` at the first problem instead of yielding a `Rejection`."""
    max_file_bytes: int = Field(1 << 30, ge=1)
    """Largest file read whole (txt, md, html, pdf) and longest jsonl/csv line, after
    decompression: a bigger one is rejected before it can fill memory (a gzip bomb)."""
    images: bool = False
    """Image files and PDF pages become pictures in chat records (readers/pictures.py)."""
    image_instruction: str = Field("Transcribe this page.", min_length=1, max_length=2000)
    """The user's words beside each picture."""
    pdf_dpi: int = Field(100, ge=36, le=300)
    """The resolution PDF pages are drawn at, as pictures."""

    @field_validator("fallback_encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
