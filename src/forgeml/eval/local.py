"""A model artifact as a chat model for evaluation: greedy, batched, fp32 on CPU.

    chat = LocalChatModel.load(model_dir, max_new_tokens=64)
    chat.complete([ChatRequest(messages=[{"role": "user", "content": "Hi"}])])

Prompts are rendered with forgeml's chat template (the one the model was trained on)
and decoded with the control tokens kept, so `parse_assistant_output` can split the
reasoning, the answer and the tool calls exactly as the server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from forgeml.core.errors import InputError
from forgeml.eval.suite import ChatRequest, Completion
from forgeml.models.chat_template import THINK, parse_assistant_output, render
from forgeml.models.image_inputs import (
    ImageShape,
    decode_image,
    expand_image_tokens,
    image_bytes,
    message_image_urls,
    preprocess,
    vision_token_ids,
)
from forgeml.models.sizes import load_model
from forgeml.models.vision import is_vision_language, stack_pixels


def load_tokenizer(directory: Path) -> Any:
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the model's tokenizer: {error}", path=directory) from error


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """No "Loading weights" bar: an evaluation reports its own progress."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_for_eval(directory: Path) -> tuple[torch.nn.Module, Any]:
    """(model in fp32 eval mode, tokenizer) from a Hugging Face model directory."""
    with _no_progress_bars():
        model = load_model(directory, dtype=torch.float32)
    model.eval()
    return model, load_tokenizer(directory)


class LocalChatModel:
    """Greedy chat completions from an in-process model."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, max_new_tokens: int = 64, batch_size: int = 8
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    @classmethod
    def load(cls, directory: Path, max_new_tokens: int = 64, batch_size: int = 8) -> LocalChatModel:
        model, tokenizer = load_for_eval(directory)
        return cls(model, tokenizer, max_new_tokens, batch_size)

    @property
    def supports_reasoning(self) -> bool:
        """Reasoning needs `[THINK]` as one token: a model trained without it cannot think."""
        return THINK in self.tokenizer.get_vocab()

    @torch.no_grad()
    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        """Greedy completions, in the order of `requests`.

        Requests are sorted by prompt length before batching so a batch pads little;
        the order (and so each batch) depends only on the prompts: deterministic.
        """
        prompts = [
            render(r.messages, r.tools or None, reasoning_effort=r.reasoning_effort)
            for r in requests
        ]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        pixels = [
            self._images(request, ids) for request, ids in zip(requests, encoded, strict=True)
        ]
        order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
        results: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            images = [image for i in chunk for image in pixels[i]]
            for index, completion in zip(
                chunk, self._generate([encoded[i] for i in chunk], images), strict=True
            ):
                results[index] = completion
        return [r for r in results if r is not None]

    def _images(self, request: ChatRequest, ids: list[int]) -> list[Any]:
        """A request's images as pixels; its `[IMG]` placeholders in `ids` are expanded
        to the images' grids in place."""
        urls = message_image_urls(request.messages)
        if not urls:
            return []
        if not is_vision_language(self.model.config):
            raise InputError("the task has images and this model takes text only", field="messages")
        shape = ImageShape.of(self.model.config)
        pixels, grids = [], []
        for index, url in enumerate(urls):
            where = f"image {index}"
            image, grid = preprocess(decode_image(image_bytes(url, where), where), shape, where)
            pixels.append(image)
            grids.append(grid)
        ids[:], _ = expand_image_tokens(ids, None, grids, vision_token_ids(self.tokenizer))
        return pixels

    def _generate(
        self, batch: list[list[int]], images: list[Any] | None = None
    ) -> list[Completion]:
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        width = max(len(ids) for ids in batch)
        # Left padding: every prompt ends at the same position, where generation starts.
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **(stack_pixels(images) if images else {}),
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        completions = []
        for row in output[:, width:].tolist():
            eos = self.tokenizer.eos_token_id
            generated = row[: row.index(eos) + 1] if eos in row else row
            raw = self.tokenizer.decode(generated, skip_special_tokens=False)
            content, reasoning, tool_calls = parse_assistant_output(raw)
            completions.append(
                Completion(
                    content=content,
                    reasoning=reasoning,
                    tool_calls=tool_calls,
                    raw=raw,
                    tokens=len(generated),
                    finished=eos in row,
                )
            )
        return completions
