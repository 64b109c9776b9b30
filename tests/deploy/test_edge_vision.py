"""The edge bundle of a vision-language model reads images: it carries the vision tower
(the export's mmproj), and `./serve` answers image chats through llama.cpp's mtmd as
forgeml's own server answers them from the model (f32: the same prompt token counts and
greedy answers), through the real `openai` client; bad images get a 400 naming the part.

`./serve` runs in a fresh venv holding only the bundle's requirements.txt (which adds
Pillow for a vision model).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from deploy_fixtures import forgeml
from openai import OpenAI
from test_edge_runtime import free_port, install_runtime, stop, wait_until_up
from vision_fixtures import png_url, register_tiny_vision_model

from forgeml.core.hashing import sha256_file
from forgeml.core.workspace import Workspace
from forgeml.deploy.edge import VISION_PINS
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

VL = "tiny-vl"
MAX_IMAGES = 2


@pytest.fixture(scope="module")
def vision_workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edge-vision") / "ws"
    workspace = Workspace.init(root)
    try:
        register_tiny_vision_model(workspace, VL)
    finally:
        workspace.close()
    return root


@pytest.fixture(scope="module")
def bundle(vision_workspace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edge-vision-bundle") / "bundle"
    made = forgeml(vision_workspace, "deploy", "bundle", VL, "--target", "edge",
                   "--quant", "f32", "-o", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    return out


@pytest.fixture(scope="module")
def servers(vision_workspace, bundle, tmp_path_factory):
    """(edge server URL, forgeml server URL, forgeml key): both serve the same model."""
    venv = tmp_path_factory.mktemp("edge-vision-venv") / "venv"
    env = install_runtime(bundle / "requirements.txt", venv)
    port = free_port()
    edge = subprocess.Popen(
        ["./serve", "--port", str(port), "--threads", "2", "--max-images", str(MAX_IMAGES)],
        cwd=bundle,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workspace = Workspace.open(vision_workspace)
    try:
        wait_until_up(edge, port)
        _, key = create_key(workspace, "vision", "inference")
        app = create_app(workspace, [VL], ServeSettings(torch_threads=1))
        with BackgroundServer(app) as address:
            yield f"http://127.0.0.1:{port}", address, key
    finally:
        stop(edge)
        workspace.close()


def chat(image_url: str, question: str = "What does the form say?") -> list[dict]:
    content = [{"type": "text", "text": question},
               {"type": "image_url", "image_url": {"url": image_url}}]  # fmt: skip
    return [{"role": "user", "content": content}]


def test_the_bundle_carries_the_vision_tower_and_pins_pillow(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    vision = manifest["vision"]
    assert vision == {"mmproj": "mmproj-f32.gguf", "patch_size": 8, "image_size": 128,
                      "spatial_merge_size": 2}  # fmt: skip
    assert manifest["files"][vision["mmproj"]]["sha256"] == sha256_file(bundle / vision["mmproj"])
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert set(VISION_PINS) <= set(requirements)
    assert "image_url" in (bundle / "README.md").read_text()


def test_the_bundle_answers_images_as_forgeml_does(servers):
    edge_url, forgeml_url, key = servers
    edge = OpenAI(base_url=f"{edge_url}/v1", api_key="unused", max_retries=0)
    ours = OpenAI(base_url=f"{forgeml_url}/v1", api_key=key, max_retries=0)
    # 127 x 120 px becomes 128 x 128 (8 x 8 tokens); 100 x 37 px becomes 112 x 48: mtmd
    # alone would round these sides differently.
    answers = []
    for image in (png_url(127, 120, 0), png_url(127, 120, 1), png_url(100, 37, 2)):
        theirs = edge.chat.completions.create(
            model=VL, messages=chat(image), max_tokens=6, temperature=0
        )
        mine = ours.chat.completions.create(
            model=VL, messages=chat(image), max_tokens=6, temperature=0
        )
        assert theirs.usage.prompt_tokens == mine.usage.prompt_tokens
        # The same answer; only a stray byte token (an untrained model makes them) reads
        # differently: llama-cpp-python drops an invalid UTF-8 byte, forgeml writes U+FFFD.
        # (Token counts differ at a stop: forgeml counts the end-of-sequence token.)
        assert theirs.choices[0].message.content == mine.choices[0].message.content.replace(
            "\ufffd", ""
        )
        answers.append(mine.choices[0].message.content)
    assert len(set(answers)) > 1, answers  # the answers depend on the picture


@pytest.mark.parametrize(
    ("messages", "says", "param"),
    [
        (chat("https://example.com/form.png"), "only data: URLs", "messages[0].content[1]"),
        (chat("data:image/png;base64,AAAA"), "not a PNG, JPEG", "messages[0].content[1]"),
        (chat("data:image/png;base64,@@@"), "base64", "messages[0].content[1]"),
        (
            [{"role": "user", "content": chat(png_url(32, 32, 0))[0]["content"] * 3}],
            f"at most {MAX_IMAGES} per request",
            "messages[0].content[5]",
        ),
        (
            [*chat(png_url(32, 32, 0)), {"role": "assistant", "content": chat(png_url(32, 32, 1))[0]["content"]}],
            "messages[1].content: Input should be a valid string",  # its API's schema
            "messages[1].content",
        ),
    ],
    ids=["http-url", "not-an-image", "bad-base64", "too-many", "assistant-image"],
)  # fmt: skip
def test_a_bad_image_is_a_400_naming_the_part(servers, messages, says, param):
    edge_url, _, _ = servers
    refused = httpx.post(
        f"{edge_url}/v1/chat/completions", json={"messages": messages, "max_tokens": 2}, timeout=30
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert says in error["message"] and error["param"] == param, error
    # and the server goes on answering
    fine = httpx.post(
        f"{edge_url}/v1/chat/completions",
        json={"messages": chat(png_url(40, 40, 3)), "max_tokens": 2},
        timeout=60,
    )
    assert fine.status_code == 200, fine.text
