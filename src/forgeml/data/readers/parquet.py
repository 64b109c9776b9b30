"""Parquet: one document per row, read in record batches so memory stays flat.

Only the text column and the requested metadata columns are read. Memory is bounded by one
row group's column chunks plus one batch. A gzip-compressed parquet (rare, but `.gz` is
accepted everywhere) is first decompressed to a temporary file, since parquet needs
random access.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.records import json_safe
from forgeml.data.readers.sources import READ_ERRORS, open_binary

BATCH_ROWS = 1024


def read_parquet(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    import pyarrow as pa

    try:
        if source.compressed:
            with tempfile.TemporaryFile() as plain:
                with open_binary(source) as stream:
                    shutil.copyfileobj(stream, plain)
                plain.seek(0)
                yield from _read_rows(source, options, plain)
        else:
            with source.path.open("rb") as stream:
                yield from _read_rows(source, options, stream)
    except (*READ_ERRORS, pa.ArrowException) as error:
        yield _reject(source, f"not a readable parquet file: {error}")


def _read_rows(
    source: SourceFile, options: ReadOptions, stream: Any
) -> Iterator[Document | Rejection]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(stream)
    schema = parquet.schema_arrow
    field = options.text_field
    if field not in schema.names:
        yield _reject(
            source,
            f"no such column (columns: {', '.join(schema.names) or 'none'})",
            field=field,
            hint="set text_field to the column that holds the text",
        )
        return
    text_type = schema.field(field).type
    if pa.types.is_dictionary(text_type):  # pandas categoricals arrive dictionary-encoded
        text_type = text_type.value_type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        yield _reject(source, f"expected a string column; got {text_type}", field=field)
        return
    extra = [name for name in options.metadata_fields if name in schema.names and name != field]

    row = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[field, *extra]):
        texts = batch.column(field).to_pylist()
        extra_values = {name: batch.column(name).to_pylist() for name in extra}
        for offset, text in enumerate(texts):
            if text is None or not text.strip():
                what = "null" if text is None else "empty text"
                yield _reject(source, f"{what} in column {field!r}", field=f"row {row}")
            else:
                metadata: dict[str, Any] = {"format": "parquet", "row": row}
                for name, values in extra_values.items():
                    metadata[name] = json_safe(values[offset])
                yield Document(
                    id=document_id(source.sha256, row),
                    text=text,
                    source=source.name,
                    source_sha256=source.sha256,
                    metadata=metadata,
                )
            row += 1


def _reject(
    source: SourceFile, reason: str, field: str | None = None, hint: str | None = None
) -> Rejection:
    return Rejection(str(source.path), reason, field=field, hint=hint, source_sha256=source.sha256)
