"""Fine-tuning jobs on Slurm: `forgeml jobs worker --on slurm` hands each queued job to a
real Slurm controller (one node on loopback), a compute node runs it, and the job ends
as a local worker would have ended it: the fine-tuned model named, the runs recording
the Slurm job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from finetune_fixtures import build_base, chat_lines, forgeml, register_model
from slurm_fixtures import wait_for_job

from forgeml.core.schema import FineTuningJob, utcnow
from forgeml.core.workspace import Workspace
from forgeml.jobs import files, queue

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def queued_job(root: Path, base_dir: Path) -> str:
    """A supervised job on the tiny base, as the API queues one."""
    workspace = Workspace.init(root)
    try:
        register_model(workspace, base_dir, name="base")
        content = "".join(json.dumps(line) + "\n" for line in chat_lines(8)).encode()
        upload = files.store_file(workspace, "chats.jsonl", content, "fine-tune")
        job = queue.submit(workspace, method="supervised", base_model="base",
                           training_files=[{"file_id": upload.id}], suffix="slurm",
                           hyperparameters={"training_steps": 2, "batch_size": 2})  # fmt: skip
        return job.id
    finally:
        workspace.close()


def dispatcher(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), "--json", "jobs",
               "worker", "--on", "slurm", "--once", "--poll", "1", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


def listed(root: Path, job_id: str) -> dict:
    jobs = json.loads(forgeml(root, "--json", "jobs", "list").stdout)
    return next(job for job in jobs if job["id"] == job_id)


def expire_lease(root: Path, job_id: str) -> None:
    """As if no dispatcher had renewed the job's lease for a minute."""
    workspace = Workspace.open(root)
    try:
        with workspace.registry.session() as session:
            session.get(FineTuningJob, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    finally:
        workspace.close()


def handed_to_slurm(root: Path, job_id: str, dispatcher: subprocess.Popen) -> str:
    """The Slurm job id, once the running dispatcher has handed the job over."""
    deadline = time.monotonic() + 120
    while not listed(root, job_id)["dispatched"]:
        assert dispatcher.poll() is None, dispatcher.stderr.read()
        assert time.monotonic() < deadline, "the job was not handed to Slurm"
        time.sleep(0.5)
    return listed(root, job_id)["dispatched"]["job"]


def test_a_queued_job_runs_on_slurm_to_its_model(tmp_path, slurm):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    done = dispatcher(root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"jobs_handed_to_slurm": 1}

    job = listed(root, job_id)
    logs = "\n".join(p.read_text() for p in (root / "serving" / "slurm").glob("*.out"))
    assert job["status"] == "succeeded", (job, logs[-3000:])
    assert job["fine_tuned_model"].startswith("ft-base-slurm-")
    slurm_job = job["dispatched"]["job"]
    assert job["dispatched"]["backend"] == "slurm" and slurm_job.isdigit()
    shown = json.loads(forgeml(root, "--json", "runs", "show", job["run_id"]).stdout)
    assert shown["stage"] == "train.sft" and shown["status"] == "succeeded"
    assert shown["environment"]["launch"]["slurm_job"] == slurm_job
    assert shown["environment"]["launch"]["by"] == "slurm"
    # The model is the registry's like any other: servable, evaluable by name.
    models = json.loads(forgeml(root, "--json", "models", "list").stdout)
    assert any(job["fine_tuned_model"] in json.dumps(entry) for entry in models)


def test_a_submission_slurm_refuses_fails_that_job_with_slurms_words(tmp_path, slurm):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    done = dispatcher(root, "--partition", "no-such-partition")
    assert done.returncode == 0, done.stderr[-3000:]
    job = listed(root, job_id)
    assert job["status"] == "failed"
    assert "sbatch refused the job" in job["error"] and "partition" in job["error"].lower()


def test_without_slurm_commands_the_dispatcher_says_so_before_claiming(tmp_path):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), "jobs", "worker",
               "--on", "slurm", "--once"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**ENV, "PATH": str(tmp_path)})  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "sbatch, scontrol, scancel not on PATH" in done.stderr
    assert listed(root, job_id)["status"] == "queued"  # untouched


def test_a_cancel_takes_a_job_back_from_slurms_queue(tmp_path, slurm):
    """The job waits in Slurm's queue (the loopback cluster's `held` partition is down);
    `forgeml jobs cancel` ends it: the dispatcher scancels the Slurm job."""
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), "--json", "jobs",
               "worker", "--on", "slurm", "--once", "--poll", "0.5", "--partition", "held"]  # fmt: skip
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV)  # fmt: skip
    try:
        slurm_job = handed_to_slurm(root, job_id, running)
        assert (
            "JobState=PENDING"
            in subprocess.run(
                ["scontrol", "show", "job", slurm_job], capture_output=True, text=True
            ).stdout
        )
        forgeml(root, "jobs", "cancel", job_id)
        _, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 0, err[-3000:]
    assert listed(root, job_id)["status"] == "cancelled"
    assert wait_for_job(slurm_job, timeout=60) == "CANCELLED"


def test_a_stopped_dispatcher_leaves_its_job_to_slurm_and_the_next_one_watches_it(tmp_path, slurm):
    """The lease belongs to the Slurm job, not the dispatcher: after a dispatcher is
    killed, a local worker does not take the job up again while Slurm has it queued (even
    once the lease runs out), and a new dispatcher watches it on (here: a cancel)."""
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), "--json", "jobs",
               "worker", "--on", "slurm", "--poll", "0.5", "--partition", "held"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        slurm_job = handed_to_slurm(root, job_id, first)
    finally:
        first.kill()
        first.wait()
    expire_lease(root, job_id)

    local = forgeml(root, "--json", "jobs", "worker", "--once")
    assert json.loads(local.stdout) == {"jobs_run": 0}
    assert listed(root, job_id)["status"] == "running"
    assert listed(root, job_id)["dispatched"]["job"] == slurm_job  # not handed over twice

    forgeml(root, "jobs", "cancel", job_id)
    second = dispatcher(root, "--partition", "held")
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout) == {"jobs_handed_to_slurm": 0}
    assert listed(root, job_id)["status"] == "cancelled"
    assert wait_for_job(slurm_job, timeout=60) == "CANCELLED"


def test_an_unreachable_controller_is_said_before_any_job_is_claimed(tmp_path, slurm):
    root = tmp_path / "ws"
    job_id = queued_job(root, build_base(tmp_path / "base"))
    conf = Path("/etc/slurm/slurm.conf").read_text()
    unreachable = tmp_path / "slurm.conf"  # the same cluster, its controller's port closed
    unreachable.write_text(conf + "SlurmctldPort=9\n")
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), "jobs", "worker",
               "--on", "slurm", "--once"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**ENV, "SLURM_CONF": str(unreachable)})  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "the Slurm controller does not answer" in done.stderr, done.stderr
    assert listed(root, job_id)["status"] == "queued"  # untouched


def test_the_loopback_cluster_answers_a_second_caller_while_its_daemons_run(slurm):
    """The daemons scripts/slurm_loopback.sh starts must not keep its lock (or the
    caller's output): CI once waited 180 s on a munged holding the lock."""
    again = subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts/slurm_loopback.sh")],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert (again.returncode, again.stdout.strip()) == (0, slurm), again.stderr
    holders = [
        pid for pid in os.listdir("/proc") if pid.isdigit()
        for fd in _open_files(pid) if fd.endswith("/forgeml-slurm/.lock")
    ]  # fmt: skip
    assert holders == [], f"processes {holders} hold the loopback script's lock"


def _open_files(pid: str) -> list[str]:
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:  # the process ended while we looked
        return []
