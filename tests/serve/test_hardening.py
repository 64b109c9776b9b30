"""The server under hostile or unlucky traffic, over real HTTP to a real server: bad
seeds, a dead engine, bodies with no key or too many bytes, per-key limits, a busy
registry, and database errors that must not leak prompts into logs (issue 14)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from serving_fixtures import MODEL_NAME, ServerThread
from sqlalchemy import text

from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.process import ProcessEngine

HELLO = [{"role": "user", "content": "Hello"}]
REQUESTS_PER_MINUTE = 20
_names = itertools.count()


@dataclass
class Guarded:
    url: str
    app: object
    workspace: Workspace

    def key(self, scope: str = "inference") -> str:
        return create_key(self.workspace, f"hardening-{next(_names)}", scope)[1]

    def engine(self):
        return self.app.state.pool.models[0].engine


@pytest.fixture(scope="module")
def guarded(serve_workspace: Workspace) -> Iterator[Guarded]:
    settings = ServeSettings(
        max_batch_size=4,
        max_waiting=4,
        torch_threads=1,
        engine_process=True,
        log_prompts=True,
        key_cache_size=3,
        key_max_concurrent=2,
        key_requests_per_minute=REQUESTS_PER_MINUTE,
        max_request_bytes=64 * 1024,
        max_upload_bytes=128 * 1024,
        max_completion_choices=8,
        job_workers=0,
    )
    app = create_app(serve_workspace, [MODEL_NAME], settings)
    with ServerThread(app) as url:
        yield Guarded(url, app, serve_workspace)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def raw_request(url: str, head: str, timeout: float = 10.0) -> str:
    """Send only a request's head (no body) on a socket; the status line it gets."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        return sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]


def chat(guarded: Guarded, key: str, **extra) -> httpx.Response:
    body = {"model": MODEL_NAME, "messages": HELLO, "max_tokens": 2, **extra}
    return httpx.post(
        guarded.url + "/v1/chat/completions", json=body, headers=bearer(key), timeout=60
    )


# --- 1: seeds, a request the engine cannot handle, a dead engine ----------------------------


def test_out_of_range_seeds_are_refused_and_the_engine_keeps_serving(guarded):
    key = guarded.key()
    for field, seed in [("seed", 2**64), ("random_seed", 2**64), ("seed", -1)]:
        error_of(chat(guarded, key, **{field: seed}), 422, "invalid_schema")
    completion = {"model": MODEL_NAME, "prompt": "def", "max_tokens": 2, "seed": 2**64}
    response = httpx.post(guarded.url + "/v1/completions", json=completion, headers=bearer(key))
    error_of(response, 422, "invalid_schema")
    client = openai.OpenAI(base_url=guarded.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL_NAME, messages=HELLO, seed=2**64)
    # The largest seed, with a second choice (seed + 1), still decodes.
    response = chat(guarded, key, seed=2**63 - 1, n=2)
    assert response.status_code == 200 and len(response.json()["choices"]) == 2
    ready = httpx.get(guarded.url + "/health/ready")
    assert ready.status_code == 200 and ready.json()["engines"] == {"ready": 1}


def test_a_message_the_engine_process_cannot_handle_fails_only_its_request(model_dir, tokenizer):
    prompt = tokenizer("def", add_special_tokens=False)["input_ids"]

    async def main():
        engine = ProcessEngine(model_dir, threads=1)
        await engine.start()
        try:
            bad = SamplingParams(max_tokens=3, seed=2**64)  # torch refuses it in the child
            chunks = [c async for c in engine.generate(GenerationRequest("bad", prompt, bad))]
            good = SamplingParams(max_tokens=3, seed=1, ignore_eos=True)
            after = [c async for c in engine.generate(GenerationRequest("ok", prompt, good))]
            return chunks, after, engine.health()
        finally:
            await engine.stop()

    chunks, after, health = asyncio.run(main())
    assert chunks[-1].finish_reason == "error" and "refused this request" in chunks[-1].error
    assert after[-1].finish_reason == "length" and after[-1].completion_tokens == 3
    assert health == "ready"


