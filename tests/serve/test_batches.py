"""/v1/batches with the openai client against a real server, and `forgeml batch run`:
results come back per custom_id, bad lines are refused with their line, a cancel ends a
batch with what it finished, and a batch killed half way resumes without asking a
finished request again."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import openai
import pytest

from forgeml.core.schema import RequestLog

MODEL = "tiny-chat"


def lines(count: int, model: str = MODEL, endpoint: str = "/v1/chat/completions") -> bytes:
    body = lambda i: {"model": model, "max_tokens": 4, "temperature": 0,  # noqa: E731
                      "messages": [{"role": "user", "content": f"Ticket {i}"}]}  # fmt: skip
    return "".join(
        json.dumps({"custom_id": f"t-{i}", "method": "POST", "url": endpoint, "body": body(i)})
        + "\n"
        for i in range(count)
    ).encode()


def wait_for_end(client: openai.OpenAI, batch_id: str, seconds: float = 120.0):
    deadline = time.monotonic() + seconds
    while (batch := client.batches.retrieve(batch_id)).status not in (
        "completed", "failed", "cancelled"
    ):  # fmt: skip
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
    return batch


@pytest.fixture
def admin(served):
    with openai.OpenAI(base_url=served.base_url, api_key=served.admin_key, max_retries=0) as c:
        yield c


def test_a_batch_answers_every_request_by_custom_id(admin, served):
    content = lines(6)[:-1] + b"\n" + json.dumps({"custom_id": "bad-model", "method": "POST",
        "url": "/v1/chat/completions", "body": {"model": "no-such-model",
        "messages": [{"role": "user", "content": "x"}]}}).encode() + b"\n"  # fmt: skip
    upload = admin.files.create(file=("requests.jsonl", content), purpose="batch")
    batch = admin.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"team": "support"},
    )  # fmt: skip
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 7
    done = wait_for_end(admin, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 1)
    assert done.metadata == {"team": "support"} and done.completed_at is not None
    output = [json.loads(x) for x in admin.files.content(done.output_file_id).text.splitlines()]
    assert [r["custom_id"] for r in output] == [f"t-{i}" for i in range(6)]  # input order
    first = output[0]["response"]
    assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
    assert first["body"]["usage"]["completion_tokens"] <= 4
    errors = [json.loads(x) for x in admin.files.content(done.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "bad-model" and errors[0]["response"]["status_code"] == 404
    assert admin.batches.list(limit=5).data[0].id == batch.id
    # The requests ran as the key that created the batch, and are in the request log.
    served.app.state.request_log.flush()
    with served.workspace.registry.session() as session:
        row = session.query(RequestLog).filter_by(completion_id=first["body"]["id"]).one()
        assert row.request["api_key"] == served.admin_key[:12]


def test_a_bad_input_file_is_refused_with_its_line(admin):
    bad = (
        lines(2)
        + b'{"custom_id": "t-0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    )
    upload = admin.files.create(file=("bad.jsonl", bad), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        admin.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip
    assert "line 3: custom_id 't-0' is also on line 1" in refused.value.message
    wrong_url = admin.files.create(file=("u.jsonl", lines(1)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        admin.batches.create(input_file_id=wrong_url.id, endpoint="/v1/completions",
                             completion_window="24h")  # fmt: skip
    assert "this batch's endpoint is /v1/completions" in refused.value.message
    tune = admin.files.create(
        file=("t.jsonl", b'{"messages": [{"role": "user", "content": "a"}, '
              b'{"role": "assistant", "content": "b"}]}\n'), purpose="fine-tune",
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError) as refused:
        admin.batches.create(input_file_id=tune.id, endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip
    assert "needs purpose 'batch'" in refused.value.message


def test_batches_need_an_admin_key(served):
    client = openai.OpenAI(base_url=served.base_url, api_key=served.inference_key, max_retries=0)
    with client, pytest.raises(openai.PermissionDeniedError):
        client.batches.list()
    assert httpx.get(served.url + "/v1/batches").status_code == 401


def test_a_cancelled_batch_keeps_what_it_finished(admin, served, monkeypatch):
    monkeypatch.setattr(served.app.state.batches, "concurrency", 1)  # slow enough to cancel
    upload = admin.files.create(file=("many.jsonl", lines(400)), purpose="batch")
    batch = admin.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")  # fmt: skip
    while admin.batches.retrieve(batch.id).request_counts.completed < 8:
        time.sleep(0.2)
    admin.batches.cancel(batch.id)
    done = wait_for_end(admin, batch.id)
    assert done.status == "cancelled" and 8 <= done.request_counts.completed < 400
    kept = admin.files.content(done.output_file_id).text.splitlines()
    assert len(kept) == done.request_counts.completed


def test_forgeml_batch_run_resumes_after_a_kill_without_asking_twice(tmp_path):
    import signal
    import subprocess
    import sys

    from serving_fixtures import register_tiny_model

    from forgeml.core.workspace import Workspace

    workspace = Workspace.init(tmp_path / "ws")
    register_tiny_model(workspace, "tiny-batch")
    workspace.close()
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(lines(300, model="tiny-batch").replace(b', "model": "tiny-batch"', b""))
    command = [sys.executable, "-m", "forgeml", "--workspace", str(tmp_path / "ws"), "--json",
               "batch", "run", "tiny-batch", str(requests), "--concurrency", "1"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    progress = None
    while time.monotonic() < deadline and first.poll() is None:
        found = list((tmp_path / "ws" / "batches").glob("*/results.jsonl"))
        if found and len(found[0].read_bytes().splitlines()) >= 20:
            progress = found[0]
            break
        time.sleep(0.1)
    assert progress is not None, first.communicate()
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {json.loads(x)["custom_id"]: json.loads(x)["id"]
              for x in progress.read_bytes().splitlines() if x.endswith(b"}")}  # fmt: skip
    assert 20 <= len(before) < 300
    resumed_at = datetime.now(UTC).replace(tzinfo=None)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["resumed"] is True and report["status"] == "completed"
    assert (report["completed"], report["failed"]) == (300, 0)
    results = [
        json.loads(x) for x in (tmp_path / "requests.results.jsonl").read_text().splitlines()
    ]
    assert [r["custom_id"] for r in results] == [f"t-{i}" for i in range(300)]
    kept = {r["custom_id"]: r["id"] for r in results}
    assert all(kept[custom_id] == rid for custom_id, rid in before.items())  # not asked again
    workspace = Workspace.open(tmp_path / "ws")
    with workspace.registry.session() as session:
        times = [row.time.replace(tzinfo=None) for row in session.query(RequestLog)]
    workspace.close()
    # The second run asked exactly what the first had not answered.
    assert sum(when >= resumed_at for when in times) == 300 - len(before)


def test_a_batch_goes_on_after_its_server_restarts(tmp_path):
    from serving_fixtures import ServerThread, register_tiny_model

    from forgeml.core.workspace import Workspace
    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.auth import create_key

    workspace = Workspace.init(tmp_path / "ws")
    register_tiny_model(workspace, MODEL)
    _, key = create_key(workspace, "ops", "admin")
    settings = ServeSettings(key_cache_seconds=0.0, job_workers=0, batch_concurrency=1)
    with ServerThread(create_app(workspace, [MODEL], settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        upload = client.files.create(file=("r.jsonl", lines(150)), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")  # fmt: skip
        while client.batches.retrieve(batch.id).request_counts.completed < 10:
            time.sleep(0.1)
    results = tmp_path / "ws" / "batches" / batch.id / "results.jsonl"
    before = {
        json.loads(x)["custom_id"]: json.loads(x)["id"] for x in results.read_text().splitlines()
    }
    assert 10 <= len(before) < 150
    with ServerThread(create_app(workspace, [MODEL], settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        done = wait_for_end(client, batch.id)
        output = client.files.content(done.output_file_id).text.splitlines()
    workspace.close()
    assert done.status == "completed" and done.request_counts.completed == 150
    kept = {json.loads(x)["custom_id"]: json.loads(x)["id"] for x in output}
    assert all(kept[custom_id] == rid for custom_id, rid in before.items())  # not asked again
