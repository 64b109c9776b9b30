"""Vision-language models: a fresh tower over a text model, images as pixels and tokens.

What must hold for a user: the text model keeps every answer it had (add-vision), our
pixels are transformers' own (Pixtral's processor, from the model's files) and an image becomes Pixtral's grid
of tokens, the chat template renders
images identically in Python and Jinja, and bad images get errors naming the part.
"""

from __future__ import annotations

import base64
import io
import json
import pydoc_data.topics

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

from forgeml.core.errors import InputError
from forgeml.models.chat_template import render
from forgeml.models.image_inputs import (
    MAX_IMAGE_PIXELS,
    VISION_TOKENS,
    ImageShape,
    data_url,
    decode_image,
    expand_image_tokens,
    image_bytes,
    preprocess,
)
from forgeml.models.sizes import build_config, build_model, load_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.models.vision import add_vision, save_processor_files, stack_pixels, text_view

SHAPE = ImageShape(patch_size=8, longest_edge=128, spatial_merge_size=2)


def png(width: int, height: int, seed: int = 0, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def text_model():
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values())[:40], vocab_size=600)
    model = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory, text_model):
    model, tokenizer = text_model
    vl, tokenizer = add_vision(model, _copy(tokenizer), "tiny", seed=0)
    directory = tmp_path_factory.mktemp("vl")
    vl.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_processor_files(directory, vl.config)
    return directory


def _copy(tokenizer):
    import copy

    return copy.deepcopy(tokenizer)


def test_add_vision_keeps_every_text_answer(text_model, vision_dir) -> None:
    model, tokenizer = text_model
    vl = load_model(vision_dir).eval()
    ids = torch.tensor([tokenizer("def f(x): return x", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = vl(input_ids=ids).logits
        view = text_view(vl)(input_ids=ids).logits
    assert after.shape[-1] == before.shape[-1] + len(VISION_TOKENS)
    torch.testing.assert_close(after[..., : before.shape[-1]], before)
    torch.testing.assert_close(view, after)  # the engine's text view is the same model


SIZES = [(200, 120), (90, 300), (17, 17), (128, 128), (260, 500), (127, 120), (100, 37)]


@pytest.mark.parametrize("size", SIZES)
def test_pixels_are_transformers_pixtral_processors(size, vision_dir) -> None:
    """transformers' Pixtral image processor configured from the files add-vision writes,
    with the patch size `PixtralProcessor` hands it (patch x spatial merge: whole image
    tokens; the processor class itself needs torchvision, which forgeml does not ship)."""
    image = Image.open(io.BytesIO(png(*size)))
    ours, grid = preprocess(image.convert("RGB"), SHAPE)
    config = json.loads((vision_dir / "preprocessor_config.json").read_text())
    merge = json.loads((vision_dir / "processor_config.json").read_text())["spatial_merge_size"]
    processor = PixtralImageProcessorPil(
        size=config["size"], patch_size=config["patch_size"] * merge, resample=config["resample"]
    )
    theirs = processor([image], return_tensors="pt")
    height, width = theirs["image_sizes"][0].tolist()
    assert ours.shape == (3, height, width)
    np.testing.assert_allclose(ours, theirs["pixel_values"][0].numpy(), atol=1e-5)
    assert height % 16 == 0 and width % 16 == 0  # whole tokens: no patch row dropped
    assert (grid.rows, grid.cols) == (height // 16, width // 16)


def test_an_image_becomes_pixtrals_grid_of_tokens(vision_dir) -> None:
    """Pixtral's layout (transformers' PixtralProcessor, mistral-common): a row of [IMG]
    per row of image tokens, each row closed by [IMG_BREAK], the last by [IMG_END]."""
    tokenizer = AutoTokenizer.from_pretrained(vision_dir)
    image_id, break_id, end_id = (tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS)
    _, grid = preprocess(decode_image(png(48, 30), "image"), SHAPE)  # 48 x 30 px: 3 x 2
    assert (grid.rows, grid.cols) == (2, 3)
    text = render([{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}])
    ids, labels = expand_image_tokens(
        tokenizer(text, add_special_tokens=False)["input_ids"],
        [7] * len(tokenizer(text, add_special_tokens=False)["input_ids"]),
        [grid],
        (image_id, break_id, end_id),
    )
    start = ids.index(image_id)
    row = [image_id] * 3
    assert ids[start : start + 8] == [*row, break_id, *row, end_id]
    assert labels[start : start + 8] == [-100] * 8  # images are read, never trained on
    assert ids.count(image_id) == grid.image_tokens
    with pytest.raises(InputError, match="1 image placeholders for 2 images"):
        expand_image_tokens(ids[: start + 1], None, [grid, grid], (image_id, break_id, end_id))


def test_jinja_template_renders_images_like_python(vision_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(vision_dir)
    messages = [
        {"role": "system", "content": "Read forms."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "a"}},
                {"type": "text", "text": "and"},
                {"type": "image_url", "image_url": "b"},  # Mistral's shape
            ],
        },
        {"role": "assistant", "content": "Two forms."},
        {"role": "user", "content": "Thanks"},
    ]
    python = render(messages)
    assert python.count("[IMG]") == 2
    jinja = tokenizer.apply_chat_template(messages, tokenize=False)
    assert jinja == python


def test_a_forward_with_images_uses_them(vision_dir) -> None:
    vl = load_model(vision_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(vision_dir)
    token_ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS)
    outputs = []
    for seed in (0, 1):
        pixels, grid = preprocess(decode_image(png(64, 48, seed), "image"), SHAPE)
        ids, _ = expand_image_tokens([1, token_ids[0], 5], None, [grid], token_ids)
        with torch.no_grad():
            outputs.append(vl(input_ids=torch.tensor([ids]), **stack_pixels([pixels])).logits)
    assert not torch.allclose(outputs[0], outputs[1])  # different images, different logits


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/a.png", "never fetched"),
        ("data:image/tiff;base64,AAAA", "unsupported image type"),
        ("data:image/png;base64,%%%", "base64 is not valid"),
        ("file.png", "base64 data URL"),
    ],
)
def test_image_urls_are_checked(url, message) -> None:
    with pytest.raises(InputError, match=message) as error:
        image_bytes(url, "messages[0].content[1]")
    assert error.value.field == "messages[0].content[1]"