@pytest.mark.slow
def test_a_killed_engine_restarts_and_open_requests_get_503(guarded):
    keys = [guarded.key(), guarded.key()]
    long = {"model": MODEL_NAME, "prompt": "def", "max_tokens": 1000, "ignore_eos": True}
    engine = guarded.engine()
    with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(timeout=120) as client:
        whole = pool.submit(
            client.post, guarded.url + "/v1/completions", json=long, headers=bearer(keys[0])
        )
        with client.stream(
            "POST",
            guarded.url + "/v1/completions",
            json={**long, "stream": True},
            headers=bearer(keys[1]),
        ) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            deadline = time.monotonic() + 30
            while engine.stats().running < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(engine._process.pid, signal.SIGKILL)
            events = [line for line in lines if line.startswith("data:")]
        error = error_of(whole.result(), 503, "engine_unavailable")
        assert "exited" in error["message"]
        assert whole.result().headers["Retry-After"]
    streamed = json.loads(events[-2].removeprefix("data:"))  # before [DONE]
    assert streamed["error"]["code"] == "engine_unavailable"

    refused = chat(guarded, keys[0])
    health = httpx.get(guarded.url + "/health").json()
    if health["engines"] == {"restarting": 1}:  # not back yet: new requests get 503 too
        error_of(refused, 503, "engine_unavailable")
        assert refused.headers["Retry-After"]
        assert health["status"] == "degraded"
        assert httpx.get(guarded.url + "/health/ready").status_code == 503
    deadline = time.monotonic() + 180
    while httpx.get(guarded.url + "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the engine process did not come back"
        time.sleep(0.25)
    assert chat(guarded, keys[0]).status_code == 200


# --- 2: the key before the body, and bodies capped -------------------------------------------


def test_no_key_or_wrong_scope_is_refused_before_the_body_is_read(guarded):
    huge = "Content-Length: 10000000000\r\nContent-Type: application/json\r\n"
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{huge}\r\n"
    assert raw_request(guarded.url, head).split()[1] == "401"
    inference = guarded.key()
    head = f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {inference}\r\n{huge}\r\n"
    assert raw_request(guarded.url, head).split()[1] == "403"
    admin = guarded.key("admin")
    head = f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n{huge}\r\n"
    assert raw_request(guarded.url, head).split()[1] == "413"


def test_bodies_over_the_cap_get_413_with_or_without_content_length(guarded):
    key = guarded.key()
    padded = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "x" * 100_000}]}
    url = guarded.url + "/v1/chat/completions"
    error = error_of(httpx.post(url, json=padded, headers=bearer(key)), 413, "request_too_large")
    assert "65536" in error["message"] and "max_request_bytes" in error["message"]

    body = json.dumps(padded).encode()
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))  # chunked: no length
    headers = {**bearer(key), "Content-Type": "application/json"}
    error_of(httpx.post(url, content=chunks, headers=headers), 413, "request_too_large")
    # Under the cap, the same route works.
    assert chat(guarded, key).status_code == 200


def test_uploads_have_their_own_cap_enforced_while_streaming(guarded):
    key = guarded.key("admin")
    line = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    )
    boundary = "forgeml-test-boundary"

    def multipart(content: bytes):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f'fine-tune\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="train.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        for i in range(0, len(content), 16384):
            yield content[i : i + 16384]
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**bearer(key), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    url = guarded.url + "/v1/files"
    big = ((line + "\n") * 3000).encode()  # ~250 KB, over the 128 KiB upload cap
    error = error_of(httpx.post(url, content=multipart(big), headers=headers), 413)
    assert "max_upload_bytes" in error["message"]
    small = ((line + "\n") * 200).encode()  # ~17 KB
    assert httpx.post(url, content=multipart(small), headers=headers).status_code == 200


# --- 10: the key cache, rate and concurrency limits -------------------------------------------


def test_wrong_keys_are_not_cached_and_the_cache_is_bounded(guarded):
    for i in range(50):
        response = httpx.get(guarded.url + "/v1/models", headers=bearer(f"fml-wrong-{i}"))
        error_of(response, 401, "invalid_api_key")
    for _ in range(5):
        assert httpx.get(guarded.url + "/v1/models", headers=bearer(guarded.key())).is_success
    assert len(guarded.app.state.keys._cache) <= 3  # key_cache_size


