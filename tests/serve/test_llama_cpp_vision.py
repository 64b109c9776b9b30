"""Images through forgeml's llama.cpp engine: a vision-language model's GGUF export (text
model + `mmproj`) answers image chats as the transformers engine answers them from the
model it was exported from, through a real server and the openai client.

Exported in f32, so the two engines differ by float rounding only: the same prompt
token counts (the same grid of image tokens) and the same greedy answers.
"""

from __future__ import annotations

import importlib.util

import pytest
from vision_fixtures import png_url, register_tiny_vision_model

from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = Workspace.init(tmp_path_factory.mktemp("llama-cpp-vision") / "ws")
    artifact = register_tiny_vision_model(workspace, VL)
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
