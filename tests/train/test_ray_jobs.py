"""Fine-tuning jobs on Ray: `forgeml jobs worker --on ray` hands each queued job to a real
Ray cluster (a head with its dashboard on loopback) as a Ray job, which runs it to the
fine-tuned model and records the Ray job in its run; a job Ray cannot start yet (it asks
for a GPU the cluster lacks) stays Ray's when its dispatcher is killed, and a cancel
takes it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_fixtures import build_base, forgeml
from test_slurm_jobs import expire_lease, listed, queued_job

from ray_fixtures import free_port, wait_for

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def dispatcher(root: Path, address: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "forgeml", "--workspace", str(root), "--json", "jobs",
            "worker", "--on", "ray", "--ray-address", address, "--poll", "0.5", *args]  # fmt: skip


def test_a_queued_job_runs_on_ray_to_its_model(tmp_path, cluster):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    done = subprocess.run(dispatcher(root, cluster, "--once"), capture_output=True, text=True,
                          timeout=600, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"jobs_handed_to_ray": 1}

    job = listed(root, job_id)
    submission = job["dispatched"]["job"]
    state, logs = wait_for(cluster, submission)
    assert job["status"] == "succeeded", (job, logs[-3000:])
    assert state == "SUCCEEDED"
    assert job["dispatched"] == {"backend": "ray", "job": submission, "address": cluster}
    assert job["fine_tuned_model"].startswith("ft-base-slurm-")  # the fixture's suffix
    shown = json.loads(forgeml(root, "--json", "runs", "show", job["run_id"]).stdout)
    assert shown["stage"] == "train.sft" and shown["status"] == "succeeded"
    assert shown["environment"]["launch"]["ray_job"] == submission
    assert shown["environment"]["launch"]["by"] == "ray"


def test_a_ray_job_that_dies_fails_its_fine_tuning_job_with_rays_words(tmp_path, cluster):
    """The node cannot start forgeml (a wrong --python): Ray says FAILED, and the job ends
    failed with that and where Ray keeps the log, not left running."""
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    done = subprocess.run(dispatcher(root, cluster, "--once", "--python", "/nonexistent/python"),
                          capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    job = listed(root, job_id)
    submission = job["dispatched"]["job"]
    assert job["status"] == "failed"
    assert f"Ray job {submission} ended FAILED before the fine-tuning job finished" in job["error"]
    assert f"ray job logs {submission}" in job["error"]


def test_a_stopped_dispatcher_leaves_its_job_to_ray_and_a_cancel_takes_it_back(tmp_path, cluster):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    # A GPU this cluster lacks: Ray keeps the job pending.
    first = subprocess.Popen(dispatcher(root, cluster, "--gpus-per-job", "1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not listed(root, job_id)["dispatched"]:
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the job was not handed to Ray"
            time.sleep(0.5)
    finally:
        first.kill()
        first.wait()
    submission = listed(root, job_id)["dispatched"]["job"]
    expire_lease(root, job_id)

    local = forgeml(root, "--json", "jobs", "worker", "--once")
    assert json.loads(local.stdout) == {"jobs_run": 0}  # Ray still has it pending
    assert listed(root, job_id)["status"] == "running"
    assert listed(root, job_id)["dispatched"]["job"] == submission  # not handed over twice

    forgeml(root, "jobs", "cancel", job_id)
    second = subprocess.run(dispatcher(root, cluster, "--once"), capture_output=True,
                            text=True, timeout=300, env=ENV)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout) == {"jobs_handed_to_ray": 0}
    assert listed(root, job_id)["status"] == "cancelled"
    # Ray delivers the stop when it can schedule the job; should it start, the node finds
    # nothing to run (what the Ray job's entrypoint would do, run here by hand).
    late = forgeml(root, "jobs", "run", job_id, "--owner", f"ray:{submission}", ok=False)
    assert late.returncode == 2 and "is cancelled and not held by" in late.stderr


def test_an_unreachable_ray_is_said_before_any_job_is_claimed(tmp_path):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    command = dispatcher(root, f"http://127.0.0.1:{free_port()}", "--once")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the Ray Jobs API at http://127.0.0.1:" in done.stderr
    assert listed(root, job_id)["status"] == "queued"  # untouched
    no_address = [sys.executable, "-m", "forgeml", "--workspace", str(root), "jobs", "worker",
                  "--on", "ray", "--once"]  # fmt: skip
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_")}
    done = subprocess.run(no_address, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "needs the cluster's Jobs API address" in done.stderr
