"""Suite-wide setup: offline guard, quiet logs, a fresh workspace per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))

import netguard  # noqa: E402

pytest_plugins = ["ci_no_skips"]

netguard.install()
# Subprocesses started by tests get the same guard through sitecustomize.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(TESTS_DIR / "_subprocess_guard"), str(TESTS_DIR)]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
os.environ.pop("FORGEML_DATABASE_URL", None)
os.environ.pop("FORGEML_WORKSPACE", None)
os.environ.pop("FORGEML_ARTIFACT_STORE", None)

import toy_stages  # noqa: E402,F401  (registers the stages the core tests use)
from forgeml.core.workspace import Workspace  # noqa: E402
from s3_server import bucket, s3_endpoint  # noqa: E402,F401  (S3 on loopback, for the shared-store tests)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def postgres_admin_url():
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
        url = server.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield url
    server.stop()


@pytest.fixture
def postgres_url(postgres_admin_url, request):
    """A fresh, empty database on the test server for each test."""
    from sqlalchemy import create_engine, text

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return postgres_admin_url.rsplit("/", 1)[0] + "/" + name
