"""The edge bundle runs where forgeml is not installed: a fresh venv with only the bundle's
requirements.txt, `./serve`, and the real `openai` client, concurrent requests included.

llama-cpp-python comes from the wheel `make gguf` caches (PyPI has only its source,
a ~10 minute build); every other package from PyPI (pip's cache makes repeats fast).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from deploy_fixtures import MODEL, forgeml
from export_fixtures import greedy, load
from openai import OpenAI
from transformers import AutoTokenizer

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (make gguf)",
    ),
]
WHEELS = Path(os.environ.get("FORGEML_WHEEL_CACHE", Path.home() / ".cache/forgeml-wheels"))
CHAT = [{"role": "user", "content": "Where is order ORD-98765, placed on 2024-05-01?"}]
STEPS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bare_env(venv: Path) -> dict[str, str]:
    """A user's shell with the venv activated: no PYTHONPATH, nothing of forgeml's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return env | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
    }


@pytest.fixture
def runtime(edge_workspace, tmp_path):
    """The bundle and a fresh venv holding only its requirements."""
    bundle = tmp_path / "bundle"
    made = forgeml(
        edge_workspace,
        "deploy",
        "bundle",
        MODEL,
        "--target",
        "edge",
        "--quant",
        "f16",
        "-o",
        str(bundle),
    )
    assert made.returncode == 0, made.stderr
    venv = tmp_path / "venv"
    return bundle, venv, install_runtime(bundle / "requirements.txt", venv)


def install_runtime(requirements: Path, venv: Path) -> dict[str, str]:
    """A fresh venv holding only `requirements`; the environment of a shell using it."""
    env = bare_env(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    install = subprocess.run(
        [
            venv / "bin/python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--find-links",
            str(WHEELS),
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return env


def test_the_bundle_serves_the_openai_client_with_only_its_runtime(runtime, edge_model_dir):
    bundle, venv, env = runtime
    for absent in ("torch", "forgeml", "transformers"):
        probe = subprocess.run(
            [venv / "bin/python", "-c", f"import {absent}"], capture_output=True, text=True, env=env
        )
        assert f"No module named '{absent}'" in probe.stderr

    port = free_port()
    server = subprocess.Popen(
        ["./serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
        cwd=bundle,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_up(server, port)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == [f"{MODEL}:1"]

        # Greedy: the tokens transformers picks from the same checkpoint, after the prompt
        # the model's own chat template renders (the same number of prompt tokens).
        tokenizer = AutoTokenizer.from_pretrained(edge_model_dir)
        prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)["input_ids"]
        expected = tokenizer.decode(
            greedy(load(edge_model_dir), prompt, STEPS), skip_special_tokens=True
        )
        answer = client.chat.completions.create(
            model=f"{MODEL}:1", messages=CHAT, max_tokens=STEPS, temperature=0
        )
        text = answer.choices[0].message.content
        assert answer.usage.prompt_tokens == len(prompt)
        # The untrained model emits stray bytes: llama.cpp drops the ones that are not
        # UTF-8 where transformers shows U+FFFD.
        assert text and expected.replace("\ufffd", "").startswith(text), (text, expected)

        # Four at once, one streaming: the server takes them in turn, each to the end.
        def ask(index: int) -> str:
            question = [{"role": "user", "content": f"Question {index}: where is ORD-{index}?"}]
            if index == 0:
                stream = client.chat.completions.create(
                    model=f"{MODEL}:1", messages=question, max_tokens=16, stream=True
                )
                choices = [chunk.choices[0] for chunk in stream if chunk.choices]
                # Not cut short when the others arrive (llama_cpp.server's default is to
                # end a stream early, without a finish reason, once another request waits).
                assert choices[-1].finish_reason in ("length", "stop"), choices[-1]
                return "".join(choice.delta.content or "" for choice in choices)
            reply = client.chat.completions.create(
                model=f"{MODEL}:1", messages=question, max_tokens=16
            )
            assert reply.choices[0].finish_reason in ("length", "stop")
            return reply.choices[0].message.content

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(4)))
        assert all(answers), answers

        # A text model's bundle refuses an image with a 400 naming the part.
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        refused = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": [image]}]},
            timeout=30,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "messages[0].content[0]"
        assert "takes text only" in refused.json()["error"]["message"]
        assert server.poll() is None
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; killed if it has not ended within 20 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def wait_until_up(server: subprocess.Popen, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"./serve exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    pytest.fail("./serve did not answer within 90 s")
