"""Stream documents out of an organisation's files: txt, md, html, pdf, jsonl, csv, parquet
(and images, as pictures in chat records: readers/pictures.py).

    from forgeml.data.readers import iter_documents, Document, Rejection

    for item in iter_documents([Path("docs/")], text_field="body"):
        if isinstance(item, Document): ...   # write it to the dataset
        else: ...                            # a Rejection: record why, with file and line

Every file, page, line or row either becomes a `Document` or a `Rejection`, in reading
order, so nothing is dropped silently; `strict=True` raises `InputError` at the first
rejection instead. Any of the formats may be gzip-compressed (`name.jsonl.gz`).
`list_sources` gives the files with their sha256 and size, for lineage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError

from forgeml.core.errors import InputError
from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.parquet import read_parquet
from forgeml.data.readers.pdf import read_pdf
from forgeml.data.readers.pictures import read_image
from forgeml.data.readers.records import read_csv, read_jsonl
from forgeml.data.readers.sources import (
    FORMAT_BY_SUFFIX,
    describe_source,
    find_files,
    find_named_files,
    list_sources,
)
from forgeml.data.readers.text import read_html, read_md, read_txt

__all__ = [
    "FORMAT_BY_SUFFIX",
    "Document",
    "ReadOptions",
    "Rejection",
    "SourceFile",
    "describe_source",
    "document_id",
    "find_files",
    "find_named_files",
    "iter_documents",
    "list_sources",
    "read_source",
]

Reader = Callable[[SourceFile, ReadOptions], Iterator[Document | Rejection]]
READERS: dict[str, Reader] = {
    "txt": read_txt,
    "md": read_md,
    "html": read_html,
    "pdf": read_pdf,
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
    "image": read_image,
}


def iter_documents(
    paths: Sequence[str | Path],
    *,
    text_field: str = "text",
    metadata_fields: Sequence[str] = (),
    fallback_encoding: str | None = "cp1252",
    strict: bool = False,
    max_file_bytes: int = 1 << 30,
    images: bool = False,
    image_instruction: str = "Transcribe this page.",
    pdf_dpi: int = 100,
    file_map: Callable | None = None,
) -> Iterator[Document | Rejection]:
    """Documents and rejections from files and directories (walked recursively, sorted).

    A bad option or a missing path raises `InputError` when iteration starts, before any
    file is read; everything about a file's content becomes a `Rejection` (or an
    `InputError` with `strict`). See `ReadOptions` for the parameters. `file_map`, given,
    reads the files elsewhere: called as `file_map(read_file, ((path, name, options), ...))`
    it yields (anything, read_file's list) in file order (ray_executor.ordered_map).
    """
    try:
        options = ReadOptions(
            text_field=text_field,
            metadata_fields=tuple(metadata_fields),
            fallback_encoding=fallback_encoding,
            strict=strict,
            max_file_bytes=max_file_bytes,
            images=images,
            image_instruction=image_instruction,
            pdf_dpi=pdf_dpi,
        )
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        message = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
        raise InputError(message, field=".".join(map(str, first["loc"]))) from None
    files = find_named_files(paths)
    if file_map is not None:
        for _, items in file_map(
            read_file, ((None, (path, name, options)) for path, name in files)
        ):
            yield from items
        return
    for path, name in files:
        yield from _read_file(path, name, options)


def read_file(task: tuple[Path, str, ReadOptions]) -> list[Document | Rejection]:
    """One file's documents and rejections, whole: the unit of work of another executor."""
    return list(_read_file(*task))


def _read_file(path: Path, name: str, options: ReadOptions) -> Iterator[Document | Rejection]:
    try:
        source = describe_source(path, name)
    except InputError as error:
        if options.strict:
            raise
        yield Rejection(str(path), error.detail)
        return
    yield from read_source(source, options)


def read_source(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    """Documents and rejections from one described file (see `describe_source`)."""
    reader = READERS.get(source.format or "", _unsupported)
    for item in reader(source, options):
        if options.strict and isinstance(item, Rejection):
            raise item.to_error()
        yield item


def _unsupported(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    known = ", ".join(sorted(FORMAT_BY_SUFFIX))
    yield Rejection(
        str(source.path),
        "unsupported file type",
        hint=f"forgeml reads {known} (optionally .gz)",
        source_sha256=source.sha256,
    )
