"""Images inside chat records at ingest: local files made inline, every image checked.

A chat line may point at an image file beside it instead of embedding it:

    {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Total of this invoice?"},
        {"type": "image_url", "image_url": {"url": "scans/0001.png"}}]}, ...]}

`inline_images` reads such a file (a path relative to the jsonl, never outside its
folder), checks it decodes, and writes it into the record as a data URL, so a dataset
artifact holds its images' bytes: its hash covers them, it moves as one directory, and
forgetting a record forgets its images. Each image's sha256, format and size go into the
record's metadata (`images`) for lineage and assessment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError
from forgeml.models.image_inputs import (
    MAX_IMAGE_BYTES,
    data_url,
    decode_image,
    image_bytes,
    image_url_of,
)

MAX_IMAGES_PER_RECORD = 64
MEDIA_TYPE_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}  # fmt: skip


def media_type_of(image: Any) -> str:
    """The media type of a decoded image (PNG when Pillow does not say)."""
    return MEDIA_TYPE_BY_FORMAT.get(image.format or "PNG", "image/png")


def image_metadata(data: bytes, image: Any) -> dict[str, Any]:
    """What a record's `images` metadata says of one image: for lineage and assessment."""
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "width": image.width,
        "height": image.height,
        "format": media_type_of(image),
    }


def inline_images(
    messages: list[dict[str, Any]], folder: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`messages` with every image part as a data URL, and one metadata entry per image.

    Raises `InputError` naming the part (`messages[0].content[1]`) of the first image
    that is missing, outside `folder`, too large or not an image.
    """
    images: list[dict[str, Any]] = []
    out = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for position, part in enumerate(content):
            url = image_url_of(part) if isinstance(part, dict) else None
            if url is None:
                parts.append(part)
                continue
            where = f"messages[{index}].content[{position}]"
            if len(images) == MAX_IMAGES_PER_RECORD:
                raise InputError(
                    f"more than {MAX_IMAGES_PER_RECORD} images in one record", field=where
                )
            data = _read(url, folder, where)
            image = decode_image(data, where)
            inline = url if url.startswith("data:") else data_url(data, media_type_of(image))
            images.append(image_metadata(data, image))
            parts.append({"type": "image_url", "image_url": {"url": inline}})
        out.append({**message, "content": parts})
    return out, images


def _read(url: str, folder: Path, where: str) -> bytes:
    if url.startswith(("data:", "http://", "https://")):
        return image_bytes(url, where)
    relative = url.removeprefix("file:")
    if not relative or relative.startswith("/") or "\\" in relative:
        raise InputError(
            f"an image file must be a path relative to the jsonl file; got {url!r}", field=where
        )
    root = folder.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"the image {url!r} is outside the jsonl file's folder", field=where)
    if not path.is_file():
        raise InputError(f"image file not found: {relative}", field=where)
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise InputError(
            f"the image {relative} is over {MAX_IMAGE_BYTES // 2**20} MiB", field=where
        )
    return path.read_bytes()
