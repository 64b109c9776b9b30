"""Images as a vision-language model reads them: bytes -> checked image -> pixels + tokens.

No torch here (numpy and Pillow): the server checks a request's images before any
model work, and data validation checks a dataset's images without loading a model.

    data = image_bytes(part, "messages[0].content[1]")    # a data URL, never the network
    image = decode_image(data, "messages[0].content[1]")   # bounded, RGB
    pixels, grid = preprocess(image, ImageShape(patch_size=8, longest_edge=128))
    ids, labels = expand_image_tokens(ids, labels, [grid], token_ids)

The chat template writes one `[IMG]` per image; `expand_image_tokens` turns it into the
image's grid, Pixtral's layout: `cols` x `[IMG]` then `[IMG_BREAK]` per row of image
tokens, the last row closed by `[IMG_END]` instead. Pixels follow transformers'
`PixtralProcessor` exactly (tests compare, loading it from a model's own processor files):
shrink to fit `longest_edge` (never enlarge), round each side up to whole image tokens,
bicubic, scale to [0, 1], normalise with CLIP's mean and std. One image token covers
`patch_size * spatial_merge_size` pixels a side (the projector merges patches 2 x 2).

Whole tokens, not whole patches: mistral-common does the same (it rounds the shrink
where transformers floors it), and llama.cpp's mtmd keeps an image whose sides are
multiples of the token side as it is, so one resized image has one grid everywhere.
Rounding to patches only (the plain `PixtralImageProcessor`) leaves an odd patch row
that the merger drops and llama.cpp keeps: 127 x 120 px was 7 x 8 tokens here and
8 x 8 in llama-server.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgeml.core.errors import InputError
from forgeml.models.chat_template import IMG as IMAGE_TOKEN

IMAGE_BREAK_TOKEN, IMAGE_END_TOKEN = "[IMG_BREAK]", "[IMG_END]"
VISION_TOKENS = [IMAGE_TOKEN, IMAGE_BREAK_TOKEN, IMAGE_END_TOKEN]
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, as Pixtral uses
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MEDIA_TYPES = {f"image/{name.lower()}" for name in FORMATS} | {"image/jpg"}
# Bounds on hostile input: the encoded size, and the decoded pixels (a 20 kB PNG can
# claim 60,000 x 60,000 pixels; the header is read before any pixel is decoded).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageShape:
    """What a model's vision tower expects (from its config)."""

    patch_size: int
    longest_edge: int
    spatial_merge_size: int = 2

    @property
    def token_side(self) -> int:
        """Pixels a side of one image token."""
        return self.patch_size * self.spatial_merge_size

    @classmethod
    def of(cls, config: Any) -> ImageShape:
        """From a `Mistral3Config` (or its config.json as a dict)."""
        if isinstance(config, dict):
            vision = config["vision_config"]
            return cls(vision["patch_size"], vision["image_size"], config["spatial_merge_size"])
        vision = config.vision_config
        return cls(vision.patch_size, vision.image_size, config.spatial_merge_size)


@dataclass(frozen=True)
class ImageGrid:
    """An image's tokens: `rows` x `cols` `[IMG]`s (plus one break or end per row)."""

    rows: int
    cols: int

    @property
    def image_tokens(self) -> int:
        return self.rows * self.cols

    @property
    def tokens(self) -> int:
        return self.rows * (self.cols + 1)


def image_url_of(part: dict[str, Any]) -> str | None:
    """The URL of an image content part, OpenAI's `{"image_url": {"url": ...}}` or
    Mistral's `{"image_url": "..."}`; None when the part is not an image."""
    if part.get("type") != "image_url":
        return None
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    return url if isinstance(url, str) else ""


def vision_token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """The ids of `[IMG]`, `[IMG_BREAK]`, `[IMG_END]` (any tokenizer: transformers' or the
    server's, which answer a missing token with None or the unknown id)."""
    ids = tuple(tokenizer.convert_tokens_to_ids(token) for token in VISION_TOKENS)
    unknown = getattr(tokenizer, "unk_token_id", None)
    if any(i is None or i == unknown for i in ids):
        raise InputError(
            "this model does not take images: its tokenizer has no image tokens",
            field="model",
            hint="add a vision tower first: forgeml models add-vision MODEL --vision tiny",
        )
    return ids  # type: ignore[return-value]


def message_image_urls(messages: list[dict[str, Any]]) -> list[str]:
    """The URLs of a conversation's images, in the order the chat template puts them."""
    urls = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            urls.extend(
                url
                for part in content
                if isinstance(part, dict) and (url := image_url_of(part)) is not None
            )
    return urls


