"""Image files and PDF pages as pictures: scans, forms and slides for a vision model.

    forgeml data ingest scans/ --images --instruction "Transcribe this page."

With `images` on, every image file (PNG, JPEG, WebP, GIF, BMP) and every PDF page (drawn
by PDFium at `pdf_dpi`) becomes a chat record whose user turn is the picture and the
instruction:

    {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "Transcribe this page."}]},
      {"role": "assistant", "content": "<the page's text layer>"}]}

A PDF page with a text layer (a born-digital page, or a scan its scanner OCRed) gets the
text as the assistant's answer: a transcription example for SFT. A page or image without
text is a prompt (user turn only), for a teacher (`data synthesize`), `batch run` or an
evaluation. The picture's bytes are in the record, so the dataset's hash covers them and
forgetting a record forgets its picture; each picture's sha256, size and pixel size is in
the record's `images` metadata, as for images inside chat records (data/images.py).

Bounds: a page is drawn at most `MAX_IMAGE_PIXELS` (a poster-sized page is drawn at a
lower resolution instead), an image file at most `MAX_IMAGE_BYTES` and
`MAX_IMAGE_PIXELS` (decode_image refuses more). Without `images`, an image file is
rejected with the flag to use, and a PDF is read as text.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.images import image_metadata, media_type_of
from forgeml.data.readers.documents import (
    Document,
    ReadOptions,
    Rejection,
    SourceFile,
    document_id,
)
from forgeml.data.readers.sources import READ_ERRORS, TooLarge, read_content
from forgeml.models.image_inputs import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, data_url, decode_image

MAX_PDF_PAGES = 10_000  # a hostile PDF may claim millions of pages


def picture_record(
    source: SourceFile,
    position: int,
    data: bytes,
    image: Any,
    options: ReadOptions,
    answer: str,
    metadata: dict[str, Any],
) -> Document:
    """One picture (and its answer, when there is one) as a chat document."""
    user = {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(data, media_type_of(image))}},
        {"type": "text", "text": options.image_instruction},
    ]}  # fmt: skip
    messages = [user] + ([{"role": "assistant", "content": answer}] if answer else [])
    metadata = {**metadata, "images": [image_metadata(data, image)]}
    text = "\n\n".join(part for part in (options.image_instruction, answer) if part)
    return Document(
        id=document_id(source.sha256, position),
        text=text,
        source=source.name,
        source_sha256=source.sha256,
        metadata=metadata,
        messages=messages,
    )


def read_image(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    def reject(reason: str, hint: str | None = None) -> Rejection:
        return Rejection(str(source.path), reason, hint=hint, source_sha256=source.sha256)

    if not options.images:
        yield reject(
            "an image file", hint="ingest with --images to keep pictures (a vision model's data)"
        )
        return
    data = _content(source, min(options.max_file_bytes, MAX_IMAGE_BYTES))
    if isinstance(data, str):
        yield reject(data)
        return
    try:
        image = decode_image(data, "image")
    except InputError as error:
        yield reject(error.detail)
        return
    yield picture_record(source, 0, data, image, options, "", {"format": "image"})


def read_pdf_pictures(source: SourceFile, options: ReadOptions) -> Iterator[Document | Rejection]:
    """Each page drawn as a PNG, with its text layer (pypdf's, as the text reader's) as the
    answer when it has one."""
    import pypdfium2
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)

    def reject(reason: str, page: int | None = None, hint: str | None = None) -> Rejection:
        where = f"page {page}" if page is not None else None
        return Rejection(
            str(source.path), reason, field=where, hint=hint, source_sha256=source.sha256
        )

    data = _content(source, options.max_file_bytes)
    if isinstance(data, str):
        yield reject(data)
        return
    try:
        document = pypdfium2.PdfDocument(data)
        text_reader = PdfReader(io.BytesIO(data))
        if text_reader.is_encrypted:
            text_reader.decrypt("")
        pages = len(document)
    except Exception as error:  # PDFium and pypdf raise many types on damaged files
        message = str(error) or type(error).__name__
        if "password" in message.lower():
            yield reject("the pdf is encrypted", hint="remove the password and ingest it again")
        else:
            yield reject(f"not a readable pdf: {message}")
        return
    if pages == 0:
        yield reject("the pdf has no pages")
        return
    if pages > MAX_PDF_PAGES:
        yield reject(f"the pdf has {pages:,} pages, over the {MAX_PDF_PAGES:,} read")
        return
    try:
        for number in range(1, pages + 1):
            try:
                picture = draw_page(document[number - 1], options.pdf_dpi)
                answer = (text_reader.pages[number - 1].extract_text() or "").strip()
            except Exception as error:
                yield reject(f"cannot draw the page: {error or type(error).__name__}", number)
                continue
            buffer = io.BytesIO()
            picture.save(buffer, "PNG")
            picture.format = "PNG"  # drawn here, within the pixel bound: no need to decode it back
            metadata = {"format": "pdf", "page": number, "pages": pages}
            yield picture_record(
                source, number, buffer.getvalue(), picture, options, answer, metadata
            )
    finally:
        document.close()


def _content(source: SourceFile, limit: int) -> bytes | str:
    """The file's bytes, or why they cannot be read (too large, unreadable)."""
    try:
        return read_content(source, limit)
    except TooLarge as error:
        return str(error)
    except READ_ERRORS as error:
        return f"cannot read file: {error}"


def draw_page(page: Any, dpi: int) -> Any:
    """The page as an RGB PIL image at `dpi`, or less where that would pass the pixel bound."""
    width, height = page.get_size()  # points: 1/72 inch
    scale = dpi / 72
    pixels = width * scale * height * scale
    if pixels > MAX_IMAGE_PIXELS:
        scale *= (MAX_IMAGE_PIXELS / pixels) ** 0.5 * 0.99
    return page.render(scale=scale).to_pil().convert("RGB")
