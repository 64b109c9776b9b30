"""A pytest plugin: under CI (CI set), a skipped test fails.

A test that skips because PostgreSQL or llama.cpp is missing proves nothing, and in CI
it would pass silently; `.ci/run` installs everything the suite needs, so a skip there
means an install step broke.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"
