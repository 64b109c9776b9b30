"""`forgeml serve` configured only by environment variables, as a container or a systemd
unit runs it: FORGEML_MODELS, FORGEML_HOST/PORT and FORGEML_SERVING_<FIELD> (between
forgeml.yaml and the command line). Bad variables fail before the server starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from test_serve_cli import free_port

from forgeml.serve.auth import create_key
from forgeml.serve.settings import ServeSettings, settings_from_environment

FORGEML = str(Path(sys.executable).parent / "forgeml")


def serve_from_environment(workspace, **variables: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEML_SERVING_")}
    env.update(FORGEML_WORKSPACE=str(workspace.root), **variables)
    return subprocess.Popen([FORGEML, "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


@pytest.mark.slow
def test_serve_takes_every_setting_from_the_environment(serve_workspace):
    _, key = create_key(serve_workspace, "env-test", "inference")
    port = free_port()
    process = serve_from_environment(
        serve_workspace,
        FORGEML_MODELS="tiny-chat",
        FORGEML_HOST="127.0.0.1",
        FORGEML_PORT=str(port),
        FORGEML_SERVING_TORCH_THREADS="1",
        FORGEML_SERVING_ENGINE_PROCESS="false",
        FORGEML_SERVING_JOB_WORKERS="0",
        FORGEML_SERVING_MAX_REQUEST_BYTES="2048",
        FORGEML_SERVING_KEY_REQUESTS_PER_MINUTE="none",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        chat = {"model": "tiny-chat", "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert httpx.post(url, json=chat, headers=headers, timeout=60).status_code == 200
        chat["messages"][0]["content"] = "x" * 4000  # over FORGEML_SERVING_MAX_REQUEST_BYTES
        assert httpx.post(url, json=chat, headers=headers, timeout=60).status_code == 413
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FORGEML_SERVING_MAX_BATCH_SIZE", "lots", "FORGEML_SERVING_MAX_BATCH_SIZE"),
        ("FORGEML_SERVING_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("FORGEML_SERVING_MAX_BATCH_SIZ", "8", "unknown setting FORGEML_SERVING_MAX_BATCH_SIZ"),
        ("FORGEML_SERVING_ENGINE", "tensorrt", "FORGEML_SERVING_ENGINE"),
    ],
)
def test_a_bad_variable_is_refused_by_name(serve_workspace, variable, value, message):
    process = serve_from_environment(
        serve_workspace,
        FORGEML_MODELS="tiny-chat",
        FORGEML_PORT=str(free_port()),
        **{variable: value},
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert message in stderr and "Traceback" not in stderr


def test_no_models_named_anywhere_is_a_usage_error(serve_workspace):
    process = serve_from_environment(serve_workspace)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "Missing argument" in stderr
    assert "Traceback" not in stderr


def test_environment_sits_between_forgeml_yaml_and_the_command_line(serve_workspace):
    values = settings_from_environment(
        {"FORGEML_SERVING_MAX_BATCH_SIZE": "8", "FORGEML_SERVING_ON_DEMAND_MODELS": "a, b",
         "FORGEML_SERVING_VLLM_ARGS": '["--tensor-parallel-size", "2"]', "HOME": "/root"}
    )  # fmt: skip
    settings = ServeSettings(**{**yaml.safe_load("max_batch_size: 4\nmax_waiting: 9"), **values})
    assert (settings.max_batch_size, settings.max_waiting) == (8, 9)
    assert settings.on_demand_models == ["a", "b"]
    assert settings.vllm_args == ["--tensor-parallel-size", "2"]
