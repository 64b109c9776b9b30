"""A one-node Slurm on loopback for the tests that submit to it (scripts/slurm_loopback.sh:
munge, slurmctld and slurmd, started once, left running). .ci/run installs Slurm, so CI
never skips these tests (tests/ci_no_skips.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The loopback cluster's partition name."""
    if shutil.which("sbatch") is None or os.geteuid() != 0:
        pytest.skip("Slurm is not installed here, or not as root (.ci/run installs it)")
    # Output to a file, not a pipe: reading a pipe to EOF would also wait on any daemon
    # the script starts that kept it open.
    output = tmp_path_factory.mktemp("slurm") / "start.log"
    with output.open("w") as sink:
        started = subprocess.run([str(ROOT / "scripts/slurm_loopback.sh")], stdout=sink,
                                 stderr=subprocess.STDOUT, timeout=240)  # fmt: skip
    said = output.read_text()
    assert started.returncode == 0, said
    return said.strip().splitlines()[-1]


def wait_for_job(job_id: str, timeout: float = 600) -> str:
    """The job's final state (COMPLETED, FAILED, ...) once Slurm says it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                               text=True, timeout=30).stdout  # fmt: skip
        state = re.search(r"JobState=(\w+)", shown)
        if state and state[1] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return state[1]
        time.sleep(1)
    raise AssertionError(f"Slurm job {job_id} did not end in {timeout} s")
