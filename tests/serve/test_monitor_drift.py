"""`forgeml monitor drift`: a model fine-tuned on support conversations, served for real;
a window of traffic like its training data shows no drift, a window of long German
legal text does, and the installed CLI says which signals moved."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from serving_fixtures import ServerThread

from forgeml.core.runs import run_stage
from forgeml.core.schema import utcnow
from forgeml.monitor.drift import window_signals
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key

FORGEML = str(Path(sys.executable).parent / "forgeml")
ITEMS = ["order", "parcel", "invoice", "refund", "password", "account", "subscription", "laptop"]
ASKS = ["My {item} has not arrived yet, can you check?", "I was charged twice for my {item}.",
        "How do I reset my {item} settings?", "The {item} I received is broken, please help.",
        "Can I change the address on my {item}?", "Where can I download the {item} receipt?"]  # fmt: skip
GERMAN = ("Gemäß Paragraph {n} des Vertrages verpflichtet sich die Auftragnehmerin, sämtliche "
          "Unterlagen binnen einer Frist von vierzehn Tagen vollständig zu übermitteln, wobei "
          "etwaige Abweichungen schriftlich zu begründen und von beiden Parteien zu zeichnen "
          "sind. Die Haftung für mittelbare Schäden ist ausgeschlossen. ")  # fmt: skip


LEGAL = ["Please summarise clause {n} of the indemnity agreement.",
         "Does section {n} of the lease allow early termination?",
         "Which court has jurisdiction under article {n} of the contract?"]  # fmt: skip


def support_prompt(rng: random.Random) -> str:
    return rng.choice(ASKS).format(item=rng.choice(ITEMS)) + f" Ticket {rng.randrange(10**5)}."


def monitor(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FORGEML, "--workspace", str(workspace.root), *args],
        capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def drift_bot(serve_workspace, tmp_path_factory):
    """A tiny model that has read support tickets (continued pre-training, so its prompt
    log-probabilities mean something) and was fine-tuned on support conversations."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("drift")
    chats, docs = folder / "support.jsonl", folder / "tickets.jsonl"
    with chats.open("w") as out:
        for _ in range(300):
            messages = [{"role": "user", "content": support_prompt(rng)},
                        {"role": "assistant", "content": "Thanks, I have routed your ticket."}]  # fmt: skip
            out.write(json.dumps({"messages": messages}) + "\n")
    docs.write_text("".join(json.dumps({"text": support_prompt(rng)}) + "\n" for _ in range(600)))
    tickets = run_stage(serve_workspace, "data.ingest", {"paths": [str(docs)]}, quiet=True)
    mixture = run_stage(
        serve_workspace, "data.mix", {"validation_fraction": 0.1},
        {"datasets": [tickets.outputs["dataset"].ref]}, quiet=True,
    ).outputs["mixture"]  # fmt: skip
    read = run_stage(
        serve_workspace, "train.pretrain",
        {"max_steps": 60, "seq_len": 64, "batch_size": 8, "learning_rate": 3e-3,
         "warmup_steps": 2, "name": "ticket-reader"},
        {"mixture": mixture.ref, "base": "tiny-chat"}, quiet=True,
    ).outputs["model"]  # fmt: skip
    dataset = run_stage(serve_workspace, "data.ingest", {"paths": [str(chats)]}, quiet=True)
    run_stage(
        serve_workspace,
        "train.sft",
        {"max_steps": 1, "batch_size": 2, "name": "drift-bot"},
        {"model": read.ref, "dataset": dataset.outputs["dataset"].ref},
        quiet=True,
    )
    _, key = create_key(serve_workspace, "drift", "inference")
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1)
    with ServerThread(create_app(serve_workspace, ["drift-bot"], settings)) as url:
        yield url, key