def test_a_key_over_its_rate_gets_429_with_retry_after(guarded):
    key, other = guarded.key(), guarded.key()
    url = guarded.url + "/v1/models"
    statuses = [httpx.get(url, headers=bearer(key)).status_code for _ in range(REQUESTS_PER_MINUTE)]
    assert statuses == [200] * REQUESTS_PER_MINUTE
    refused = httpx.get(url, headers=bearer(key))
    error_of(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 / REQUESTS_PER_MINUTE + 1
    assert httpx.get(url, headers=bearer(other)).status_code == 200  # per key


def test_a_key_over_its_concurrency_gets_429_until_a_request_ends(guarded):
    key, other = guarded.key(), guarded.key()
    url = guarded.url + "/v1/models"
    host, port = guarded.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    held = []  # two requests still sending their bodies: open, as a long stream would be
    try:
        for _ in range(2):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(head.encode())
            held.append(sock)
        deadline = time.monotonic() + 10
        while (refused := httpx.get(url, headers=bearer(key))).status_code != 429:
            assert time.monotonic() < deadline, "two open requests did not reach the cap"
            time.sleep(0.05)
        error_of(refused, 429, "concurrency_limit_exceeded")
        assert int(refused.headers["Retry-After"]) >= 1
        assert httpx.get(url, headers=bearer(other)).status_code == 200  # per key
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(url, headers=bearer(key)).status_code != 200:
        assert time.monotonic() < deadline, "ended requests did not free the key's slots"
        time.sleep(0.1)


# --- 5: prompts x n -------------------------------------------------------------------------


def test_completions_cap_prompts_times_n(guarded):
    key = guarded.key()
    url = guarded.url + "/v1/completions"
    body = {"model": MODEL_NAME, "prompt": ["def"] * 3, "n": 4, "max_tokens": 2}
    error = error_of(httpx.post(url, json=body, headers=bearer(key)), 400)
    assert error["param"] == "prompt" and "12 completions" in error["message"]
    body = {"model": MODEL_NAME, "prompt": "def", "n": 16, "max_tokens": 2}
    assert error_of(httpx.post(url, json=body, headers=bearer(key)), 400)["param"] == "n"
    body = {"model": MODEL_NAME, "prompt": ["def"] * 4, "n": 2, "max_tokens": 2}
    assert len(httpx.post(url, json=body, headers=bearer(key)).json()["choices"]) == 8


# --- 11 and 12: the registry busy or failing --------------------------------------------------


def test_keys_are_checked_while_another_process_holds_the_registry_write_lock(guarded):
    key = guarded.key()  # never seen by the server: its check reads the registry
    database = guarded.workspace.engine.url.database
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # as a long write (the request log's flush) would
    try:
        started = time.monotonic()
        response = httpx.get(guarded.url + "/v1/models", headers=bearer(key), timeout=15)
        assert response.status_code == 200 and time.monotonic() - started < 5
        assert httpx.get(guarded.url + "/health/ready", timeout=15).status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_failing_request_log_write_does_not_log_the_prompt(guarded, caplog):
    secret = "zebra-marmalade-4711"
    trigger = (
        "CREATE TRIGGER test_refuse_request_log BEFORE INSERT ON request_log "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    with guarded.workspace.engine.begin() as connection:
        connection.execute(text(trigger))
    caplog.set_level(logging.ERROR, logger="forgeml.serve")
    try:
        key = guarded.key()
        messages = [{"role": "user", "content": f"my password is {secret}"}]
        assert chat(guarded, key, messages=messages).status_code == 200
        deadline = time.monotonic() + 15
        while not any("request log" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the request log never tried to write"
            time.sleep(0.1)
        logged = caplog.text + "".join(
            logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
        )
        assert "refused by the test" in logged  # the database's error is there...
        assert secret not in logged  # ...the prompt is not
    finally:
        with guarded.workspace.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER test_refuse_request_log"))
