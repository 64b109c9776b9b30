"""PDF: one document per page, read with pypdf.

Why per page and not per file: a page is how people cite a pdf ("handbook.pdf, p. 12"), so
lineage and later answers can point at it; a page that fails to extract (a scanned image,
a broken content stream) rejects only that page; and documents stay bounded in size. The
cost — a paragraph that runs over a page break is split — does not matter for training,
where documents are concatenated and packed anyway. `page` (1-based) and `pages` are in the
metadata, so a caller can rebuild a whole file in order.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.sources import READ_ERRORS, TooLarge, read_content


def read_pdf(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    if options.images:  # pages as pictures (scans): readers/pictures.py
        from forgeml.data.readers.pictures import read_pdf_pictures

        yield from read_pdf_pictures(source, options)
        return
    from pypdf import PdfReader  # lazy: only needed when a pdf is read

    # pypdf logs its own complaints about damaged files; ours, the Rejection, says it better.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    def reject(reason: str, page: int | None = None, hint: str | None = None) -> Rejection:
        where = f"page {page}" if page is not None else None
        return Rejection(
            str(source.path), reason, field=where, hint=hint, source_sha256=source.sha256
        )

    try:
        data = read_content(source, options.max_file_bytes)
    except TooLarge as error:
        yield reject(str(error))
        return
    except READ_ERRORS as error:
        yield reject(f"cannot read file: {error}")
        return
    # pypdf raises a wide range of exception types (KeyError, ValueError, RecursionError,
    # its own PdfReadError...) on malformed files; any of them means "not a readable pdf".
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            yield reject("the pdf is encrypted", hint="remove the password and ingest it again")
            return
        page_count = len(reader.pages)
        title = _title(reader)
    except Exception as error:
        yield reject(f"not a readable pdf: {error or type(error).__name__}")
        return
    if page_count == 0:
        yield reject("the pdf has no pages")
        return

    for number in range(1, page_count + 1):
        try:
            text = reader.pages[number - 1].extract_text()
        except Exception as error:
            yield reject(f"cannot extract text: {error or type(error).__name__}", number)
            continue
        if not text or not text.strip():
            yield reject(
                "no extractable text (a scanned image?)",
                number,
                hint="OCR the pdf first; forgeml does not run OCR",
            )
            continue
        metadata: dict[str, Any] = {"format": "pdf", "page": number, "pages": page_count}
        if title:
            metadata["title"] = title
        yield Document(
            id=document_id(source.sha256, number),
            text=text,
            source=source.name,
            source_sha256=source.sha256,
            metadata=metadata,
        )


def _title(reader: Any) -> str | None:
    info = reader.metadata
    title = info.title if info is not None else None
    return title.strip() if isinstance(title, str) and title.strip() else None
