"""POST/GET /v1/feedback and the request log table, over real HTTP with the openai client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from serving_fixtures import MODEL_NAME, ServerThread, register_tiny_model

from forgeml.core.schema import AuditEntry, Feedback, RequestLog, utcnow
from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app, recent_completions
from forgeml.serve.auth import create_key
from forgeml.serve.recent_completions import RecentCompletion, RecentCompletions
from forgeml.serve.request_log import RegistryRequestLog, RequestRecord

HELLO = [{"role": "user", "content": "Hello"}]


def post_feedback(url: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(
        url + "/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def wait_for(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def logged(workspace, completion_id: str) -> list[RequestLog]:
    with workspace.registry.session() as session:
        return list(session.query(RequestLog).filter_by(completion_id=completion_id))


@dataclass
class LoggingServer:
    url: str
    workspace: Workspace
    key: str


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory):
    """A server of its own workspace (the shared one counts its deployments) that logs
    prompts and remembers nothing, so feedback has to find the conversation in the log."""
    workspace = Workspace.init(tmp_path_factory.mktemp("logging") / "ws")
    register_tiny_model(workspace)
    _, key = create_key(workspace, "app", "inference")
    settings = ServeSettings(
        key_cache_seconds=0.0, torch_threads=1, log_prompts=True, feedback_cache_size=0
    )
    with ServerThread(create_app(workspace, [MODEL_NAME], settings)) as url:
        yield LoggingServer(url, workspace, key)
    workspace.close()


def test_feedback_is_stored_with_the_conversation_it_rates(served, openai_client):
    response = openai_client.chat.completions.create(model=MODEL_NAME, messages=HELLO, max_tokens=3)
    answer = post_feedback(
        served.url,
        served.inference_key,
        {"completion_id": response.id, "rating": -1, "corrected_output": "Hello! How can I help?"},
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert created["object"] == "feedback" and created["source"] == "cache"
    assert (created["rating"], created["given_rating"], created["scale"]) == (1, -1, "thumbs")
    assert created["model"] == MODEL_NAME and created["messages"] is None  # not echoed back

    with served.workspace.registry.session() as session:
        row = session.get(Feedback, created["id"])
        audit = session.query(AuditEntry).filter_by(target=f"feedback/{created['id']}").one()
    assert row.request["messages"] == HELLO
    assert row.response["message"]["role"] == "assistant"
    assert row.response["message"]["content"] == (response.choices[0].message.content or "")
    assert row.corrected_output == "Hello! How can I help?"
    assert audit.action == "feedback.create" and audit.details["completion_id"] == response.id

    admin = {"Authorization": f"Bearer {served.admin_key}"}
    listing = httpx.get(
        served.url + "/v1/feedback", params={"completion_id": response.id}, headers=admin
    ).json()
    assert [item["id"] for item in listing["data"]] == [created["id"]]
    assert listing["data"][0]["messages"] == HELLO and listing["has_more"] is False
    forbidden = httpx.get(
        served.url + "/v1/feedback", headers={"Authorization": f"Bearer {served.inference_key}"}
    )
    assert forbidden.status_code == 403


def test_unknown_completion_is_404_even_with_the_conversation(served):
    body = {"completion_id": "chatcmpl-elsewhere", "rating": 1}
    missing = post_feedback(served.url, served.inference_key, body)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "completion_not_found"
    # A conversation the client makes up is not production traffic (test_api_hardening.py
    # shows one sent for a logged completion whose text the server no longer has).
    body |= {"messages": HELLO, "output": "Hi.", "model": "support-bot"}
    assert post_feedback(served.url, served.inference_key, body).status_code == 404


def test_another_key_cannot_rate_a_completion(served, openai_client):
    response = openai_client.chat.completions.create(model=MODEL_NAME, messages=HELLO, max_tokens=2)
    _, other = create_key(served.workspace, "other-app", "inference")
    body = {"completion_id": response.id, "rating": 1}
    assert post_feedback(served.url, other, body).status_code == 404
    assert post_feedback(served.url, served.admin_key, body).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"rating": 0},
        {"rating": 5},  # a thumbs rating is -1 or 1
        {"rating": 6, "scale": "stars"},
        {"comment": "  "},  # nothing to learn from
    ],
)
def test_bad_ratings_are_400(served, body):
    answer = post_feedback(
        served.url, served.inference_key, {"completion_id": "chatcmpl-x", **body}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "rating"


def test_request_log_rows_keep_text_only_when_asked(served, logging_server, openai_client):
    quiet = openai_client.chat.completions.create(model=MODEL_NAME, messages=HELLO, max_tokens=2)
    (row,) = wait_for(lambda: logged(served.workspace, quiet.id))
    assert row.route == "chat.completions" and row.status == 200 and row.model == MODEL_NAME
    assert row.api_key_id is not None and row.finish_reason in ("length", "stop")
    assert row.prompt_tokens > 0 and row.completion_tokens == quiet.usage.completion_tokens
    assert "messages" not in row.request and "outputs" not in row.response

    from openai import OpenAI

    server = logging_server
    with OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as client:
        loud = client.chat.completions.create(model=MODEL_NAME, messages=HELLO, max_tokens=2)
    (row,) = wait_for(lambda: logged(server.workspace, loud.id))
    assert row.request["messages"] == HELLO and len(row.response["outputs"]) == 1

    # That server remembers no completion, so feedback finds the text in the log.
    answer = post_feedback(server.url, server.key, {"completion_id": loud.id, "rating": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "request_log"


def test_old_request_log_rows_are_deleted_at_start(workspace):
    def record(completion_id: str, age_days: float) -> RequestRecord:
        return RequestRecord(
            id=completion_id,
            endpoint="chat.completions",
            model="m",
            artifact="model/abc",
            api_key="fml-abc",
            status=200,
            stream=False,
            time=utcnow() - timedelta(days=age_days),
        )

    first = RegistryRequestLog(workspace, retention_days=30, flush_seconds=0.05)
    first.record(record("chatcmpl-old", 31))
    first.record(record("chatcmpl-new", 29))
    first.close()
    assert len(logged(workspace, "chatcmpl-old")) == 1  # written; pruning happens at start

    RegistryRequestLog(workspace, retention_days=30).close()
    assert logged(workspace, "chatcmpl-old") == []
    assert len(logged(workspace, "chatcmpl-new")) == 1


def test_recent_completions_are_capped_and_expire(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(recent_completions, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    cache = RecentCompletions(capacity=2, ttl_seconds=60)

    def remember(completion_id: str) -> None:
        cache.remember(completion_id, RecentCompletion("m", "", HELLO, [], ["hi"], 1))

    remember("a")
    remember("b")
    assert cache.get("a") is not None  # now the most recently used
    remember("c")
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    clock[0] += 61
    assert cache.get("a") is None and cache.get("c") is None