def image_bytes(url: str, where: str) -> bytes:
    """The bytes of a `data:image/...;base64,` URL. Nothing is fetched: forgeml runs
    offline, so http(s) URLs are refused with what to send instead."""
    if url.startswith(("http://", "https://")):
        raise InputError(
            "image URLs are never fetched: forgeml works offline",
            field=where,
            hint="send the image inline as a data URL: data:image/png;base64,...",
        )
    header, comma, payload = url.partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        raise InputError(
            "an image must be a base64 data URL (data:image/png;base64,...)", field=where
        )
    media_type = header[len("data:") : -len(";base64")].lower()
    if media_type not in MEDIA_TYPES:
        raise InputError(
            f"unsupported image type {media_type or '(none)'!r}",
            field=where,
            hint="send PNG, JPEG, WebP, GIF or BMP",
        )
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InputError(f"the image is over {MAX_IMAGE_BYTES // 2**20} MiB", field=where)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"the image's base64 is not valid: {error}", field=where) from error


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_image(data: bytes, where: str) -> Any:
    """A decoded RGB `PIL.Image`; a clear InputError for anything else (not an image, a
    format we do not take, too many pixels, a truncated file)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"the image is over {MAX_IMAGE_BYTES // 2**20} MiB", field=where)
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError as error:
        raise InputError("not a PNG, JPEG, WebP, GIF or BMP image", field=where) from error
    except (OSError, ValueError, SyntaxError) as error:  # a header cut short or garbled
        raise InputError(f"the image cannot be decoded: {error}", field=where) from error
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"the image has {width} x {height} pixels, over the {MAX_IMAGE_PIXELS:,} allowed",
            field=where,
            hint="scale it down before sending",
        )
    try:
        image.load()  # decode now: a truncated file fails here, not inside the model
        rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"the image cannot be decoded: {error}", field=where) from error
    rgb.format = image.format  # convert() drops it; ingest records it
    return rgb


def resized_size(width: int, height: int, shape: ImageShape) -> tuple[int, int]:
    """(height, width) in pixels after Pixtral's resize: fit `longest_edge`, round up to
    whole image tokens (`patch_size * spatial_merge_size` pixels)."""
    ratio = max(height / shape.longest_edge, width / shape.longest_edge)
    if ratio > 1:
        height, width = math.floor(height / ratio), math.floor(width / ratio)
    side = shape.token_side
    return ((height - 1) // side + 1) * side, ((width - 1) // side + 1) * side


def image_grid(width: int, height: int, shape: ImageShape, where: str = "image") -> ImageGrid:
    """The token grid of an image of this size; an image too small for one token a side
    is refused (the projector would give it no token at all)."""
    pixel_height, pixel_width = resized_size(width, height, shape)
    grid = ImageGrid(pixel_height // shape.token_side, pixel_width // shape.token_side)
    if grid.rows == 0 or grid.cols == 0:
        raise InputError(
            f"the image is {width} x {height} pixels; this model needs at least "
            f"{shape.token_side} pixels a side",
            field=where,
        )
    return grid


def preprocess(image: Any, shape: ImageShape, where: str = "image") -> tuple[np.ndarray, ImageGrid]:
    """Pixels [3, height, width] float32, normalised, and the image's token grid."""
    from PIL import Image

    grid = image_grid(image.width, image.height, shape, where)
    height, width = resized_size(image.width, image.height, shape)
    resized = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)
    pixels = (pixels - np.asarray(IMAGE_MEAN, np.float32)) / np.asarray(IMAGE_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), grid


def grid_token_ids(grid: ImageGrid, token_ids: tuple[int, int, int]) -> list[int]:
    """One image's tokens: `[IMG]` x cols, `[IMG_BREAK]`, ..., the last row `[IMG_END]`."""
    image, row_break, end = token_ids
    ids: list[int] = []
    for row in range(grid.rows):
        ids.extend([image] * grid.cols)
        ids.append(end if row == grid.rows - 1 else row_break)
    return ids


def expand_image_tokens(
    input_ids: list[int],
    labels: list[int] | None,
    grids: list[ImageGrid],
    token_ids: tuple[int, int, int],
) -> tuple[list[int], list[int] | None]:
    """Each `[IMG]` placeholder (one per image, in order) replaced by its image's grid;
    labels over image tokens are -100 (the model reads images, never writes them)."""
    image_id = token_ids[0]
    placeholders = input_ids.count(image_id)
    if placeholders != len(grids):
        raise InputError(f"{placeholders} image placeholders for {len(grids)} images")
    out_ids: list[int] = []
    out_labels: list[int] | None = [] if labels is not None else None
    images = iter(grids)
    for index, token in enumerate(input_ids):
        if token == image_id:
            expanded = grid_token_ids(next(images), token_ids)
            out_ids.extend(expanded)
            if out_labels is not None:
                out_labels.extend([-100] * len(expanded))
        else:
            out_ids.append(token)
            if out_labels is not None:
                assert labels is not None
                out_labels.append(labels[index])
    return out_ids, out_labels
