"""Images in fine-tuning: their tokens in an example, their pixels in a batch.

    ids, labels, images = with_image_tokens(tokenizer, ids, labels, urls, shape, seq_len)
    collator = VisionCollator(tokenizer, shape)     # Trainer's data_collator

An example keeps its images as the data URLs of its record (strings in the Arrow
table, decoded per batch), not as pixels: a dataset of a thousand screenshots would
otherwise sit in memory as float32 arrays several times its size. The collator decodes,
resizes and pads them (image_inputs.py, the same code the server runs), so training and
serving see the same pixels. A batch without images has no `pixel_values`, so text
examples mixed into an image dataset cost nothing extra.
"""

from __future__ import annotations

from typing import Any

from forgeml.core.errors import InputError
from forgeml.models.image_inputs import (
    ImageGrid,
    ImageShape,
    decode_image,
    expand_image_tokens,
    image_bytes,
    image_grid,
    preprocess,
    vision_token_ids,
)


def with_image_tokens(
    tokenizer: Any,
    input_ids: list[int],
    labels: list[int],
    urls: list[str],
    shape: ImageShape | None,
    seq_len: int,
) -> tuple[list[int], list[int], list[str]]:
    """The example with each image's grid of tokens, cut to `seq_len` before the first
    image that does not fit whole (an image is all of its tokens or none)."""
    if shape is None:
        raise InputError(
            "the dataset has images and this model takes none",
            field="model",
            hint="add a vision tower first: forgeml models add-vision MODEL --vision tiny",
        )
    token_ids = vision_token_ids(tokenizer)
    grids = [_grid(url, shape, f"image {index}") for index, url in enumerate(urls)]
    ids, out_labels = expand_image_tokens(input_ids, labels, grids, token_ids)
    assert out_labels is not None
    end, kept, position = min(seq_len, len(ids)), 0, 0
    for grid in grids:
        position = ids.index(token_ids[0], position)
        if position + grid.tokens > end:
            end = min(end, position)
            break
        kept += 1
        position += grid.tokens
    return ids[:end], out_labels[:end], urls[:kept]


def _grid(url: str, shape: ImageShape, where: str) -> ImageGrid:
    image = decode_image(image_bytes(url, where), where)
    return image_grid(image.width, image.height, shape, where)


class VisionCollator:
    """Pads ids (pad token) and labels (-100) on the right, and turns each example's
    images into `pixel_values` [images, 3, H, W] (zero-padded to the batch's largest)
    with their `image_sizes`."""

    def __init__(self, tokenizer: Any, shape: ImageShape) -> None:
        self.pad_id = tokenizer.pad_token_id
        self.shape = shape

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            length = len(row["input_ids"])
            input_ids[index, :length] = torch.tensor(row["input_ids"])
            labels[index, :length] = torch.tensor(row["labels"])
            attention_mask[index, :length] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        urls = [url for row in rows for url in row.get("images") or []]
        if urls:
            batch.update(pixel_batch(urls, self.shape))
        return batch


def pixel_batch(urls: list[str], shape: ImageShape) -> dict[str, Any]:
    """`pixel_values` and `image_sizes` for images given as data URLs."""
    pixels = [
        preprocess(decode_image(image_bytes(url, f"image {i}"), f"image {i}"), shape)[0]
        for i, url in enumerate(urls)
    ]
    from forgeml.models.vision import stack_pixels  # torch: only where batches are made

    return stack_pixels(pixels)
