"""Line-based record files, jsonl and csv: one document per record, read as a stream.

Neither file is ever held in memory whole: lines are read, decoded and turned into documents
one at a time. A bad line or row becomes a `Rejection` located by its line number and the
rest of the file is still read. Positions in metadata: `line` is the 1-based line in the
file; `row` (csv) is the 0-based index of the data row, as in pandas and pyarrow.

Fine-tuning lines without a text field keep their own fields under `metadata["fields"]`,
so training reads back what the file said: a chat line's other fields (`reference` and
the like, for RL rewards), and preference or prompt lines (`prompt`/`chosen`/`rejected`,
OpenAI's `input`/`preferred_output`/`non_preferred_output`) whole. A text line's
`labels` (Mistral's classifier format) is kept there too.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.images import inline_images
from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.sources import (
    READ_ERRORS,
    LineDecoder,
    TooLarge,
    UndecodableText,
    bounded_lines,
    encoding_metadata,
    open_binary,
    stream_bom_encoding,
    too_large,
)

# Long documents in one csv cell are normal for us; the stdlib default limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
_CSV_DELIMITERS = (",", ";", "\t", "|")
# Top-level fields of fine-tuning lines (TRL, OpenAI, Mistral) that carry their text.
TRAINING_FIELDS = (
    "prompt", "input", "completion", "chosen", "rejected", "preferred_output",
    "non_preferred_output",
)  # fmt: skip


@dataclass(slots=True)
class _Line:
    number: int
    text: str | None  # None: undecodable, see `problem`
    encoding: str
    used_fallback: bool
    problem: UndecodableText | None = None


def _decoded_lines(source: SourceFile, options: ReadOptions) -> Iterator[_Line]:
    """Every physical line of the file, decoded by the encoding policy, numbered from 1;
    a line over `max_file_bytes` raises `TooLarge` before it is read whole."""
    limit = options.max_file_bytes
    with open_binary(source) as stream:
        bom_encoding = stream_bom_encoding(stream)
        if bom_encoding is not None:
            text_stream = io.TextIOWrapper(stream, encoding=bom_encoding, newline="")
            lines = iter(lambda: text_stream.readline(limit + 1), "")  # bounded in characters
            for number, line in enumerate(lines, start=1):
                if len(line) > limit and not line.endswith("\n"):
                    raise too_large(limit, "a line")
                yield _Line(number, line, bom_encoding, False)
            return
        decoder = LineDecoder(options.fallback_encoding)
        for number, raw in enumerate(bounded_lines(stream, limit), start=1):
            try:
                text, encoding, used_fallback = decoder.decode(raw)
            except UndecodableText as problem:
                yield _Line(number, None, "", False, problem)
                continue
            yield _Line(number, text, encoding, used_fallback)


def read_jsonl(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    last_line = 0
    try:
        for line in _decoded_lines(source, options):
            last_line = line.number
            if line.problem is not None:
                yield _reject(source, line.problem.reason, line.number, hint=line.problem.hint)
                continue
            assert line.text is not None
            if not line.text.strip():
                continue  # blank lines (a trailing newline) are not records
            yield _jsonl_record(source, options, line)
    except TooLarge as error:
        yield _reject(source, f"{error} (the rest of the file is not read)", last_line + 1)
    except (*READ_ERRORS, UnicodeDecodeError) as error:
        yield _reject(source, f"file is truncated or corrupt after line {last_line}: {error}")


def _jsonl_record(source: SourceFile, options: ReadOptions, line: _Line) -> Document | Rejection:
    assert line.text is not None
    try:
        record = json.loads(line.text)
    except json.JSONDecodeError as error:
        return _reject(source, f"not valid JSON: {error.msg} (column {error.colno})", line.number)
    if not isinstance(record, dict):
        return _reject(source, f"expected a JSON object; got {_type_name(record)}", line.number)
    metadata: dict[str, Any] = {"format": "jsonl", "line": line.number}
    metadata.update(encoding_metadata(line.encoding, line.used_fallback))
    field = options.text_field
    if field not in record and isinstance(record.get("messages"), list):
        return _chat_document(source, options, record, line.number, metadata)
    if field not in record and record.keys() & set(TRAINING_FIELDS):
        return _training_document(source, options, record, line.number, metadata)
    if "labels" in record:  # a classifier line (Mistral's format): its labels train
        metadata["fields"] = json_safe({"labels": record["labels"]})
    return _text_document(source, options, record, line.number, metadata, line=line.number)


def _chat_document(
    source: SourceFile,
    options: ReadOptions,
    record: dict[str, Any],
    position: int,
    metadata: dict[str, Any],
) -> Document | Rejection:
    """A chat record, kept as structured messages so it round-trips unchanged.

    Only the shape needed to hold it is checked here; roles, tool calls and the rest are
    validated by `forgeml.data.formats` before any training reads it.
    """
    messages = record["messages"]
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return _reject(
                source,
                f"expected a message object; got {_type_name(message)}",
                position,
                field=f"messages[{index}]",
            )
    if any(isinstance(m.get("content"), list) for m in messages):
        try:  # image files beside the jsonl become part of the record (data/images.py)
            messages, images = inline_images(messages, source.path.parent)
        except InputError as error:
            return _reject(source, error.detail, position, field=error.field, hint=error.hint)
        if images:
            metadata["images"] = images
    text = "\n\n".join(text for m in messages for text in _message_texts(m) if text.strip())
    if not text:
        return _reject(source, "no message has any text", position, field="messages")
    if "tools" in record:
        metadata["tools"] = record["tools"]
    fields = {key: value for key, value in record.items() if key not in ("messages", "tools")}
    if fields:  # e.g. an RL prompt's `reference`, which the rewards read
        metadata["fields"] = json_safe(fields)
    _copy_fields(record, options, metadata)
    return Document(
        id=document_id(source.sha256, position),
        text=text,
        source=source.name,
        source_sha256=source.sha256,
        metadata=metadata,
        messages=messages,
    )


def _message_texts(message: dict[str, Any]) -> Iterator[str]:
    """A message's text: its string content, or the text parts of a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _training_document(
    source: SourceFile,
    options: ReadOptions,
    record: dict[str, Any],
    position: int,
    metadata: dict[str, Any],
) -> Document | Rejection:
    """A preference or prompt line, kept whole in `metadata["fields"]`; its text (the
    prompt and answers) is what assessment and cleaning read."""
    text = "\n\n".join(
        part for name in TRAINING_FIELDS for part in _texts(record.get(name)) if part.strip()
    )
    if not text:
        present = ", ".join(f for f in TRAINING_FIELDS if f in record)
        return _reject(source, f"no text in {present}", position)
    metadata["fields"] = json_safe(record)
    _copy_fields(record, options, metadata)
    return Document(
        id=document_id(source.sha256, position),
        text=text,
        source=source.name,
        source_sha256=source.sha256,
        metadata=metadata,
    )


