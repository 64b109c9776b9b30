"""A vision-language model's image path in the transformers engine.

The engine decodes with the text model alone (vision.text_view: the same modules, so
mla_step.py's lean forward and the batched cache work as for a text model). Images
only matter at prefill: `ImageEncoder.prompt_embeddings` runs the vision tower and
projector over the joining prompts' images and writes the features over their `[IMG]`
embeddings; the prompt pass then starts from those embeddings instead of token ids.
A prompt without images costs nothing here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from forgeml.models.vision import stack_pixels

if TYPE_CHECKING:
    from forgeml.serve.engine.sequence import Sequence


class ImageEncoder:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model  # Mistral3ForConditionalGeneration
        self.image_token_id = int(model.config.image_token_id)
        self.embed_tokens = model.model.language_model.embed_tokens

    def prompt_embeddings(
        self, input_ids: torch.Tensor, sequences: list[Sequence]
    ) -> torch.Tensor | None:
        """[prompts, width, hidden] embeddings with image features in place, or None
        when no prompt has an image. `input_ids` rows are `sequences`' prompts."""
        pixels = [image for sequence in sequences for image in sequence.request.images]
        if not pixels:
            return None
        batch = stack_pixels(pixels)
        features = self.model.model.get_image_features(
            pixel_values=batch["pixel_values"].to(self.embed_tokens.weight.dtype),
            image_sizes=batch["image_sizes"],
        ).pooler_output
        features = torch.cat(list(features))
        embeds = self.embed_tokens(input_ids)
        mask = input_ids == self.image_token_id
        if int(mask.sum()) != features.shape[0]:  # the chat layer expands each image
            raise ValueError(
                f"{int(mask.sum())} image tokens in the prompts for {features.shape[0]} "
                "image features"
            )
        embeds[mask] = features.to(embeds.dtype)
        return embeds
