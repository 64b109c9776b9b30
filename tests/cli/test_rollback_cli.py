"""`forgeml models rollback`: the installed CLI moves an alias back, audited, step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from forgeml.core.context import record_artifact
from forgeml.core.schema import Artifact, utcnow

FORGEML = str(Path(sys.executable).parent / "forgeml")


def run(workspace, *args: str, actor: str = "alice@ops") -> subprocess.CompletedProcess:
    return subprocess.run(
        [FORGEML, "--workspace", str(workspace.root), *args],
        capture_output=True, text=True, check=False,
        env={**os.environ, "FORGEML_ACTOR": actor, "COLUMNS": "200"},
    )  # fmt: skip


def add_versions(workspace, name: str, count: int) -> list[Artifact]:
    """`count` versions of `name`, each a distinct (tiny, fake) model artifact."""
    artifacts = []
    for number in range(count):
        temp = workspace.store.new_temp_dir()
        (temp / "config.json").write_text(json.dumps({"version": number}))
        artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None, {}), None)
        with workspace.registry.session() as session:
            workspace.registry.add_version(session, name, artifact)
        artifacts.append(artifact)
    return artifacts


def prod_version(workspace, name: str = "bot") -> int:
    shown = json.loads(run(workspace, "--json", "models", "list", name).stdout)
    return next(row["version"] for row in shown if "prod" in row["aliases"])


def test_rollback_walks_back_through_promotions_and_is_audited(workspace):
    add_versions(workspace, "bot", 3)
    for number in (1, 2, 3):
        promoted = run(workspace, "models", "promote", f"bot:{number}", "--alias", "prod")
        assert promoted.returncode == 0, promoted.stderr

    first = run(workspace, "--json", "models", "rollback", "bot", "--reason", "worse answers")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "model": "bot:2", "alias": "prod", "from_version": 3, "to_version": 2,
        "reason": "worse answers",
    }  # fmt: skip
    assert prod_version(workspace) == 2
    second = run(workspace, "models", "rollback", "bot", actor="bob@ops")
    assert second.returncode == 0 and "bot@prod -> bot:1 (was bot:2)" in second.stdout
    assert prod_version(workspace) == 1

    entries = workspace.registry.audit_entries(action="model.rollback")
    assert [(e.actor, e.target, e.details["to_version"]) for e in entries] == [
        ("alice@ops", "bot@prod", 2),
        ("bob@ops", "bot@prod", 1),
    ]
    assert entries[0].details["reason"] == "worse answers"
    history = workspace.registry.alias_history("bot", "prod")
    assert [(m["action"], m["version"]) for m in history] == [
        ("set", 1), ("set", 2), ("set", 3), ("rollback", 2), ("rollback", 1),
    ]  # fmt: skip

    nothing_earlier = run(workspace, "models", "rollback", "bot")
    assert nothing_earlier.returncode == 2
    assert "bot@prod has no earlier version to go back to" in nothing_earlier.stderr
    assert prod_version(workspace) == 1

    # A new promotion after rollbacks starts a new step to undo.
    assert run(workspace, "models", "promote", "bot:3", "--alias", "prod").returncode == 0
    assert run(workspace, "models", "rollback", "bot").returncode == 0
    assert prod_version(workspace) == 1


def test_rollback_refuses_a_forgotten_version_and_an_unset_alias(workspace):
    first, _ = add_versions(workspace, "bot", 2)
    for number in (1, 2):
        assert run(workspace, "models", "promote", f"bot:{number}").returncode == 0
    with workspace.registry.session() as session:
        row = session.get(Artifact, first.id)
        row.forgotten_at, row.forgotten_reason = utcnow(), "DSR-7"

    refused = run(workspace, "models", "rollback", "bot")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "cannot become bot@prod again" in refused.stderr and "DSR-7" in refused.stderr
    assert prod_version(workspace) == 2
    assert not workspace.registry.audit_entries(action="model.rollback")

    unset = run(workspace, "models", "rollback", "bot", "--alias", "staging")
    assert unset.returncode != 0 and "bot@staging is not set" in unset.stderr
    assert "Traceback" not in unset.stderr


def test_a_workspace_promoted_before_alias_history_can_roll_back(tmp_path):
    """Migration 0007 fills the alias history from the audit log's `alias.set` entries."""
    from sqlalchemy import text

    from forgeml.core import database
    from forgeml.core.workspace import Workspace

    root = tmp_path / "old"
    root.mkdir()
    (root / "forgeml.yaml").write_text("forgeml_workspace: 1\n")
    engine = database.create_registry_engine(f"sqlite:///{root / 'registry.db'}")
    database.upgrade(engine, "0006")
    with engine.begin() as conn:
        for number in (1, 2):
            conn.execute(text(
                "INSERT INTO artifacts (id, kind, sha256, size_bytes, file_count, path, "
                f"created_at, meta) VALUES ({number}, 'model', '{number:064x}', 1, 1, "
                f"'artifacts/model/{number:064x}', '2026-01-01 00:00:00', '{{}}')"
            ))  # fmt: skip
            conn.execute(text(
                "INSERT INTO versions (id, name, version, artifact_id, created_at, description) "
                f"VALUES ({number}, 'bot', {number}, {number}, '2026-01-01 00:00:00', '')"
            ))  # fmt: skip
        conn.execute(text("INSERT INTO aliases (name, alias, version_id, updated_at) "
                          "VALUES ('bot', 'prod', 2, '2026-01-02 00:00:00')"))  # fmt: skip
        for number, previous in ((1, "null"), (2, "1")):
            details = f'{{"version": {number}, "previous_version_id": {previous}, "reason": ""}}'
            conn.execute(text(
                "INSERT INTO audit_log (time, actor, action, target, details) VALUES "
                f"('2026-01-0{number} 00:00:00', 'old@host', 'alias.set', 'bot@prod', '{details}')"
            ))  # fmt: skip
    engine.dispose()
    Workspace.open(root).close()  # upgrades

    rolled = run(SimpleNamespace(root=root), "--json", "models", "rollback", "bot")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["to_version"] == 1
