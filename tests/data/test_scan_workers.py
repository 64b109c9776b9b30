"""The worker processes of `data assess` / `data clean --workers N`, as a user meets them
when something goes wrong: a worker killed mid-scan (the kernel ending one for memory)
is a clear error in seconds, not a command that waits for ever, and leaves nothing
behind; the command killed leaves no workers running."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
FORGEML = str(Path(sys.executable).parent / "forgeml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A workspace with a dataset big enough to take a few seconds to assess."""
    rng = random.Random(7)
    words = [f"term{index}" for index in range(4000)]
    corpus = tmp_path / "docs.jsonl"
    with corpus.open("w") as out:
        for index in range(30_000):
            text = " ".join(rng.choice(words) for _ in range(200))
            out.write(json.dumps({"id": f"doc-{index}", "text": text}) + "\n")
    root = tmp_path / "ws"
    subprocess.run([FORGEML, "--workspace", str(root), "init"], check=True, capture_output=True)
    subprocess.run([FORGEML, "--workspace", str(root), "data", "ingest", str(corpus),
                    "--name", "docs"], check=True, capture_output=True, env=ENV)  # fmt: skip
    return root


def _assess_with_workers(root: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`data assess --workers 2` started, once both workers run."""
    command = subprocess.Popen(
        [FORGEML, "--workspace", str(root), "data", "assess", "docs", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(workers := psutil.Process(command.pid).children()) < 2:
        assert command.poll() is None, command.communicate()
        assert time.monotonic() < deadline, "no workers started"
        time.sleep(0.1)
    time.sleep(1)  # mid-scan
    assert command.poll() is None, "the scan ended before a worker could be killed"
    return command, workers


def _reports(root: Path) -> list:
    listed = subprocess.run([FORGEML, "--workspace", str(root), "--json", "artifacts", "list"],
                            check=True, capture_output=True, text=True)  # fmt: skip
    return [row for row in json.loads(listed.stdout) if row["kind"] == "report"]


def test_a_worker_killed_mid_scan_is_an_error_in_seconds(workspace):
    command, workers = _assess_with_workers(workspace)
    os.kill(workers[0].pid, signal.SIGKILL)
    _, stderr = command.communicate(timeout=60)  # it waited for ever before
    assert command.returncode == 2, stderr
    assert "a worker process inspecting documents died" in stderr, stderr
    assert "Traceback" not in stderr
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
                   for worker in workers)  # fmt: skip
    assert _reports(workspace) == []  # nothing half-written
    again = subprocess.run([FORGEML, "--workspace", str(workspace), "data", "assess", "docs",
                            "--workers", "2"], capture_output=True, text=True, env=ENV)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_reports(workspace)) == 1


def test_the_command_killed_leaves_no_worker_running(workspace):
    command, workers = _assess_with_workers(workspace)
    command.kill()
    command.communicate(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == [], [worker.cmdline() for worker in alive]
