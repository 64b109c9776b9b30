"""Soak: `forgeml serve` under 64 concurrent streaming clients for a while, some hanging
up mid-stream, bad requests mixed in. Afterwards every good request was answered, none
got a 5xx, the server is healthy and its memory is back near where it started.

Loopback only and bounded: FORGEML_SOAK_SECONDS (default 20) of traffic. The longer run:

    FORGEML_SOAK_SECONDS=300 .venv/bin/pytest tests/serve/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from test_serve_cli import children, free_port, start_server

from forgeml.serve.auth import create_key

SECONDS = float(os.environ.get("FORGEML_SOAK_SECONDS", "20"))
CLIENTS = 64
BAD_REQUESTS = [  # (body, headers override) each must get a 4xx in the API's error shape
    ({"model": "tiny-chat", "messages": []}, None),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}, None),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, None),
    ({"model": "tiny-chat", "messages": [{"role": "wizard", "content": "hi"}]}, None),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}, {"Authorization": "Bearer fml-nope"}),
    ("{not json", None),
]  # fmt: skip


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the engine process, job workers)."""
    total = 0
    for each in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
    return total


async def good_stream(client: httpx.AsyncClient, hang_up: bool) -> str:
    body = {"model": "tiny-chat", "stream": True, "max_tokens": 8, "seed": random.randrange(2**31),
            "messages": [{"role": "user", "content": f"ticket {random.random()}"}]}  # fmt: skip
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code == 429:
            return "busy"  # the queue is full: a clean refusal, asked to retry later
        assert response.status_code == 200, await response.aread()
        finish = None
        async for line in response.aiter_lines():
            if hang_up:
                return "hung up"  # leaving the block closes the connection mid-stream
            if line.startswith("data: ") and line != "data: [DONE]":
                finish = json.loads(line[6:])["choices"][0].get("finish_reason") or finish
            if line == "data: [DONE]":
                assert finish in ("stop", "length"), finish
                return "answered"
    raise AssertionError("the stream ended without [DONE]")


async def bad_request(client: httpx.AsyncClient) -> str:
    body, headers = random.choice(BAD_REQUESTS)
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = await client.post("/v1/chat/completions", headers=headers, **kwargs)
    assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
    assert "message" in response.json()["error"]
    return "refused"


async def one_client(url: str, key: str, deadline: float, outcomes: Counter) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        while time.monotonic() < deadline:
            roll = random.random()
            if roll < 0.15:
                outcomes[await bad_request(client)] += 1
            else:
                outcomes[await good_stream(client, hang_up=roll < 0.3)] += 1


async def soak(url: str, key: str, seconds: float) -> Counter:
    outcomes: Counter = Counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one_client(url, key, deadline, outcomes) for _ in range(CLIENTS)))
    return outcomes


@pytest.mark.slow
def test_soak_many_streaming_clients_with_hang_ups_and_bad_requests(serve_workspace):
    random.seed(0)
    _, key = create_key(serve_workspace, "soak", "inference")
    _, admin = create_key(serve_workspace, "soak-admin", "admin")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(serve_workspace, port)
    try:
        asyncio.run(soak(url, key, seconds=5))  # a warm-up round sets the memory baseline
        before = rss_kib(server.pid)
        outcomes = asyncio.run(soak(url, key, SECONDS))
        time.sleep(2)  # hung-up streams are aborted; let the engine drain
        after = rss_kib(server.pid)
        print(f"soak {SECONDS:.0f}s x {CLIENTS} clients: {dict(outcomes)}; "
              f"RSS {before // 1024} -> {after // 1024} MiB")  # fmt: skip

        assert outcomes["answered"] > CLIENTS and outcomes["hung up"] and outcomes["refused"]
        assert httpx.get(url + "/health").json()["status"] == "ok"
        metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).text
        running = [
            line
            for line in metrics.splitlines()
            if line.startswith(("forgeml_running_sequences", "forgeml_queue_depth"))
        ]
        assert all(line.endswith(" 0.0") for line in running), running
        assert after < before * 1.25 + 50 * 1024, (before, after)  # back near its start
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)
    assert "Traceback" not in server.stderr.read()