def _texts(value: Any) -> Iterator[str]:
    """The strings of a prompt or answer: plain text, messages, content parts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key in ("messages", "content", "text"):
            yield from _texts(value.get(key))


def _text_document(
    source: SourceFile,
    options: ReadOptions,
    record: dict[str, Any],
    position: int,
    metadata: dict[str, Any],
    line: int | None,
) -> Document | Rejection:
    """A record (jsonl object or csv row as a dict) whose text is in `options.text_field`."""
    field = options.text_field
    if field not in record:
        present = ", ".join(sorted(record)) or "none"
        return _reject(
            source,
            f"missing (fields present: {present})",
            line,
            field=field,
            hint="set text_field to the field that holds the text",
        )
    text = record[field]
    if not isinstance(text, str):
        return _reject(source, f"expected a string; got {_type_name(text)}", line, field=field)
    if not text.strip():
        return _reject(source, "empty text", line, field=field)
    _copy_fields(record, options, metadata)
    return Document(
        id=document_id(source.sha256, position),
        text=text,
        source=source.name,
        source_sha256=source.sha256,
        metadata=metadata,
    )


class _CsvLines:
    """Physical lines for `csv.reader`, remembering what it consumed since the last row.

    One string per physical line keeps the reader's `line_num` equal to the file's line
    number; an undecodable line is reported and read as an empty line.
    """

    def __init__(self, source: SourceFile, options: ReadOptions) -> None:
        self.source = source
        self.options = options
        self.problems: list[Rejection] = []
        self.consumed: list[_Line] = []

    def __iter__(self) -> Iterator[str]:
        for line in _decoded_lines(self.source, self.options):
            self.consumed.append(line)
            if line.problem is None:
                assert line.text is not None
                yield line.text
            else:
                self.problems.append(
                    _reject(self.source, line.problem.reason, line.number, hint=line.problem.hint)
                )
                yield "\n"

    def take(self) -> tuple[list[Rejection], list[_Line]]:
        taken = self.problems, self.consumed
        self.problems, self.consumed = [], []
        return taken


def read_csv(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    """CSV with a header row; the delimiter (, ; tab |) is the one whose header has the text
    column, so European semicolon exports work without a setting."""
    lines = _CsvLines(source, options)
    stream = iter(lines)
    try:
        first = next(stream, "")
        reader = csv.reader(_chain(first, stream), delimiter=_delimiter(first, options.text_field))
        header = next(reader, [])
        yield from lines.take()[0]
        if options.text_field not in header:
            yield _reject(
                source,
                f"no such column (columns: {', '.join(header) or 'none'})",
                1,
                field=options.text_field,
                hint="set text_field to the column that holds the text",
            )
            return
        row_index, previous_end = 0, reader.line_num
        while True:
            error = None
            try:
                cells = next(reader, None)
            except csv.Error as malformed:
                cells, error = [], malformed
            problems, consumed = lines.take()
            yield from problems
            if cells is None:
                return
            start, previous_end = previous_end + 1, reader.line_num
            if error is not None:
                yield _reject(source, f"malformed csv: {error}", start)
            elif len(cells) != len(header) and cells:
                yield _reject(
                    source,
                    f"expected {len(header)} fields as in the header; got {len(cells)}",
                    start,
                )
                row_index += 1
            elif cells:  # an empty list is a blank line
                metadata: dict[str, Any] = {"format": "csv", "row": row_index, "line": start}
                metadata.update(_row_encoding(consumed))
                record = dict(zip(header, cells, strict=True))
                yield _text_document(source, options, record, row_index, metadata, line=start)
                row_index += 1
    except TooLarge as error:
        yield from lines.take()[0]
        yield _reject(source, f"{error} (the rest of the file is not read)")
    except (*READ_ERRORS, UnicodeDecodeError) as error:
        yield from lines.take()[0]
        yield _reject(source, f"file is truncated or corrupt: {error}")


def _row_encoding(consumed: list[_Line]) -> dict[str, object]:
    """A row decoded partly with the fallback is recorded as in the fallback encoding."""
    decoded = [line for line in consumed if line.text is not None]
    fallback = next((line for line in decoded if line.used_fallback), None)
    if fallback is not None:
        return encoding_metadata(fallback.encoding, True)
    return encoding_metadata(decoded[0].encoding if decoded else "utf-8", False)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def _delimiter(header_line: str, text_field: str) -> str:
    for delimiter in _CSV_DELIMITERS:
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        if text_field in header:
            return delimiter
    return ","


def _copy_fields(record: dict[str, Any], options: ReadOptions, metadata: dict[str, Any]) -> None:
    for name in options.metadata_fields:
        if name in record:
            metadata[name] = json_safe(record[name])


def json_safe(value: Any) -> Any:
    """Values from parquet can be dates, decimals or bytes; metadata must stay JSON."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _reject(
    source: SourceFile,
    reason: str,
    line: int | None = None,
    field: str | None = None,
    hint: str | None = None,
) -> Rejection:
    return Rejection(
        str(source.path), reason, line=line, field=field, hint=hint, source_sha256=source.sha256
    )
