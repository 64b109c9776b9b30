"""`forgeml monitor campaign`: logged production conversations, filtered and graded by a
judge, become a prompt dataset traced to its request-log rows; through the installed CLI
against a real server that logs prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from serving_fixtures import ServerThread, register_tiny_model

from forgeml.data.dataset import iter_records
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key

FORGEML = str(Path(sys.executable).parent / "forgeml")
ENGLISH = ["Where is my parcel? It has been two weeks now.", "My invoice shows the wrong amount.",
           "How do I change the delivery address of my order?"]  # fmt: skip
GERMAN = ["Wo ist mein Paket? Ich warte seit zwei Wochen auf die Lieferung.",
          "Meine Rechnung zeigt einen falschen Betrag, bitte korrigieren Sie das.",
          "Wie kann ich die Lieferadresse meiner Bestellung ändern?"]  # fmt: skip


class Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge: a score of 1 for conversations about invoices, else 5."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        score = 1 if ("invoice" in prompt or "Rechnung" in prompt) else 5
        content = json.dumps({"score": score, "reason": "invoices are what we get wrong"})
        reply = {"id": "judge-1", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def forgeml(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FORGEML, "--workspace", str(workspace.root), "--json", *args],
                          capture_output=True, text=True, check=False, env=os.environ.copy())  # fmt: skip


@pytest.fixture(scope="module")
def traffic(serve_workspace):
    register_tiny_model(serve_workspace, "campaign-chat", seed=3)
    _, key = create_key(serve_workspace, "campaign-app", "inference")
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1, log_prompts=True)
    ids = {}
    with ServerThread(create_app(serve_workspace, ["campaign-chat"], settings)) as url:
        headers = {"Authorization": f"Bearer {key}"}
        for prompt in ENGLISH + GERMAN:
            body = {"model": "campaign-chat", "max_tokens": 3,
                    "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
            response = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200
            ids[prompt] = response.json()["id"]
        thumbs_down = {"completion_id": ids[ENGLISH[0]], "rating": -1}
        assert (
            httpx.post(url + "/v1/feedback", json=thumbs_down, headers=headers).status_code == 200
        )
        time.sleep(2.5)  # the request log is written once a second
    return ids


def dataset_records(workspace, result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    ref = json.loads(result.stdout)["outputs"]["dataset"]
    path = workspace.root / workspace.registry.resolve(ref).path
    return list(iter_records(path))


@pytest.mark.slow
def test_campaign_filters_logged_traffic_into_a_traced_prompt_dataset(serve_workspace, traffic):
    german = dataset_records(serve_workspace, forgeml(
        serve_workspace, "monitor", "campaign", "campaign-chat", "--since", "1h", "--language", "de",
        "--name", "german-round"))  # fmt: skip
    assert sorted(r["messages"][-1]["content"] for r in german) == sorted(GERMAN)
    assert {r["metadata"]["completion_id"] for r in german} == {traffic[p] for p in GERMAN}
    assert all(r["metadata"]["request_log_id"] for r in german)

    rated = dataset_records(serve_workspace, forgeml(
        serve_workspace, "monitor", "campaign", "campaign-chat", "--since", "1h", "--max-rating", "1"))  # fmt: skip
    assert [r["messages"][-1]["content"] for r in rated] == [ENGLISH[0]]

    judge = HTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    try:
        judged = dataset_records(serve_workspace, forgeml(
            serve_workspace, "monitor", "campaign", "campaign-chat", "--since", "1h",
            "--judge-endpoint", f"http://127.0.0.1:{judge.server_port}/v1", "--judge-model", "judge"))  # fmt: skip
    finally:
        judge.shutdown()
    assert sorted(r["messages"][-1]["content"] for r in judged) == sorted([ENGLISH[1], GERMAN[1]])
    assert all(r["metadata"]["judge_score"] == 1 for r in judged)

    lineage = forgeml(serve_workspace, "lineage", "german-round")
    assert lineage.returncode == 0 and "registry:request_log" in lineage.stdout


def test_campaign_says_what_is_missing(serve_workspace, traffic):
    nothing = forgeml(serve_workspace, "monitor", "campaign", "campaign-chat", "--since", "1h",
                      "--language", "fi")  # fmt: skip
    assert nothing.returncode == 2 and "no logged conversation of campaign-chat" in nothing.stderr
    half = forgeml(serve_workspace, "monitor", "campaign", "campaign-chat", "--judge-model", "x")
    assert half.returncode == 2 and "needs both --judge-endpoint and --judge-model" in half.stderr
    for result in (nothing, half):
        assert "Traceback" not in result.stderr
