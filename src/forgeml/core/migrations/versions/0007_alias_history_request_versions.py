"""alias history (for rollback) and the version/alias that answered each logged request

`alias_history` is filled from the audit log's earlier `alias.set` entries, so a
workspace made before this migration can roll back its last promotion too.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    history = op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("previous_version_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["previous_version_id"], ["versions.id"]),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alias_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alias_history_name"), ["name"], unique=False)
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("alias", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_request_log_version"), ["version"], unique=False)
    _history_from_audit_log(history)


def _history_from_audit_log(history: sa.Table) -> None:
    audit = sa.table(
        "audit_log",
        sa.column("id", sa.Integer),
        sa.column("time", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("target", sa.String),
        sa.column("details", sa.JSON),
    )
    versions = sa.table(
        "versions", sa.column("id", sa.Integer), sa.column("name"), sa.column("version")
    )
    bind = op.get_bind()
    ids = {(row.name, row.version): row.id for row in bind.execute(sa.select(versions))}
    rows = []
    query = sa.select(audit).where(audit.c.action == "alias.set").order_by(audit.c.id)
    for entry in bind.execute(query):
        name, _, alias = (entry.target or "").partition("@")
        details = entry.details or {}
        version_id = ids.get((name, details.get("version")))
        if not alias or version_id is None:
            continue
        rows.append({
            "name": name, "alias": alias, "version_id": version_id,
            "previous_version_id": details.get("previous_version_id"), "action": "set",
            "time": entry.time, "actor": entry.actor, "reason": details.get("reason") or "",
        })  # fmt: skip
    if rows:
        op.bulk_insert(history, rows)


def downgrade() -> None:
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_log_version"))
        batch_op.drop_column("alias")
        batch_op.drop_column("version")
    with op.batch_alter_table("alias_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alias_history_name"))
    op.drop_table("alias_history")
