"""Check a whole training jsonl file before any training starts.

    report = validate_jsonl(Path("train.jsonl"), expected_format="chat")
    report.raise_for_errors()   # InputError: "train.jsonl:7: messages[2].role: expected ..."

Every line is read (streaming, so size does not matter), the first `max_errors` problems
are kept with their line and field, and all are counted. A file holds one format: with
`expected_format=None` it is the format of the first record, and a record of another
format is an error, since every training stage reads exactly one.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.formats.checks import Problem
from forgeml.data.formats.normalize import check_format_name, check_record, normalize_record

_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True, slots=True)
class LineError:
    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path + (f":{self.line}" if self.line else "")
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass
class ValidationReport:
    path: str
    expected_format: str | None
    format: str | None = None  # the file's format: expected, or that of its first record
    records: int = 0  # non-blank lines
    valid: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # detected format of each record
    errors: list[LineError] = field(default_factory=list)  # the first max_errors
    error_count: int = 0  # all of them

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def summary(self) -> str:
        formats = ", ".join(f"{name}: {count}" for name, count in sorted(self.counts.items()))
        return (
            f"{self.path}: {self.valid} of {self.records} records valid"
            + (f" ({formats})" if formats else "")
            + (f", {self.error_count} errors" if self.error_count else "")
        )

    def raise_for_errors(self) -> None:
        if self.ok:
            return
        shown = "\n".join(str(error) for error in self.errors)
        more = self.error_count - len(self.errors)
        tail = f"\n... and {more} more" if more > 0 else ""
        raise InputError(
            f"{self.error_count} problem(s) in {self.path}:\n{shown}{tail}",
            hint=_HINTS.get(self.format or self.expected_format or ""),
        )


_HINTS = {
    "chat": 'each line: {"messages": [{"role": "user", "content": ...}, '
    '{"role": "assistant", "content": ...}]}',
    "text": 'each line: {"text": "..."}',
    "preference": 'each line: {"prompt": ..., "chosen": ..., "rejected": ...} or OpenAI\'s '
    '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}',
    "prompt": 'each line: {"prompt": "..."} or {"messages": [...]} ending with a user message',
}


def validate_jsonl(
    path: str | Path, expected_format: str | None = None, max_errors: int = 20
) -> ValidationReport:
    """Check every line of a training jsonl (or .jsonl.gz) file; see the module docstring."""
    check_format_name(expected_format)
    report = ValidationReport(str(path), expected_format, format=expected_format)
    first_line: int | None = None

    def add(line: int | None, problems: list[Problem]) -> None:
        for problem in problems:
            report.error_count += 1
            if len(report.errors) < max_errors:
                report.errors.append(LineError(report.path, line, problem.field, problem.message))

    for line, record in _json_lines(path):
        report.records += 1
        if isinstance(record, Problem):
            add(line, [record])
            continue
        record = _with_image_files(record, Path(path).parent)
        if isinstance(record, Problem):
            add(line, [record])
            continue
        detected, canonical, problems = check_record(record, expected_format)
        if detected is not None:
            report.counts[detected] += 1
        if report.format is None and detected is not None:
            report.format, first_line = detected, line
        elif detected is not None and detected != report.format:
            problems = _mismatch(record, report.format, detected, first_line)
            canonical = None
        if canonical is None:
            add(line, problems)
        else:
            report.valid += 1
    if report.records == 0:
        add(None, [Problem(None, "the file has no records")])
    return report


def ensure_valid_jsonl(
    path: str | Path, expected_format: str | None = None, max_errors: int = 20
) -> ValidationReport:
    """`validate_jsonl`, raising `InputError` with the first errors if there are any."""
    report = validate_jsonl(path, expected_format, max_errors)
    report.raise_for_errors()
    return report


def iter_normalized(
    path: str | Path, expected_format: str | None = None
) -> Iterator[dict[str, Any]]:
    """Canonical records, streamed; `InputError` at the first bad line (validate first)."""
    for line, record in _json_lines(path):
        if isinstance(record, Problem):
            raise InputError(record.message, path=path, line=line, field=record.field)
        try:
            yield normalize_record(record, expected_format)
        except InputError as error:
            raise InputError(error.detail, path=path, line=line, field=error.field) from None


def _with_image_files(record: Any, folder: Path) -> Any:
    """A chat record whose images are files beside the jsonl, read as `data ingest` reads
    them (data/images.py), or the Problem with the first bad one."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
    ):
        return record
    from forgeml.data.images import inline_images

    try:
        inlined, _ = inline_images(messages, folder)
    except InputError as error:
        return Problem(error.field, error.detail)
    return {**record, "messages": inlined}


def _mismatch(
    record: dict[str, Any], file_format: str | None, detected: str, first_line: int | None
) -> list[Problem]:
    assert file_format is not None
    if {file_format, detected} == {"chat", "prompt"}:
        # Both are `messages` lists; what the record lacks as the file's format says more.
        _, canonical, problems = check_record(record, file_format)
        if canonical is None:
            return problems
    where = f" like line {first_line}" if first_line else ""
    return [Problem(None, f"expected a {file_format} record{where}; got a {detected} record")]


def _json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the Problem with it) for each non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    line = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            for line, raw in enumerate(stream, start=1):
                if line == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    yield line, Problem(None, f"not valid UTF-8 (byte {error.start})")
                    continue
                if not text.strip():
                    continue
                try:
                    yield line, json.loads(text)
                except json.JSONDecodeError as error:
                    yield line, Problem(None, f"not valid JSON: {error.msg} (column {error.colno})")
    except _READ_ERRORS as error:
        yield line + 1, Problem(None, f"cannot read the file past this line: {error}")
