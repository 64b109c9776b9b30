"""Faults: `forgeml serve` killed with SIGKILL in the middle of storing an upload. After a
restart nothing half-written is left, the file was never listed, and uploads work."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from test_serve_cli import free_port, start_server

from forgeml.serve.auth import create_key


@pytest.mark.slow
def test_a_server_killed_mid_upload_leaves_nothing_half_written(serve_workspace, tmp_path):
    _, admin = create_key(serve_workspace, "faults", "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    line = json.dumps({"messages": [{"role": "user", "content": "Where is my parcel? " * 20},
                                    {"role": "assistant", "content": "On its way. " * 20}]})  # fmt: skip
    big = (line + "\n").encode() * 60_000  # ~50 MB: storing and checking it takes seconds
    files = serve_workspace.root / "files"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(serve_workspace, port)
    try:
        upload = threading.Thread(
            target=lambda: _ignore_errors(
                httpx.post, url + "/v1/files", headers=headers, timeout=120,
                files={"file": ("doomed.jsonl", big)}, data={"purpose": "fine-tune"},
            ),
            daemon=True,
        )  # fmt: skip
        upload.start()
        deadline = time.monotonic() + 60
        while not (
            files.is_dir() and any(p.name.startswith(".incoming-") for p in files.iterdir())
        ):
            assert time.monotonic() < deadline, "the upload never started to be stored"
            time.sleep(0.005)
        os.killpg(server.pid, signal.SIGKILL)  # the server and its engine process, mid-write
        server.wait(timeout=30)
        upload.join(timeout=60)
        assert any(p.name.startswith(".incoming-") for p in files.iterdir())  # caught mid-write
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    server = start_server(serve_workspace, port)
    try:
        assert not any(p.name.startswith(".incoming-") for p in files.iterdir())
        listed = httpx.get(url + "/v1/files", headers=headers).json()["data"]
        assert "doomed.jsonl" not in {f["filename"] for f in listed}
        fine = httpx.post(url + "/v1/files", headers=headers, data={"purpose": "fine-tune"},
                          files={"file": ("fine.jsonl", (line + "\n").encode() * 3)})  # fmt: skip
        assert fine.status_code == 200, fine.text
        assert (files / fine.json()["id"] / "data.jsonl").read_bytes() == (line + "\n").encode() * 3
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)


def _ignore_errors(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except httpx.HTTPError:
        pass  # the server was killed under it: that is the point
