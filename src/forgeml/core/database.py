"""Opening the registry database and bringing its schema up to date.

SQLite (the default) runs in WAL mode with every write transaction started as
`BEGIN IMMEDIATE`: a writer takes the write lock up front and waits (busy_timeout)
instead of failing half-way with "database is locked" when another process writes.
Read transactions (`Registry.reading()`, marked with the READ_ONLY execution option)
start with a plain, deferred `BEGIN`: in WAL mode a reader never waits for the write
lock, so checking an API key does not queue behind the request log's flush.
Any other SQLAlchemy URL (Postgres for a team) works unchanged.

Statement parameters are never put into error messages (`hide_parameters`): a failed
insert into the request log must not print the prompt it carried into the server log.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool

from forgeml.core.errors import WorkspaceError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 60_000
READ_ONLY = "forgeml_read_only"  # execution option of Registry.reading()'s connections


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_registry_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            # NullPool: a connection per session, so forked workers never share one.
            engine = create_engine(url, poolclass=NullPool, hide_parameters=True)
            _configure_sqlite(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise WorkspaceError(
            f"cannot use database URL {_redact(url)!r}: {exc}",
            hint="Use sqlite:///path/to/registry.db or postgresql+psycopg://user@host/db "
            "(Postgres needs `pip install 'forgeml[postgres]'`).",
        ) from exc
    return engine


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':', 1)[0]}:***@{host}"
    return url


# Alembic (~11 MB resident beyond SQLAlchemy) is imported only to migrate or to list
# revisions: opening an up-to-date registry, as every server start does, reads the
# revisions with the two functions below instead (tests/core/test_migrations.py
# checks they agree with alembic's).


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@cache
def newest_migration() -> str:
    """The head revision read from the migration files' `revision`/`down_revision`
    lines: the one revision no other revises."""
    revisions, revised = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        revisions.update(re.findall(r'^revision = "(\w+)"', source, re.M))
        revised.update(re.findall(r'^down_revision = "(\w+)"', source, re.M))
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def stored_revision(engine: Engine) -> str | None:
    """The schema revision alembic recorded in the database; None before the first."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _migration_lock(engine: Engine, lock_file: Path | None) -> Iterator[None]:
    """Only one process migrates at a time; the others wait, then find nothing to do."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(7305431)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(7305431)"))
                connection.commit()
        return
    if lock_file is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head", lock_file: Path | None = None) -> None:
    """Bring the schema to `revision` (default: the newest this forgeml knows)."""
    try:
        if revision == "head" and stored_revision(engine) == newest_migration():
            return
        from alembic import command

        with _migration_lock(engine, lock_file), engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        raise WorkspaceError(
            f"cannot open the registry database: {exc.orig}",
            hint="Check FORGEML_DATABASE_URL (or the workspace's registry.db) is reachable and writable.",
        ) from exc
    except Exception as exc:
        if "Can't locate revision" in str(exc):
            raise WorkspaceError(
                "the registry was written by a newer forgeml than this one",
                hint="Upgrade forgeml to open this workspace.",
            ) from exc
        raise