def test_bad_images_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(InputError, match="not a PNG, JPEG"):
        decode_image(b"GIF89 but not really", "img")
    with pytest.raises(InputError, match="not a PNG, JPEG"):
        decode_image(png(20, 20, fmt="TIFF"), "img")
    with pytest.raises(InputError, match="cannot be decoded"):
        decode_image(png(64, 64)[:200], "img")
    with pytest.raises(InputError, match="cannot be decoded"):  # a PNG signature, then junk
        decode_image(b"\x89PNG\r\n\x1a\nnot really a png", "img")
    side = int(MAX_IMAGE_PIXELS**0.5) + 10  # a 1-bit image: tiny file, huge pixel count
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    with pytest.raises(InputError, match="over the 40,000,000 allowed"):
        decode_image(buffer.getvalue(), "img")
    with pytest.raises(InputError, match="at least 16 pixels a side"):  # 1 px wide once shrunk
        preprocess(decode_image(png(1, 400), "img"), SHAPE, "img")
    assert preprocess(decode_image(png(5, 200), "img"), SHAPE)[1].cols == 1  # thin, still read
    assert decode_image(png(30, 20, fmt="JPEG"), "img").size == (30, 20)
    assert data_url(b"x").startswith("data:image/png;base64,")
    assert base64.b64decode(data_url(b"xyz").split(",")[1]) == b"xyz"


def test_the_same_seed_gives_the_same_tower(text_model) -> None:
    model, tokenizer = text_model
    first, _ = add_vision(_copy(model), _copy(tokenizer), "tiny", seed=3)
    second, _ = add_vision(_copy(model), _copy(tokenizer), "tiny", seed=3)
    other, _ = add_vision(_copy(model), _copy(tokenizer), "tiny", seed=4)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(a[key].equal(b[key]) for key in a)
    assert not all(a[key].equal(c[key]) for key in a if "vision_tower" in key)


def test_image_tokens_start_at_the_text_embeddings_scale(text_model) -> None:
    """A fresh projector's output is scaled to the text embeddings' RMS (drawn with the
    usual init it is ~5x smaller, and training the projector alone then failed on some
    seeds: docs/PERFORMANCE.md), on real pictures, not only the noise it was set on."""
    model, tokenizer = text_model
    for seed in (0, 1, 2):
        vl, _ = add_vision(_copy(model), _copy(tokenizer), "tiny", seed=seed)
        text_rms = vl.model.language_model.embed_tokens.weight.pow(2).mean().sqrt()
        pixels = [preprocess(decode_image(png(96, 80, k), "i"), SHAPE)[0] for k in range(3)]
        with torch.no_grad():
            features = torch.cat(
                list(vl.model.get_image_features(**stack_pixels(pixels)).pooler_output)
            )
        ratio = float(features.pow(2).mean().sqrt() / text_rms)
        assert 0.5 < ratio < 2.0, f"seed {seed}: image tokens at {ratio:.2f}x the text's scale"


def test_trainable_parts_freeze_the_rest(vision_dir, text_model) -> None:
    from forgeml.train.vision_training import freeze_for

    vl = load_model(vision_dir)
    assert freeze_for(vl, "vision") == ["multi_modal_projector", "vision_tower"]
    trained = {name.split(".")[1] for name, p in vl.named_parameters() if p.requires_grad}
    assert trained == {"multi_modal_projector", "vision_tower"}
    with pytest.raises(InputError, match="needs a vision-language model"):
        freeze_for(text_model[0], "projector")


def test_images_encoded_one_by_one_give_the_batched_features(vision_dir) -> None:
    """load_model runs the tower image by image (far cheaper: models/vision.py); the
    features are those of transformers' batched call, padding and all."""
    from transformers import AutoModelForImageTextToText

    ours = load_model(vision_dir).eval()
    theirs = AutoModelForImageTextToText.from_pretrained(vision_dir).eval()
    pixels = [
        preprocess(decode_image(png(w, h, w), "i"), SHAPE)[0]
        for w, h in ((64, 48), (30, 90), (128, 128))
    ]
    batch = stack_pixels(pixels)
    with torch.no_grad():
        a = torch.cat(list(ours.model.get_image_features(**batch).pooler_output))
        b = torch.cat(list(theirs.model.get_image_features(**batch).pooler_output))
    assert a.shape == b.shape == (3 * 4 + 6 * 2 + 8 * 8, 64)  # rows x cols per image
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_models_sizes_lists_the_vision_towers(vision_dir) -> None:
    """`forgeml models sizes --vision` (the installed CLI): each tower's parameters are
    those of the tower add-vision builds."""
    import subprocess
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "forgeml", "--json", "models", "sizes", "--vision"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = {row["vision"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"tiny", "small", "pixtral"}
    built = load_model(vision_dir).model.vision_tower
    assert rows["tiny"]["parameters"] == sum(p.numel() for p in built.parameters())
    assert rows["tiny"]["pixels_per_token"] == 16 and rows["tiny"]["max_image_tokens"] == 64
    assert rows["pixtral"]["parameters"] == pytest.approx(0.4e9, rel=0.02)
