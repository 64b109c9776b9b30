"""`forgeml serve` end to end: a real process, a real port, the OpenAI client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from forgeml.core.errors import NotFoundError
from forgeml.serve import create_app
from forgeml.serve.auth import create_key

# cli/app.py registers `serve` as a command; this runs the same function standalone.
SERVE = (
    "import typer; from forgeml.cli.serve import serve; "
    "app = typer.Typer(); app.command()(serve); app()"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_command_answers_an_openai_client(serve_workspace):
    _, key = create_key(serve_workspace, "cli-test", "inference")
    port = free_port()
    process = start_server(serve_workspace, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        response = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert response.choices[0].finish_reason in ("stop", "length")
        spawned = children(process.pid)  # the engine process, the job worker, ...
        assert spawned
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the server and its engine process
        assert process.wait(timeout=60) == 0
        assert "Traceback" not in process.stderr.read()
        # A child may still be finishing its exit when the server's own wait returns
        # (multiprocessing's resource tracker leaves on the EOF of the server's exit):
        # each gets a few seconds to go, and one still running after that fails.
        for pid in spawned:
            assert _gone_within(pid, seconds=10), f"pid {pid} outlived the server"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


def start_server(workspace, port: int) -> subprocess.Popen:
    """`forgeml serve tiny-chat` on `port`, in a process group of its own, once /health answers."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "tiny-chat", "--port", str(port), "--threads", "1"],
        env={**os.environ, "FORGEML_WORKSPACE": str(workspace.root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C sees it
    )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """Direct children of a process, on Linux (others: none, and the check is skipped)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return [-1]


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while os.path.exists(f"/proc/{pid}") and not _zombie(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_unknown_model_ref_fails_before_serving(serve_workspace):
    with pytest.raises(NotFoundError, match="is not set"):
        create_app(serve_workspace, ["tiny-chat@missing"])
