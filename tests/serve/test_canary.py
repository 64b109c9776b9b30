"""Canary, shadow and rollback against a real server: weights, answers, alias moves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_fixtures import ServerThread, register_tiny_model
from sqlalchemy import select

from forgeml.core.schema import Artifact, Deployment, RequestLog, utcnow
from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.settings import CanarySettings

FORGEML = str(Path(sys.executable).parent / "forgeml")
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
NAME = "canary-bot"


def cli(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FORGEML, "--workspace", str(workspace.root), *args],
        capture_output=True, text=True, check=False,
        env={**os.environ, "FORGEML_ACTOR": "oncall@ops", "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def canary_workspace(tmp_path_factory):
    """canary-bot:1 (@prod) and canary-bot:2 (@candidate): two different tiny models."""
    workspace = Workspace.init(tmp_path_factory.mktemp("canary") / "ws")
    for seed in (0, 1):
        register_tiny_model(workspace, NAME, seed=seed)
    workspace.registry.set_alias(NAME, "prod", 1)
    workspace.registry.set_alias(NAME, "candidate", 2)
    _, key = create_key(workspace, "canary-tests", "inference")
    _, admin = create_key(workspace, "canary-ops", "admin")
    workspace.keys = {"inference": key, "admin": admin}
    yield workspace
    workspace.close()


def settings(**canary) -> ServeSettings:
    plans = [CanarySettings(model=NAME, **canary)] if canary else []
    return ServeSettings(
        key_cache_seconds=0.0, torch_threads=1, engine_process=False, drift_check_seconds=0,
        job_workers=0, canary=plans,
    )  # fmt: skip


def chat(url, workspace, model: str, user: str | None = None, **extra) -> dict:
    body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    if user:
        body["user"] = user
    headers = {"Authorization": f"Bearer {workspace.keys['inference']}"}
    response = httpx.post(url + "/v1/chat/completions", json={**body, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def metrics(url, workspace) -> str:
    headers = {"Authorization": f"Bearer {workspace.keys['admin']}"}
    return httpx.get(url + "/metrics", headers=headers).text


@pytest.mark.slow
def test_split_honours_the_weight_per_user_and_is_recorded(canary_workspace):
    workspace = canary_workspace
    app = create_app(workspace, [f"{NAME}@prod"], settings(weight=25, mode="split"))
    users = [f"user-{i}" for i in range(120)]
    with ServerThread(app) as url:
        answered = {user: chat(url, workspace, NAME, user)["model"] for user in users}
        assert set(answered.values()) == {f"{NAME}:1", f"{NAME}:2"}
        share = sum(model == f"{NAME}:2" for model in answered.values()) / len(users)
        assert 0.12 <= share <= 0.38, share  # 25% of 120 users: within ~3 standard deviations
        for user in users[:20]:  # sticky: the same user sees the same version, by any name
            assert chat(url, workspace, f"{NAME}@prod", user)["model"] == answered[user]
        assert chat(url, workspace, f"{NAME}:1", "user-0")["model"] == f"{NAME}@prod"  # no split
        anonymous = {chat(url, workspace, NAME)["model"] for _ in range(60)}  # random split
        assert anonymous == {f"{NAME}:1", f"{NAME}:2"}
        headers = {"Authorization": f"Bearer {workspace.keys['inference']}"}
        too_long = {"model": NAME, "user": "user-0", "max_tokens": 10**9,
                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        refused = httpx.post(url + "/v1/chat/completions", json=too_long, headers=headers)
        assert refused.status_code == 400, refused.text
        text = metrics(url, workspace)
    assert (
        f'forgeml_version_requests_total{{alias="candidate",model="{NAME}",status="200",'
        f'traffic="live",version="{NAME}:2"}}' in text
    )
    assert f'alias="prod",kind="completion",model="{NAME}",traffic="live"' in text
    assert "forgeml_version_request_duration_seconds_count{" in text
    assert 'forgeml_version_errors_total{alias="' in text  # the refused request

    with workspace.registry.reading() as session:  # written on shutdown at the latest
        rows = session.execute(
            select(RequestLog.version, RequestLog.alias).where(RequestLog.model.like(f"{NAME}%"))
        ).all()
        deployments = session.scalars(select(Deployment)).all()
    assert {(f"{NAME}:1", "prod"), (f"{NAME}:2", "candidate")} <= set(rows)
    plan = deployments[-1].config["canary"][0]
    assert (plan["weight"], plan["mode"], plan["candidate"]) == (25.0, "split", "candidate")
    (audit,) = workspace.registry.audit_entries(action="deployment.canary")[-1:]
    assert audit.details["weight"] == 25.0 and audit.details["mode"] == "split"

    usage = cli(workspace, "--json", "monitor", "usage", NAME, "--since", "1h", "--by", "version")
    assert usage.returncode == 0, usage.stderr
    groups = json.loads(usage.stdout)["groups"]
    assert groups[f"{NAME}:1"]["requests"] + groups[f"{NAME}:2"]["requests"] >= 200
    by_alias = cli(workspace, "monitor", "usage", NAME, "--since", "1h", "--by", "alias")
    assert (
        by_alias.returncode == 0 and "@candidate" in by_alias.stdout and "@prod" in by_alias.stdout
    )


@pytest.mark.slow
def test_shadow_never_changes_the_answer_and_rollback_reaches_a_live_server(canary_workspace):
    workspace = canary_workspace
    app = create_app(workspace, [f"{NAME}@prod"], settings(mode="shadow"))
    greedy = {"temperature": 0.0, "max_tokens": 6}
    with ServerThread(app) as url:
        direct = chat(url, workspace, f"{NAME}:1", **greedy)["choices"][0]["message"]
        for _ in range(5):
            shadowed = chat(url, workspace, NAME, **greedy)
            assert shadowed["model"] == f"{NAME}:1"  # prod answers, always
            assert shadowed["choices"][0]["message"] == direct
        deadline = time.monotonic() + 30
        while 'outcome="answered"' not in (text := metrics(url, workspace)):
            assert time.monotonic() < deadline, "no shadow copy reached the candidate"
            time.sleep(0.2)
        assert f'traffic="shadow",version="{NAME}:2"' in text

        # Promote, then roll back with the installed CLI: the live server follows both.
        assert cli(workspace, "models", "promote", f"{NAME}:2", "--alias", "prod").returncode == 0
        wait_for_answer(url, workspace, f"{NAME}:2")
        rolled = cli(workspace, "models", "rollback", NAME, "--reason", "canary regressed")
        assert rolled.returncode == 0, rolled.stderr
        assert f"{NAME}@prod -> {NAME}:1 (was {NAME}:2)" in rolled.stdout
        wait_for_answer(url, workspace, f"{NAME}:1")
    (entry,) = workspace.registry.audit_entries(action="model.rollback")
    assert entry.actor == "oncall@ops" and entry.details["reason"] == "canary regressed"


def wait_for_answer(url, workspace, version: str) -> None:
    deadline = time.monotonic() + 20  # aliases are looked up again every 2 s
    while (model := chat(url, workspace, f"{NAME}@prod")["model"]) != version:
        assert time.monotonic() < deadline, f"still answered by {model}, not {version}"
        time.sleep(0.3)


def fake_version(workspace, name: str, number: int) -> Artifact:
    temp = workspace.store.new_temp_dir()
    (temp / "config.json").write_text(json.dumps({"n": number}))
    from forgeml.core.context import record_artifact

    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None, {}), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, name, artifact)
    return artifact


def test_bad_canaries_are_refused_with_clear_errors(workspace):
    fake_version(workspace, "bot", 1)
    forgotten = fake_version(workspace, "bot", 2)
    workspace.registry.set_alias("bot", "prod", 1)
    workspace.registry.set_alias("bot", "same", 1)
    workspace.registry.set_alias("bot", "old", 2)
    with workspace.registry.session() as session:
        row = session.get(Artifact, forgotten.id)
        row.forgotten_at, row.forgotten_reason = utcnow(), "DSR-9"
    cases = {
        "bot@candidate:150": "--canary: weight 150 in 'bot@candidate:150' is outside 0-100",
        "bot@candidate:-1": "is outside 0-100",
        "bot@candidate": "'bot@candidate' is not NAME@ALIAS:WEIGHT",
        "bot@nope:10": "bot@nope is not set",
        "bot@same:10": "bot@same and bot@prod are both bot:1: there is nothing to compare",
        "bot@prod:10": "the candidate is the prod alias (@prod)",
        "bot@old:10": "cannot be served: it was forgotten by the deletion request 'DSR-9'",
    }
    for value, message in cases.items():
        result = cli(workspace, "serve", "bot@prod", "--canary", value, "--port", "1")
        assert result.returncode == 2 or "forgotten" in message, (value, result.stderr)
        assert result.returncode != 0 and message in " ".join(result.stderr.split()), (
            value, result.stderr,
        )  # fmt: skip
        assert "Traceback" not in result.stderr

    # The same settings from forgeml.yaml (`serving.canary`), checked the same way.
    with workspace.config_path.open("a") as config:
        config.write("serving:\n  canary:\n    - {model: bot, candidate: same, weight: 150}\n")
    result = cli(workspace, "serve", "bot@prod", "--port", "1")
    assert result.returncode == 2 and "serving.canary.0.weight" in result.stderr, result.stderr
    assert "less than or equal to 100" in result.stderr


def test_a_full_shadow_queue_drops_copies_and_counts_them():
    """Copies never wait: beyond the workers and the queue they are dropped, counted."""
    from forgeml.serve.metrics import ServerMetrics
    from forgeml.serve.shadow import WORKERS, Shadow

    async def scenario() -> ServerMetrics:
        metrics, release = ServerMetrics(), asyncio.Event()
        shadow = Shadow(NAME, 2, metrics)
        await shadow.start()

        async def slow_candidate():
            await release.wait()
            raise RuntimeError("the candidate is gone")

        for _ in range(WORKERS + 2 + 3):
            shadow.send(slow_candidate, lambda served: [])
            await asyncio.sleep(0)  # let idle workers take what is queued
        release.set()
        await asyncio.sleep(0.05)
        await shadow.stop()
        return metrics

    metrics = asyncio.run(scenario())
    counted = {
        sample.labels["outcome"]: sample.value
        for sample in metrics.shadow_copies.collect()[0].samples
        if sample.name.endswith("_total")
    }
    assert counted == {"queued": WORKERS + 2, "dropped": 3, "failed": WORKERS + 2}


def test_the_readme_section_names_what_exists():
    from forgeml.serve.metrics import ServerMetrics

    section = README.split("### Canary, shadow and rollback", 1)[1].split("\n### ", 1)[0]
    names = {metric.name for metric in ServerMetrics().registry.collect()}
    claimed = re.findall(r"forgeml_(?:version|shadow)_\w+", section)
    assert len(claimed) >= 5
    for name in claimed:
        assert name.removesuffix("_total") in names, name
    settings_text = section.split("takes the same settings:", 1)[1].split(")", 1)[0]
    for setting in re.findall(r"`(\w+)", settings_text):
        assert setting in CanarySettings.model_fields, setting
    for flag in ("--canary", "--shadow", "--by version", "--by alias", "models rollback"):
        assert flag in section
