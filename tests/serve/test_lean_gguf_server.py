"""Serving a GGUF export is lean: `forgeml serve` imports neither torch nor transformers.

The server runs as a user runs it (`python -m forgeml serve EXPORT` in a process of its
own) with Python's import log on (PYTHONPROFILEIMPORTTIME), and answers what a chat
client asks of it: greedy and seeded sampled text, a JSON schema, a required tool call,
a burst of concurrent requests. Then its import log must name none of the heavy
libraries the GGUF path does not use (README, "Which engine"), and with
`serving.language_signal` off not the language identifier either, while the request log
keeps every other drift signal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serving_fixtures import register_tiny_model
from sqlalchemy import select
from test_serve_cli import free_port

from forgeml.core.runs import run_stage
from forgeml.core.schema import RequestLog as RequestLogRow
from forgeml.core.workspace import Workspace
from forgeml.serve.auth import create_key

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (make gguf)",
    ),
]

EXPORT = "lean-gguf"
# What the GGUF path must not load: torch and transformers (~400 MB between them), and
# libraries only other routes use (scipy: drift statistics; pyarrow: datasets; alembic:
# migrations, not needed to open an up-to-date registry; diskcache: llama-cpp-python's
# high-level Llama class, which the engine does not use; httpx: webhooks and batches).
HEAVY = ("torch", "transformers", "scipy", "pyarrow", "accelerate", "safetensors", "alembic",
         "diskcache", "httpx")  # fmt: skip
LANGUAGE_ID = "py3langid"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def lean_server(tmp_path_factory):
    """`python -m forgeml serve EXPORT` with its import log in a file, language signal
    off; yields (url, key, import log, workspace root), stops it after the tests."""
    root = tmp_path_factory.mktemp("lean")
    workspace = Workspace.init(root / "ws")
    model = register_tiny_model(workspace)
    run_stage(workspace, "export.model", {"format": "gguf", "name": EXPORT}, {"model": model})
    _, key = create_key(workspace, "lean", "inference")
    workspace.close()
    port, log_path = free_port(), root / "imports.log"
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root / "ws"), "serve", EXPORT]
    command += ["--port", str(port), "--threads", "1", "--job-workers", "0"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            env={
                **os.environ,
                "PYTHONPROFILEIMPORTTIME": "1",
                "FORGEML_SERVING_LANGUAGE_SIGNAL": "false",
            },
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, log_path)
        yield url, key, log_path, root / "ws", process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)


def wait_until_healthy(process: subprocess.Popen, url: str, log_path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


def imported(log_path) -> set[str]:
    """Top-level packages in the import log (`import time: self | cumulative | name`)."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +([\w.]+)$", log_path.read_text(), re.M)
    assert names, "no import log: was PYTHONPROFILEIMPORTTIME honoured?"
    return {name.split(".")[0] for name in names}


def test_serving_a_gguf_answers_chat_without_torch_or_transformers(lean_server):
    url, key, log_path, workspace_root, process = lean_server
    chat = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0).chat.completions

    def ask(content: str, **options):
        messages = [{"role": "user", "content": content}]
        return chat.create(model=EXPORT, messages=messages, **options)

    greedy = [ask("hello", temperature=0, max_tokens=12) for _ in range(2)]
    assert greedy[0].choices[0].message.content == greedy[1].choices[0].message.content
    assert greedy[0].usage.completion_tokens > 0

    seeded = {"temperature": 0.9, "top_p": 0.9, "seed": 11, "max_tokens": 16}
    first, second = ask("hello", **seeded), ask("hello", **seeded)
    assert first.choices[0].message.content == second.choices[0].message.content

    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    answer = ask("Weather in Paris, as JSON", response_format=schema, max_tokens=48, seed=1)
    parsed = json.loads(answer.choices[0].message.content)
    assert set(parsed) >= {"city", "days"} and isinstance(parsed["days"], int)

    called = ask("Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required", max_tokens=48)
    (call,) = called.choices[0].message.tool_calls[:1]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    with ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(lambda i: ask(f"order {i}", max_tokens=8, temperature=1.0), range(8)))
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in burst)

    assert imported(log_path) & {*HEAVY, LANGUAGE_ID} == set()

    os.killpg(process.pid, signal.SIGINT)  # the request log is flushed on the way out
    assert process.wait(timeout=60) == 0
    workspace = Workspace.open(workspace_root)
    try:
        with workspace.registry.session() as session:
            rows = session.scalars(select(RequestLogRow)).all()
            logged = [row.request["signals"] for row in rows]
    finally:
        workspace.close()
    assert len(logged) == 2 + 2 + 1 + 1 + 8
    assert all("language" not in signals and len(signals["sketch"]) == 64 for signals in logged)
