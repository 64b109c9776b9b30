"""Vision-language models: a Pixtral-style encoder in front of our `mistral4` text model.

This is how Mistral Small 4 takes images: transformers' `Mistral3ForConditionalGeneration`
(model_type `mistral3`) = `PixtralVisionModel` (the vision tower) + a patch merger and
projector + the `mistral4` text model. An image becomes a grid of `[IMG]` tokens, one
per `patch_size * spatial_merge_size` pixel square, each row closed by `[IMG_BREAK]` and
the last by `[IMG_END]` (image_inputs.py); the projector's outputs replace the `[IMG]`
embeddings before the text model runs.

    model, tokenizer = add_vision(text_model, tokenizer, "tiny", seed=0)   # fresh tower
    model = load_model(directory)       # forgeml.models.sizes: mistral3 directories too
    text = text_view(model)             # the text model alone, sharing the weights

`add_vision` keeps every text weight and appends the three image tokens to the vocabulary
(their embeddings start at the mean of the others), so a text model trained by forgeml
gains images without losing what it knew; train the projector first
(`trainable: projector`), then everything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    Mistral4ForCausalLM,
    PixtralVisionConfig,
)

from forgeml.core.atomic import write_json_atomic
from forgeml.core.errors import InputError
from forgeml.models.image_inputs import (
    IMAGE_BREAK_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_MEAN,
    IMAGE_STD,
    IMAGE_TOKEN,
    VISION_TOKENS,
)
from forgeml.models.size_table import VISION_SIZES, VisionSize

MODEL_TYPE = "mistral3"


def is_vision_language(config: Any) -> bool:
    return getattr(config, "model_type", None) == MODEL_TYPE


def vision_size(name: str) -> VisionSize:
    if name not in VISION_SIZES:
        raise InputError(
            f"unknown vision size {name!r}",
            field="vision",
            hint="choose one of: " + ", ".join(VISION_SIZES),
        )
    return VISION_SIZES[name]


def build_vision_config(size: VisionSize) -> PixtralVisionConfig:
    return PixtralVisionConfig(
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        head_dim=size.head_dim,
        patch_size=size.patch_size,
        image_size=size.image_size,
        rope_theta=size.rope_theta,
    )


def add_vision(
    text_model: torch.nn.Module, tokenizer: Any, size: str | VisionSize, seed: int
) -> tuple[Mistral3ForConditionalGeneration, Any]:
    """A vision-language model holding `text_model`'s weights and a fresh vision tower
    and projector drawn from `seed`; the tokenizer gains the image tokens (in place)."""
    if is_vision_language(text_model.config):
        raise InputError("this model already takes images", field="model")
    if text_model.config.model_type != "mistral4":
        raise InputError(
            f"a vision tower is added to a mistral4 text model; this one is "
            f"{text_model.config.model_type!r}",
            field="model",
        )
    size = vision_size(size) if isinstance(size, str) else size
    present = [token for token in VISION_TOKENS if token in tokenizer.get_vocab()]
    if present:
        raise InputError(f"the tokenizer already has {', '.join(present)}", field="model")
    tokenizer.add_special_tokens(
        {"extra_special_tokens": VISION_TOKENS}, replace_extra_special_tokens=False
    )
    text_config = copy.deepcopy(text_model.config)
    text_config.vocab_size = len(tokenizer)
    # Where the text model was loaded from would be saved inside text_config, and the
    # same model in another folder would give other bytes.
    text_config._name_or_path = ""
    config = Mistral3Config(
        vision_config=build_vision_config(size),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        spatial_merge_size=size.spatial_merge_size,
        projector_hidden_act="gelu",
        multimodal_projector_bias=False,
        tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = encode_images_separately(Mistral3ForConditionalGeneration(config))
    model.model.language_model.load_state_dict(
        _resized(text_model.model.state_dict(), "embed_tokens.weight", len(tokenizer))
    )
    model.lm_head.load_state_dict(
        _resized(text_model.lm_head.state_dict(), "weight", len(tokenizer))
    )
    _match_text_scale(model)
    return model, tokenizer


def _match_text_scale(model: Mistral3ForConditionalGeneration) -> None:
    """Scale the fresh projector's last layer so image tokens start at the scale of the text
    embeddings they sit among (in place).

    Why: drawn with the usual 0.02 init, the projector's output is ~5x smaller than the
    `tiny` model's embeddings, and the projector-only step then grew it ~125x while the
    features stayed alike across images, a run that never learned to read
    (docs/PERFORMANCE.md, "Seeds"). The scale is measured on one fixed noise picture of
    4 x 4 tokens, so the same seed gives the same weights."""
    embeddings = model.model.language_model.embed_tokens.weight
    side = model.config.vision_config.patch_size * model.config.spatial_merge_size * 4
    noise = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values=noise, image_sizes=torch.tensor([[side, side]])
        ).pooler_output[0]
        scale = embeddings.pow(2).mean().sqrt() / features.pow(2).mean().sqrt().clamp_min(1e-12)
        model.model.multi_modal_projector.linear_2.weight.mul_(scale)


def _resized(state: dict[str, torch.Tensor], key: str, rows: int) -> dict[str, torch.Tensor]:
    """`state` with `key`'s matrix grown to `rows` rows, the new ones the mean of the old
    (a new token then starts as an average token, not as noise the size of a real one)."""
    weight = state[key]
    extra = weight.mean(dim=0, keepdim=True).expand(rows - weight.shape[0], -1)
    return {**state, key: torch.cat([weight, extra])}


def encode_images_separately(model: torch.nn.Module) -> torch.nn.Module:
    """Make the vision tower run image by image (in place); returns the model.

    Why: Pixtral runs a batch of images as one sequence of all their patches with a
    block-diagonal mask, so attention costs (total patches)^2: 16 images of 128 px cost
    16x what they cost one at a time. Measured on the `tiny` tower, 16 images of
    128 x 112 px, forward + backward on 1 thread: 0.93-1.03 s as a batch, 0.18 s one by
    one; the features agree to 6e-8 (tests/models/test_vision.py). Each image is also
    cropped to its own size first, so no padding is encoded.

    The replacement returns what `Mistral3Model.forward` reads (`pooler_output`: one
    feature tensor per image); the tower's hidden states are those of the first image.
    """
    inner = model.model
    if getattr(inner, "_forgeml_images_separately", False):
        return model
    batched = inner.get_image_features

    def get_image_features(pixel_values, image_sizes, **kwargs):
        outputs = []
        for index, (height, width) in enumerate(torch.as_tensor(image_sizes).tolist()):
            outputs.append(
                batched(
                    pixel_values=pixel_values[index : index + 1, :, :height, :width],
                    image_sizes=image_sizes[index : index + 1],
                    **kwargs,
                )
            )
        first = outputs[0]
        first.pooler_output = tuple(
            features for output in outputs for features in output.pooler_output
        )
        return first

    inner.get_image_features = get_image_features
    inner._forgeml_images_separately = True
    return model


def text_view(model: torch.nn.Module) -> torch.nn.Module:
    """The text model of a vision-language model as a `Mistral4ForCausalLM` whose modules
    are the VL model's own (no copy): what the serving engine steps, with image features
    put in the prompt's embeddings beforehand. A text model is returned as it is."""
    if not is_vision_language(model.config):
        return model
    unwrap = getattr(model, "get_base_model", None)  # PEFT's wrapper: its layers stay in
    model = unwrap() if unwrap is not None else model
    with torch.device("meta"):
        view = Mistral4ForCausalLM(model.config.text_config)
    view.model = model.model.language_model
    view.lm_head = model.lm_head
    return view.train(model.training)


