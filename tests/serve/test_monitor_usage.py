"""`forgeml monitor usage`: the installed CLI reads what a real server logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from forgeml.serve.auth import create_key

FORGEML = str(Path(sys.executable).parent / "forgeml")


def monitor(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FORGEML, "--workspace", str(workspace.root), *args],
        capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_usage_counts_what_one_key_sent_with_outcomes_tokens_and_feedback(served):
    _, key = create_key(served.workspace, "usage-probe", "inference")
    headers = {"Authorization": f"Bearer {key}"}
    chat = {"model": "tiny-chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    ids = []
    for _ in range(3):
        response = httpx.post(served.base_url + "/chat/completions", json=chat, headers=headers)
        assert response.status_code == 200
        ids.append(response.json()["id"])
    schema = {"type": "object", "required": ["category"], "additionalProperties": False,
              "properties": {"category": {"enum": ["international shipping and returns"]}}}  # fmt: skip
    cut = {**chat, "max_tokens": 3, "response_format": {
        "type": "json_schema", "json_schema": {"name": "route", "schema": schema}}}  # fmt: skip
    response = httpx.post(served.base_url + "/chat/completions", json=cut, headers=headers)
    answer = response.json()["choices"][0]
    assert answer["finish_reason"] == "length", answer  # cut before the object closes
    rated = httpx.post(
        served.base_url + "/feedback", headers=headers, json={"completion_id": ids[0], "rating": 1}
    )
    assert rated.status_code == 200, rated.text

    group = None
    deadline = time.monotonic() + 15  # the request log is written in the background
    while group is None or group["requests"] < 4:
        assert time.monotonic() < deadline, "requests never reached the log"
        time.sleep(0.5)
        result = monitor(served.workspace, "--json", "monitor", "usage", "tiny-chat",
                         "--since", "1h", "--by", "key")  # fmt: skip
        assert result.returncode == 0, result.stderr
        groups = json.loads(result.stdout)["groups"]
        group = next((g for name, g in groups.items() if name.startswith("usage-probe")), None)

    assert group["requests"] == group["ok"] == 4 and group["error_rate"] == 0
    assert group["prompt_tokens"] > 0 and 0 < group["completion_tokens"] <= 3 * 3 + 3
    assert group["json_requests"] == 1 and group["json_valid_rate"] == 0.0
    assert group["latency_ms"]["p50"] > 0 and group["ttft_ms"]["p50"] is not None
    assert sum(group["finish_reasons"].values()) == 4
    assert group["feedback"] == {"count": 1, "rated": 1, "mean_rating": 5.0}  # thumbs up = 5

    # The same series on /metrics, for a Prometheus that scrapes the server.
    admin = {"Authorization": f"Bearer {served.admin_key}"}
    metrics = httpx.get(served.url + "/metrics", headers=admin).text
    assert 'forgeml_json_answers_total{model="tiny-chat",valid="false"}' in metrics
    assert 'forgeml_finish_reasons_total{model="tiny-chat",reason="length"}' in metrics
    assert 'forgeml_feedback_total{model="tiny-chat",rating="5"}' in metrics

    table = monitor(served.workspace, "monitor", "usage", "--since", "1h")
    assert table.returncode == 0 and "tiny-chat" in table.stdout and "latency" in table.stdout


def test_usage_errors_name_what_is_wrong(served):
    unknown = monitor(served.workspace, "monitor", "usage", "no-such-model")
    assert unknown.returncode == 2 and "no model named 'no-such-model'" in unknown.stderr
    window = monitor(served.workspace, "monitor", "usage", "--since", "last tuesday")
    assert (
        window.returncode == 2 and "--since: 'last tuesday' is not a time window" in window.stderr
    )
    empty = monitor(served.workspace, "monitor", "usage", "--since", "2h", "--until", "3h")
    assert empty.returncode == 2 and "the window is empty" in empty.stderr
    for result in (unknown, window, empty):
        assert "Traceback" not in result.stderr
