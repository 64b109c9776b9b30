"""A chat request's images: checked, decoded and turned into pixels before any model work.

    images = request_images(messages, served, settings)      # [] for a text request
    prompt_ids = images.expand(prompt_ids)                    # [IMG] -> the image's grid
    logged = images.redacted(messages)                        # hashes instead of bytes

Images come inline as data URLs (OpenAI's `{"type": "image_url", "image_url": {"url":
...}}` or Mistral's `{"image_url": "..."}`); http URLs are refused, the server being
offline. Every failure is a 400 naming the part (`messages[0].content[1]`): an image
sent to a text-only model, too many images, a corrupt or huge one, an unknown format.
The request log keeps each image's sha256 and size, never its bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forgeml.core.errors import InputError
from forgeml.models.image_inputs import (
    ImageGrid,
    decode_image,
    expand_image_tokens,
    image_bytes,
    image_url_of,
    preprocess,
    vision_token_ids,
)
from forgeml.serve.served_models import ServedModel
from forgeml.serve.settings import ServeSettings


@dataclass
class RequestImages:
    pixels: list[np.ndarray] = field(default_factory=list)  # [3, h, w] each, prompt order
    grids: list[ImageGrid] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # data URL -> "sha256:...", for logs
    token_ids: tuple[int, int, int] | None = None

    def expand(self, prompt_ids: list[int]) -> list[int]:
        if not self.grids:
            return prompt_ids
        assert self.token_ids is not None
        ids, _ = expand_image_tokens(prompt_ids, None, self.grids, self.token_ids)
        return ids

    def redacted(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with each image's data URL replaced by its hash and size."""
        if not self.hashes:
            return messages
        out = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                content = [
                    {"type": "image_url", "image_url": {"url": self.hashes[url]}}
                    if (url := image_url_of(part)) in self.hashes
                    else part
                    for part in content
                ]
                message = {**message, "content": content}
            out.append(message)
        return out


def request_images(
    messages: list[dict[str, Any]], served: ServedModel, settings: ServeSettings
) -> RequestImages:
    found = [
        (f"messages[{index}].content[{position}]", part)
        for index, message in enumerate(messages)
        if isinstance(message.get("content"), list)
        for position, part in enumerate(message["content"])
        if isinstance(part, dict) and part.get("type") in ("image_url", "image")
    ]
    if not found:
        return RequestImages()
    where = found[0][0]
    if served.image_shape is None:
        if served.engine.name == "vllm":  # it forwards token ids: the pixels would be lost
            raise InputError(
                f"{served.id} is served by the vLLM engine, which takes text only so far; "
                f"this request has {len(found)} image(s)",
                field=where,
                hint="serve a vision-language model with --engine transformers, or its "
                "GGUF export (with its mmproj file) on the llama.cpp engine",
            )
        raise InputError(
            f"{served.id} takes text only here; this request has {len(found)} image(s)",
            field=where,
            hint="send text, or serve a vision-language model (forgeml models add-vision): "
            "the model itself, or its GGUF export with the mmproj file export writes",
        )
    if len(found) > settings.max_images_per_request:
        raise InputError(
            f"{len(found)} images; this server takes at most "
            f"{settings.max_images_per_request} per request",
            field=found[settings.max_images_per_request][0],
        )
    for index, message in enumerate(messages):
        if message.get("role") != "user" and any(
            w.startswith(f"messages[{index}].") for w, _ in found
        ):
            raise InputError("only user messages may hold images", field=f"messages[{index}]")
    images = RequestImages(token_ids=vision_token_ids(served.tokenizer))
    for where, part in found:
        url = image_url_of(part)
        if not url:
            raise InputError(
                'an image part needs image_url: {"url": "data:image/png;base64,..."}', field=where
            )
        data = image_bytes(url, where)
        pixels, grid = preprocess(decode_image(data, where), served.image_shape, where)
        images.pixels.append(pixels)
        images.grids.append(grid)
        images.hashes[url] = f"sha256:{hashlib.sha256(data).hexdigest()} ({len(data)} bytes)"
    return images
