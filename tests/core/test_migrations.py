"""Schema migrations: an older workspace opens in a newer forgeml, data intact."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from forgeml.core import database
from forgeml.core.schema import Base
from forgeml.core.workspace import Workspace


def test_workspace_from_the_first_schema_upgrades_with_its_data(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    (root / "forgeml.yaml").write_text("forgeml_workspace: 1\n")
    engine = database.create_registry_engine(f"sqlite:///{root / 'registry.db'}")
    database.upgrade(engine, "0001")
    assert database.current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (time, actor, action, target, details) "
                "VALUES ('2026-01-01 00:00:00', 'old@host', 'workspace.init', 'old', '{}')"
            )
        )
        # Before 0002 the audit log could still be rewritten in SQL.
        conn.execute(text("UPDATE audit_log SET target = 'old-ws'"))
    engine.dispose()

    workspace = Workspace.open(root)
    assert database.current_revision(workspace.engine) == database.head_revision()
    (entry,) = workspace.registry.audit_entries()
    assert (entry.actor, entry.target) == ("old@host", "old-ws")
    with workspace.engine.begin() as conn:
        triggers = (
            conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            .scalars()
            .all()
        )
    assert set(triggers) == {"audit_log_no_update", "audit_log_no_delete"}


def test_models_match_the_migrated_schema(workspace):
    """A change to schema.py without a migration fails here."""
    with workspace.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_the_fast_revision_check_agrees_with_alembic(tmp_path):
    """Opening an up-to-date registry skips alembic (every server start does it): the
    head read from the migration files and the stored revision read with plain SQL must
    be what alembic says, before the first migration, part way and at the head."""
    engine = database.create_registry_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    assert database.newest_migration() == database.head_revision()
    assert database.stored_revision(engine) is None
    database.upgrade(engine, "0003")
    assert database.stored_revision(engine) == database.current_revision(engine) == "0003"
    database.upgrade(engine)
    assert database.stored_revision(engine) == database.head_revision()
