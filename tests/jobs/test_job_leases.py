"""Job leases: a working worker keeps its job, a cancel ends a job whose run does not stop,
a job queued with a name of its choosing fails, and every run a job starts is attached.

The API side (a dead worker's job, a crash-looping job) is in tests/serve/test_api_hardening.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from test_jobs import CHAT, FakeSftParams, _upload, fake_sft

from forgeml.core.runs import run_stage
from forgeml.core.stages import stage
from forgeml.jobs import queue, worker


@pytest.fixture
def base(workspace):
    data = run_stage(workspace, "toy.write", {"text": "x"}).outputs["dataset"]
    return run_stage(workspace, "toy.train", {"name": "base"}, {"dataset": data}).outputs["model"]


@pytest.fixture(autouse=True)
def quick_leases(monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft")
    monkeypatch.setattr(queue, "LEASE_SECONDS", 0.4)
    monkeypatch.setattr(queue, "CANCEL_GRACE_SECONDS", 0.5)


STARTED = threading.Event()


@stage(
    "toy.sft_slow",
    params=FakeSftParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def sft_slow(ctx, params):
    """Trains for 2 s without looking for cancels (a run stuck in one long step)."""
    STARTED.set()
    time.sleep(2.0)
    return fake_sft(ctx, params)


def _submit(workspace, **extra):
    file_id = _upload(workspace, CHAT)
    return queue.submit(
        workspace,
        method="supervised",
        base_model="base",
        training_files=[{"file_id": file_id}],
        **extra,
    )


def _work_in_thread(workspace):
    done: list = []
    thread = threading.Thread(target=lambda: done.append(worker.work_once(workspace)))
    thread.start()
    assert STARTED.wait(30)
    return thread, done


def test_a_working_worker_keeps_its_job_past_the_lease(workspace, base, monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft_slow")
    STARTED.clear()
    job = _submit(workspace)
    thread, done = _work_in_thread(workspace)
    time.sleep(1.0)  # more than two leases
    assert queue.claim_next(workspace) is None  # renewed: nobody else takes it
    thread.join(30)
    assert done[0].status == "succeeded" and done[0].attempts == 1
    assert len(done[0].run_ids) == 2 and done[0].run_id == done[0].run_ids[-1]
    assert queue.get_job(workspace, job.id).lease_owner is None


def test_cancel_ends_a_job_whose_run_does_not_stop(workspace, base, monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft_slow")
    STARTED.clear()
    job = _submit(workspace)
    thread, done = _work_in_thread(workspace)
    asked = queue.cancel(workspace, job.id)
    assert asked.status == "running" and asked.cancel_requested  # its worker lives
    deadline = time.monotonic() + 10
    while queue.get_job(workspace, job.id).status != "cancelled":
        assert time.monotonic() < deadline, "cancel did not end the job"
        time.sleep(0.05)
    thread.join(30)
    assert done[0].status == "cancelled" and done[0].fine_tuned_model is None


def test_a_job_queued_with_a_name_fails_instead_of_taking_it(workspace, base):
    before = workspace.registry.resolve("base").ref
    job = _submit(workspace, hyperparameters={"name": "base"})
    done = worker.work_once(workspace)
    assert done.id == job.id and done.status == "failed"
    assert "name cannot be set by a job" in done.error
    assert workspace.registry.resolve("base").ref == before


def test_a_job_queued_with_a_python_reward_fails(workspace, base):
    job = _submit(workspace, hyperparameters={"rewards": [{"type": "python", "function": "os:x"}]})
    done = worker.work_once(workspace)
    assert done.id == job.id and done.status == "failed" and "not accepted" in done.error
    assert done.run_ids == []
