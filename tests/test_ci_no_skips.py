"""Under CI a skipped test is a failure (tests/ci_no_skips.py); elsewhere it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent

SKIPPING = """
import pytest

def test_needs_a_database():
    pytest.skip("PostgreSQL unavailable: pg_ctl not found")
"""


@pytest.mark.parametrize(("ci", "expected"), [("true", "1 failed"), (None, "1 skipped")])
def test_a_skip_fails_only_under_ci(tmp_path, ci, expected):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_no_skips", "-q", "-p", "no:cacheprovider",
         str(tmp_path / "test_skipping.py")],
        cwd=tmp_path, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert expected in result.stdout, result.stdout
    if ci:
        assert "skipped under CI" in result.stdout and "pg_ctl not found" in result.stdout
