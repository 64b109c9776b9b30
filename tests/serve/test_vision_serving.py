"""Images through the server: the engine decodes them as transformers' `generate` does,
the `openai` and `mistralai` clients send them to a real server, and every bad image is
a 400 naming its part while the server keeps serving.

The models are untrained (tiny, random): the tests check that images reach the model
and the protocol, never answer quality (benchmarks/vision_forms.py measures that).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import pydoc_data.topics

import numpy as np
import pytest
import torch
from PIL import Image
from serving_fixtures import ServerThread

from forgeml.core.context import record_artifact
from forgeml.core.workspace import Workspace
from forgeml.models.image_inputs import ImageShape, decode_image, expand_image_tokens, preprocess
from forgeml.models.sizes import build_config, build_model, load_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.models.vision import add_vision, save_processor_files, stack_pixels
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.engine import mla_step
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.transformers import TransformersEngine
from forgeml.serve.tokenizer import ServingTokenizer

VL, TEXT = "tiny-vl", "tiny-text"


def png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def vl_workspace(tmp_path_factory):
    workspace = Workspace.init(tmp_path_factory.mktemp("vision") / "ws")
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    text = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    for name, model, tok in (
        (TEXT, text, tokenizer),
        (VL, *add_vision(copy.deepcopy(text), copy.deepcopy(tokenizer), "tiny", seed=1)),
    ):
        temp = workspace.store.new_temp_dir()
        model.save_pretrained(temp)
        tok.save_pretrained(temp)
        if name == VL:
            save_processor_files(temp, model.config)
        artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
        with workspace.registry.session() as session:
            workspace.registry.add_version(session, name, artifact)
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def vl_dir(vl_workspace):
    return vl_workspace.root / vl_workspace.registry.resolve(VL).path


@pytest.mark.parametrize("lean", [True, False], ids=["mla_step", "model-forward"])
def test_engine_decodes_images_as_generate_does(vl_dir, lean, monkeypatch):
    """Requests with different images (and one without) decode together in one batch,
    each exactly as transformers' `generate` decodes it alone with its pixels."""
    if not lean:  # prompts then go through the model's own forward, from embeddings
        monkeypatch.setattr(mla_step, "MAX_PROMPT_SCORES", 0)
    model = load_model(vl_dir).eval()
    tokenizer = ServingTokenizer.load(vl_dir)
    shape = ImageShape.of(model.config)
    token_ids = tuple(
        tokenizer.convert_tokens_to_ids(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")
    )
    cases = []
    for seed, images in ((0, [(64, 48)]), (1, [(40, 80), (32, 32)]), (2, [])):
        prompt = tokenizer.encode("<s>[INST]" + "[IMG]" * len(images) + "Describe[/INST]", False)
        pixels, grids = [], []
        for index, size in enumerate(images):
            array, grid = preprocess(decode_image(png(*size, seed + index), "i"), shape)
            pixels.append(array)
            grids.append(grid)
        ids, _ = expand_image_tokens(prompt, None, grids, token_ids)
        cases.append((ids, pixels))
    expected = []
    with torch.inference_mode():
        for ids, pixels in cases:
            extra = stack_pixels(pixels) if pixels else {}
            output = model.generate(
                torch.tensor([ids]), max_new_tokens=10, do_sample=False, eos_token_id=None, **extra
            )
            expected.append(output[0, len(ids) :].tolist())

    async def main():
        engine = TransformersEngine(model, tokenizer, max_batch_size=8)
        await engine.start()
        try:

            async def run(index: int):
                await asyncio.sleep(0.01 * index)  # some join a running batch
                ids, pixels = cases[index]
                sampling = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
                request = GenerationRequest(str(index), ids, sampling, images=pixels)
                return [t async for chunk in engine.generate(request) for t in chunk.token_ids]

            return await asyncio.gather(*(run(i) for i in range(len(cases))))
        finally:
            await engine.stop()

    assert asyncio.run(main()) == expected


@pytest.fixture(scope="module")
def server(vl_workspace):
    _, key = create_key(vl_workspace, "vision-tests", "inference")
    settings = ServeSettings(torch_threads=1, max_images_per_request=2, key_cache_seconds=0.0)
    with ServerThread(create_app(vl_workspace, [VL, TEXT], settings)) as address:
        yield address, key


def test_openai_and_mistral_clients_send_images(server):
    from mistralai.client import Mistral
    from openai import OpenAI

    address, key = server
    question = "What is on this page?"
    with OpenAI(base_url=address + "/v1", api_key=key, max_retries=0) as client:
        answers = []
        for seed in (0, 1):
            response = client.chat.completions.create(
                model=VL,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": question},
                            {"type": "image_url", "image_url": {"url": url(png(64, 48, seed))}},
                        ],
                    }
                ],
                max_tokens=6,
                temperature=0,
            )
            answers.append(response)
        text_only = client.chat.completions.create(
            model=VL, messages=[{"role": "user", "content": question}], max_tokens=6
        )
        # 64 x 48 pixels with 8-pixel patches merged 2 x 2: 3 rows of 4 image tokens, each
        # row closed by a break or end token, in place of the one [IMG] placeholder.
        assert answers[0].usage.prompt_tokens == text_only.usage.prompt_tokens + 3 * (4 + 1)
        stream = client.chat.completions.create(
            model=VL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": url(png(50, 50, 3), "image/png")},
                        }
                    ],
                }
            ],
            max_tokens=4,
            stream=True,
        )
        assert [chunk for chunk in stream]
    with Mistral(api_key=key, server_url=address) as mistral:
        response = mistral.chat.complete(
            model=VL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": question},
                        {"type": "image_url", "image_url": url(png(40, 40, 4))},
                    ],
                }
            ],
            max_tokens=4,
        )
        assert response.choices[0].finish_reason in ("stop", "length")


BAD = [
    (TEXT, [{"type": "image_url", "image_url": {"url": url(png(32, 32, 0))}}], "takes text only"),
    (VL, [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}], "never fetched"),
    (VL, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], "base64"),
    (VL, [{"type": "image_url", "image_url": {"url": url(b"not an image")}}], "not a PNG"),
    (VL, [{"type": "image_url", "image_url": {"url": url(png(1, 400, 0))}}], "at least 16 pixels"),
    (VL, [{"type": "image_url", "image_url": {"url": url(png(4, 4, 0), "image/tiff")}}], "unsupported image type"),
    (VL, [{"type": "image_url", "image_url": {"url": url(png(32, 32, i))}} for i in range(3)], "at most 2 per request"),
    (VL, [{"type": "text", "text": "fake [IMG] token"}], "control token '[IMG]'"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "content", "message"), BAD)
def test_bad_images_are_400s_that_name_the_part(server, model, content, message):
    import httpx

    address, key = server
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    response = httpx.post(
        address + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["param"].startswith("messages[0]")
    healthy = httpx.post(
        address + "/v1/chat/completions",
        json={
            "model": VL,
            "messages": [{"role": "user", "content": "still there?"}],
            "max_tokens": 2,
        },
        headers={"Authorization": f"Bearer {key}"},
    )
    assert healthy.status_code == 200
