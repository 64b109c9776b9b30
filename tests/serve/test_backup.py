"""`forgeml admin backup` / `restore` through the installed CLI: a workspace restored into
an empty folder (SQLite) or an empty PostgreSQL database serves the same model, to the
same key, with the same answers; bad targets and archives are refused cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_fixtures import ServerThread, register_tiny_model

from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key

FORGEML = str(Path(sys.executable).parent / "forgeml")
CHAT = {"model": "bk-chat", "max_tokens": 8, "temperature": 0, "seed": 3,
        "messages": [{"role": "user", "content": "Where is my parcel?"}]}  # fmt: skip


def forgeml(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FORGEML, "--workspace", str(workspace), "--json", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


def answer(root: Path, key: str) -> str:
    workspace = Workspace.open(root)
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1, engine_process=False)
    try:
        with ServerThread(create_app(workspace, ["bk-chat"], settings)) as url:
            response = httpx.post(url + "/v1/chat/completions", json=CHAT,
                                  headers={"Authorization": f"Bearer {key}"}, timeout=60)  # fmt: skip
    finally:
        workspace.close()
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("backup") / "ws"
    workspace = Workspace.init(root)
    register_tiny_model(workspace, "bk-chat")
    _, key = create_key(workspace, "app", "inference")
    workspace.close()
    archive = root.parent / "backups" / "ws.tar.gz"
    made = forgeml(root, "admin", "backup", str(archive))
    assert made.returncode == 0, made.stderr
    return root, key, archive, json.loads(made.stdout)


@pytest.mark.slow
def test_a_restored_workspace_serves_the_same_model_to_the_same_key(original, tmp_path):
    root, key, archive, manifest = original
    assert manifest["artifacts"] == 1 and manifest["tables"]["api_keys"] == 1
    restored = tmp_path / "restored"
    result = forgeml(restored, "admin", "restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified_artifacts"] == 1
    assert json.loads(forgeml(restored, "artifacts", "verify").stdout)["problems"] == {}
    model = "bk-chat"
    before = json.loads(forgeml(root, "artifacts", "show", model).stdout)["sha256"]
    after = json.loads(forgeml(restored, "artifacts", "show", model).stdout)["sha256"]
    assert before == after
    assert answer(restored, key) == answer(root, key)  # the same key works; the same bytes answer
    audit = json.loads(forgeml(restored, "audit", "--action", "workspace.restore").stdout)
    assert audit and audit[-1]["target"] == str(archive)


@pytest.mark.slow
def test_restore_onto_postgres(original, tmp_path, postgres_url):
    _, _, archive, _ = original
    restored = tmp_path / "on-postgres"
    result = forgeml(restored, "admin", "restore", str(archive), "--database-url", postgres_url)
    assert result.returncode == 0, result.stderr
    listed = json.loads(forgeml(restored, "models", "list").stdout)
    assert [row["name"] for row in listed] == ["bk-chat"]
    # The id counters moved past the restored rows: new rows can be added.
    assert forgeml(restored, "keys", "create", "--name", "second").returncode == 0
    again = forgeml(
        tmp_path / "again", "admin", "restore", str(archive), "--database-url", postgres_url
    )
    assert again.returncode == 2 and "is not empty" in again.stderr
    assert not (tmp_path / "again").exists()  # nothing half-restored stays


def test_restore_refuses_what_it_cannot_use(original, tmp_path):
    _, _, archive, _ = original
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    refused = forgeml(busy, "admin", "restore", str(archive))
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    assert (busy / "notes.txt").read_text() == "mine"
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(archive.read_bytes()[:2000])  # a truncated backup
    broken = forgeml(tmp_path / "from-junk", "admin", "restore", str(junk))
    assert broken.returncode == 2 and "not a readable forgeml backup" in broken.stderr
    assert not (tmp_path / "from-junk").exists()
    for result in (refused, broken):
        assert "Traceback" not in result.stderr