def save_processor_files(directory: Path, config: Any) -> None:
    """transformers' processor files, so `AutoProcessor.from_pretrained(directory)` gives
    the same pixels and image tokens as forgeml (vLLM reads them too)."""
    vision = config.vision_config
    write_json_atomic(
        directory / "preprocessor_config.json",
        {
            "image_processor_type": "PixtralImageProcessor",
            "processor_class": "PixtralProcessor",
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
            "size": {"longest_edge": vision.image_size},
            "patch_size": vision.patch_size,
            "resample": 3,
            "rescale_factor": 1 / 255,
            "image_mean": list(IMAGE_MEAN),
            "image_std": list(IMAGE_STD),
        },
    )
    write_json_atomic(
        directory / "processor_config.json",
        {
            "processor_class": "PixtralProcessor",
            "patch_size": vision.patch_size,
            "spatial_merge_size": config.spatial_merge_size,
            "image_token": IMAGE_TOKEN,
            "image_break_token": IMAGE_BREAK_TOKEN,
            "image_end_token": IMAGE_END_TOKEN,
        },
    )


def vision_record(config: Any) -> dict[str, Any] | None:
    """What a model card and `models show` say about the image path (None: text only)."""
    if not is_vision_language(config):
        return None
    vision = config.vision_config
    return {
        "patch_size": vision.patch_size,
        "image_size": vision.image_size,
        "spatial_merge_size": config.spatial_merge_size,
        "hidden_size": vision.hidden_size,
        "layers": vision.num_hidden_layers,
    }


def stack_pixels(pixels: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Images [3, h, w] as one `pixel_values` [images, 3, H, W], zero-padded to the
    largest, and their `image_sizes` (what the vision tower reads of each)."""
    height = max(p.shape[1] for p in pixels)
    width = max(p.shape[2] for p in pixels)
    stacked = np.zeros((len(pixels), 3, height, width), dtype=np.float32)
    for index, image in enumerate(pixels):
        stacked[index, :, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([[p.shape[1], p.shape[2]] for p in pixels], dtype=torch.long)
    return {"pixel_values": torch.from_numpy(stacked), "image_sizes": sizes}
