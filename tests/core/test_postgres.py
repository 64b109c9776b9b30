"""The registry on a real PostgreSQL server: the same behaviour as on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from forgeml.core import database
from forgeml.core.lineage import downstream, flatten, upstream
from forgeml.core.runs import run_stage
from forgeml.core.schema import Base
from forgeml.core.workspace import Workspace

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_workspace(tmp_path, postgres_url):
    ws = Workspace.init(tmp_path / "ws", database_url=postgres_url)
    yield ws
    ws.close()


def test_workspace_on_postgres_migrates_to_head_and_matches_models(pg_workspace):
    assert pg_workspace.engine.dialect.name == "postgresql"
    assert database.current_revision(pg_workspace.engine) == database.head_revision()
    with pg_workspace.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_runs_reuse_and_lineage_on_postgres(pg_workspace):
    data = run_stage(pg_workspace, "toy.write", {"text": "hello world"}).outputs["dataset"]
    assert run_stage(pg_workspace, "toy.write", {"text": "hello world"}).reused
    model = run_stage(pg_workspace, "toy.train", {"name": "m"}, {"dataset": data}).outputs["model"]
    tree = upstream(pg_workspace, pg_workspace.registry.resolve("m"))
    assert tree["sha256"] == model.sha256
    assert tree["inputs"][0]["sha256"] == data.sha256
    derived = flatten(downstream(pg_workspace, data), "used_by")
    assert {n["kind"] for n in derived} == {"dataset", "model"}


def test_audit_log_is_append_only_on_postgres(pg_workspace):
    for statement in (
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_log SET actor = 'x'",
    ):
        with pytest.raises(DatabaseError, match="append-only"), pg_workspace.engine.begin() as conn:
            conn.execute(text(statement))
    assert pg_workspace.registry.audit_entries()[0].action == "workspace.init"


def test_two_processes_writing_to_postgres_lose_nothing(pg_workspace, postgres_url):
    script = textwrap.dedent(
        f"""
        import sys
        from forgeml.core.workspace import Workspace
        ws = Workspace.open({str(pg_workspace.root)!r})
        for i in range(100):
            with ws.registry.session() as session:
                ws.registry.audit(session, "test.write", f"{{sys.argv[1]}}-{{i}}")
        """
    )
    env = {**os.environ, "FORGEML_DATABASE_URL": postgres_url}
    writers = [subprocess.Popen([sys.executable, "-c", script, n], env=env) for n in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert len(pg_workspace.registry.audit_entries(limit=1000, action="test.write")) == 200