def send(url: str, key: str, prompts: list[str]) -> None:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for prompt in prompts:
            body = {"model": "drift-bot", "max_tokens": 1,
                    "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
            assert client.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.slow
def test_drift_flags_the_shifted_window_and_not_the_familiar_one(serve_workspace, drift_bot):
    url, key = drift_bot
    rng = random.Random(1)
    start = utcnow()
    send(url, key, [support_prompt(rng) for _ in range(40)])
    middle = utcnow()
    send(url, key, [GERMAN.format(n=n) * rng.randint(2, 4) for n in range(40)])
    time.sleep(2.5)  # the request log is written once a second
    end = utcnow()

    def drift(since, until) -> dict:
        result = monitor(serve_workspace, "--json", "monitor", "drift", "drift-bot",
                         "--since", since.isoformat(), "--until", until.isoformat())  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    familiar = drift(start, middle)
    assert familiar["requests"] == 40 and familiar["reference"]["kind"] == "conversations"
    assert familiar["drift"] is False, familiar["signals"]
    shifted = drift(middle, end)
    moved = {s["signal"] for s in shifted["signals"] if s["drifted"]}
    assert shifted["drift"] is True and {"user_chars", "language"} <= moved, shifted["signals"]
    # The model itself finds the German legal text far less expected than support tickets.
    logprob = {s["signal"]: s for s in shifted["signals"]}["prompt_logprob"]
    assert logprob["measured"] and logprob["window_median"] < logprob["reference_median"] - 0.5

    table = monitor(serve_workspace, "monitor", "drift", "drift-bot", "--since", middle.isoformat())
    assert "DRIFT" in table.stdout and "drift: true" in table.stdout

    # The same two windows as the two halves of a report: only the second drifted.
    html = serve_workspace.root.parent / "drift.html"
    span = max(middle - start, end - middle)
    report = monitor(serve_workspace, "monitor", "report", "drift-bot", "--buckets", "2",
                     "--since", (middle - span).isoformat(), "--until", (middle + span).isoformat(),
                     "-o", str(html))  # fmt: skip
    assert report.returncode == 0, report.stderr
    data = json.loads(html.with_suffix(".json").read_text())
    assert [bucket["requests"] for bucket in data["buckets"]] == [40, 40]
    assert [bucket["drift"] for bucket in data["buckets"]] == [False, True]
    page = html.read_text()
    assert "<svg" in page and "language" in page and "Buckets that drifted" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_drift_says_what_is_missing(serve_workspace, drift_bot):
    no_lineage = monitor(serve_workspace, "monitor", "drift", "tiny-chat", "--since", "1h")
    assert no_lineage.returncode == 2, no_lineage.stderr
    assert "has no training data in its lineage" in no_lineage.stderr
    too_few = monitor(serve_workspace, "monitor", "drift", "drift-bot", "--since", "2026-01-01",
                      "--until", "2026-01-02")  # fmt: skip
    assert too_few.returncode == 2 and "drift needs at least 30" in too_few.stderr
    unknown = monitor(serve_workspace, "monitor", "drift", "nobody", "--since", "1h")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
    nowhere = monitor(serve_workspace, "monitor", "report", "drift-bot", "--since", "2h",
                      "-o", "/etc/hostname/drift.html")  # fmt: skip
    assert nowhere.returncode == 2 and "cannot write the report" in nowhere.stderr
    empty = monitor(serve_workspace, "monitor", "report", "drift-bot", "--since", "2026-01-01",
                    "--until", "2026-01-02")  # fmt: skip
    assert empty.returncode == 2 and "no logged requests with drift signals" in empty.stderr
    for result in (no_lineage, too_few, unknown, nowhere, empty):
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_served_model_that_starts_drifting_raises_an_alert(serve_workspace, drift_bot):
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _, key = drift_bot
    _, admin = create_key(serve_workspace, "drift-ops", "admin")
    settings = ServeSettings(
        key_cache_seconds=0.0, torch_threads=1, drift_check_seconds=1, drift_window_minutes=10,
        drift_webhook_url=f"http://127.0.0.1:{hook.server_port}/alerts",
    )  # fmt: skip
    try:
        with ServerThread(create_app(serve_workspace, ["drift-bot"], settings)) as url:
            send(url, key, [GERMAN.format(n=n) * 3 for n in range(40)])
            deadline = time.monotonic() + 60
            while not received:
                assert time.monotonic() < deadline, "no drift alert reached the webhook"
                time.sleep(0.2)
            metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    finally:
        hook.shutdown()
    alert = received[0]
    assert alert["model"] == "drift-bot" and "language" in alert["signals"], alert
    assert 'forgeml_drift_alert{model="drift-bot"} 1.0' in metrics
    assert 'forgeml_drift_effect{model="drift-bot",signal="language"}' in metrics
    audit = monitor(serve_workspace, "--json", "audit", "--action", "monitor.drift_alert")
    entries = json.loads(audit.stdout)
    assert entries and entries[-1]["target"] == "drift-bot"


@pytest.mark.slow
def test_thresholds_are_settings_per_model(serve_workspace, drift_bot):
    url, key = drift_bot
    send(url, key, [GERMAN.format(n=n) * 2 for n in range(40)])
    time.sleep(2.5)
    config = serve_workspace.config_path
    original = config.read_text()

    def drift(*args: str) -> subprocess.CompletedProcess:
        return monitor(
            serve_workspace, "--json", "monitor", "drift", "drift-bot", "--since", "10m", *args
        )

    try:  # the workspace's min_psi, and drift-bot judged on larger windows only
        config.write_text(
            original
            + "monitoring:\n  min_psi: 0.3\n  models:\n    drift-bot: {min_requests: 500}\n"
        )
        refused = drift()
        assert refused.returncode == 2 and "drift needs at least 500" in refused.stderr
        config.write_text(
            original
            + "monitoring:\n  min_psi: 0.3\n  models:\n    other-bot: {min_requests: 500}\n"
        )
        thresholds = json.loads(drift("--alpha", "0.001").stdout)["thresholds"]
        assert thresholds == {
            "alpha": 0.001,
            "min_psi": 0.3,
            "min_js": 0.1,
            "min_auc": 0.75,
            "min_requests": 30,
        }
        config.write_text(original + "monitoring:\n  min_js: 7\n")
        bad = drift()
        assert (
            bad.returncode == 2
            and "monitoring.min_js" in bad.stderr
            and "Traceback" not in bad.stderr
        )
    finally:
        config.write_text(original)
    assert json.loads(drift().stdout)["drift"] is True


@pytest.mark.slow
def test_a_topic_shift_in_the_same_language_and_length_shows_in_the_sketch(
    serve_workspace, drift_bot
):
    url, key = drift_bot
    rng = random.Random(2)
    start = utcnow()
    send(url, key, [rng.choice(LEGAL).format(n=rng.randrange(100)) for _ in range(40)])
    time.sleep(2.5)
    result = monitor(serve_workspace, "--json", "monitor", "drift", "drift-bot",
                     "--since", start.isoformat())  # fmt: skip
    assert result.returncode == 0, result.stderr
    signals = {s["signal"]: s for s in json.loads(result.stdout)["signals"]}
    assert signals["sketch"]["drifted"] and signals["sketch"]["value"] >= 0.9, signals["sketch"]
    assert not signals["language"]["drifted"]  # still English: only the topic moved


ROUTING_SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["billing", "delivery", "account"]},
                   "summary": {"type": "string"}},
    "required": ["category", "summary"],
}  # fmt: skip


