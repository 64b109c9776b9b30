"""Images through forgeml's llama.cpp engine: a vision-language model's GGUF export (text
model + `mmproj`) answers image chats as the transformers engine answers them from the
model it was exported from, through a real server and the openai client.

Exported in f32, so the two engines differ by float rounding only: the same prompt
token counts (the same grid of image tokens) and the same greedy answers.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import pydoc_data.topics

import numpy as np
import pytest
from PIL import Image

from forgeml.core.context import record_artifact
from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, build_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.models.vision import add_vision, save_processor_files
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.background import BackgroundServer

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (make gguf)",
    ),
]

VL, EXPORT = "tiny-vl", "tiny-vl-gguf"


def png_url(width: int, height: int, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if seed % 2:  # a smooth picture as well as noise: the two must read differently
        pixels = np.broadcast_to(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None],
                                 (height, width, 3)).copy()  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = Workspace.init(tmp_path_factory.mktemp("llama-cpp-vision") / "ws")
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    text = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    model, tokenizer = add_vision(text, copy.deepcopy(tokenizer), "tiny", seed=1)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    save_processor_files(temp, model.config)
    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, VL, artifact)
    run_stage(workspace, "export.model", {"format": "gguf", "quant": "f32", "name": EXPORT},
              {"model": artifact})  # fmt: skip
    _, key = create_key(workspace, "vision", "inference")
    settings = ServeSettings(torch_threads=1, max_batch_size=4)
    app = create_app(workspace, [VL, EXPORT], settings)
    with BackgroundServer(app) as address:
        yield address, key
    workspace.close()


def ask(client, model: str, image_url: str, question: str = "What does the form say?"):
    content = [{"type": "text", "text": question},
               {"type": "image_url", "image_url": {"url": image_url}}]  # fmt: skip
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=6,
        temperature=0,
    )  # fmt: skip


def test_the_gguf_export_reads_images_as_the_model_does(server):
    import openai

    address, key = server
    client = openai.OpenAI(base_url=f"{address}/v1", api_key=key, max_retries=0)
    # 127 x 120 px is resized to 128 x 128 (8 rows of 8 tokens and a break or end);
    # 100 x 37 px to 112 x 48 (3 rows of 7 + 1).
    images = [png_url(127, 120, 0), png_url(127, 120, 1), png_url(100, 37, 2)]
    answers = {}
    for model in (VL, EXPORT):
        # One after another in one slot pool: the second image must not reuse the
        # first one's cache (same placeholder ids, different pictures).
        answers[model] = [ask(client, model, image) for image in images]
    for ours, theirs in zip(answers[EXPORT], answers[VL], strict=True):
        assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
        assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert answers[VL][0].usage.prompt_tokens - answers[VL][2].usage.prompt_tokens == 8 * 9 - 3 * 8
    texts = {answer.choices[0].message.content for answer in answers[VL]}
    assert len(texts) > 1, texts  # the answers depend on the picture


def test_images_in_one_batch_each_get_their_own_answer(server):
    """Requests with different images decode together in the slots; each answer is the
    one it gets alone."""
    import asyncio

    import openai

    address, key = server
    client = openai.AsyncOpenAI(base_url=f"{address}/v1", api_key=key, max_retries=0)
    images = [png_url(64 + 16 * index, 48, index) for index in range(4)]

    async def together():
        return await asyncio.gather(*(asyncio.to_thread(ask, sync, EXPORT, i) for i in images))

    sync = openai.OpenAI(base_url=f"{address}/v1", api_key=key, max_retries=0)
    alone = [ask(sync, EXPORT, image).choices[0].message.content for image in images]
    batched = [answer.choices[0].message.content for answer in asyncio.run(together())]
    assert batched == alone
    del client


def test_a_bad_image_is_a_400_from_the_gguf_too(server):
    import httpx

    address, key = server
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    refused = httpx.post(f"{address}/v1/chat/completions",
                         headers={"Authorization": f"Bearer {key}"},
                         json={"model": EXPORT, "messages": [{"role": "user", "content": [image]}]})  # fmt: skip
    assert refused.status_code == 400
    assert "messages[0].content[0]" in refused.text