@pytest.mark.slow
def test_the_labels_a_model_answers_are_compared_with_its_training_answers(
    serve_workspace, tmp_path
):
    """Closed-set answer fields (a routing category) are a drift signal of their own; only
    enum values are kept, never the free-text fields of the answer."""
    rng = random.Random(2)
    chats = tmp_path / "routing.jsonl"
    with chats.open("w") as out:
        for _ in range(120):
            answer = {
                "category": rng.choice(["billing", "delivery"]),
                "summary": f"ticket {rng.randrange(10**6)}",
            }
            messages = [{"role": "user", "content": support_prompt(rng)},
                        {"role": "assistant", "content": json.dumps(answer)}]  # fmt: skip
            out.write(json.dumps({"messages": messages}) + "\n")
    dataset = run_stage(serve_workspace, "data.ingest", {"paths": [str(chats)]}, quiet=True)
    run_stage(
        serve_workspace, "train.sft", {"max_steps": 1, "batch_size": 2, "name": "router-bot"},
        {"model": "tiny-chat", "dataset": dataset.outputs["dataset"].ref}, quiet=True,
    )  # fmt: skip
    _, key = create_key(serve_workspace, "router", "inference")
    start = utcnow()
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1)
    with ServerThread(create_app(serve_workspace, ["router-bot"], settings)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(32):
                body = {"model": "router-bot", "max_tokens": 40, "temperature": 0,
                        "messages": [{"role": "user", "content": support_prompt(rng)}],
                        "response_format": {"type": "json_schema", "json_schema": {
                            "name": "route", "schema": ROUTING_SCHEMA}}}  # fmt: skip
                response = client.post("/v1/chat/completions", json=body, timeout=60)
                assert response.status_code == 200, response.text
        time.sleep(2.5)  # the request log is written once a second
    result = monitor(serve_workspace, "--json", "monitor", "drift", "router-bot",
                     "--since", start.isoformat())  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    label = {s["signal"]: s for s in report["signals"]}["label:category"]
    assert label["measured"] and label["effect"] == "jensen_shannon"
    assert set(label["reference_top"]) == {"billing", "delivery"}
    assert set(label["window_top"]) <= {"billing", "delivery", "account", "(other)"}
    assert "label:summary" not in {s["signal"] for s in report["signals"]}  # free text
    logged = [signals for _, signals in window_signals(
        serve_workspace, "router-bot", label_artifact(serve_workspace), start, utcnow())]  # fmt: skip
    assert len(logged) == 32 and all(set(row["labels"]) == {"category"} for row in logged)


def label_artifact(workspace) -> str:
    return workspace.registry.resolve("router-bot", purpose="look up a test model").ref
