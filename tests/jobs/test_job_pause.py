"""Pause and resume: a queued job pauses at once, a running one once its run stops after a
checkpoint; resume (or Mistral's start) queues it and its run continues from there.

The real training path over HTTP with the openai client is in
tests/serve/test_fine_tuning_api.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select
from test_jobs import CHAT, FakeSftParams, _upload, fake_sft

from forgeml.core.errors import ConflictError, RunCancelled
from forgeml.core.runs import run_stage
from forgeml.core.schema import Run, RunEvent
from forgeml.core.stages import stage
from forgeml.jobs import queue, worker

STARTED = threading.Event()
STEPS = 40


@pytest.fixture
def base(workspace):
    data = run_stage(workspace, "toy.write", {"text": "x"}).outputs["dataset"]
    return run_stage(workspace, "toy.train", {"name": "base"}, {"dataset": data}).outputs["model"]


@stage(
    "toy.sft_checkpointed",
    params=FakeSftParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def sft_checkpointed(ctx, params):
    """Counts steps in a checkpoint file in its run directory; a stop asked is honoured at a
    step boundary after saving, as the real training loops do."""
    progress = ctx.checkpoint_dir / "step.txt"
    step = int(progress.read_text()) if progress.exists() else 0
    ctx.event("resumed", f"from step {step}", step=step)
    STARTED.set()
    while step < STEPS:
        time.sleep(0.05)
        step += 1
        progress.write_text(str(step))
        if ctx.cancelled():
            ctx.event("stopped", f"at step {step}", step=step)
            raise RunCancelled(f"stopped at step {step}")
    return fake_sft(ctx, params)


@pytest.fixture(autouse=True)
def checkpointed_sft(monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft_checkpointed")
    monkeypatch.setattr("forgeml.core.context.CANCEL_POLL_SECONDS", 0.0)
    STARTED.clear()


def _submit(workspace):
    file_id = _upload(workspace, CHAT)
    return queue.submit(
        workspace, method="supervised", base_model="base", training_files=[{"file_id": file_id}]
    )


def _wait_status(workspace, job_id, status, seconds=30):
    deadline = time.monotonic() + seconds
    while (current := queue.get_job(workspace, job_id)).status != status:
        assert time.monotonic() < deadline, f"still {current.status}, never {status}"
        time.sleep(0.02)
    return current


def _steps(workspace, run_id, kind) -> list[int]:
    with workspace.registry.session() as session:
        query = select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.kind == kind)
        return [event.step for event in session.scalars(query.order_by(RunEvent.id))]


def test_a_queued_job_pauses_at_once_and_resume_queues_it(workspace, base):
    job = _submit(workspace)
    assert queue.pause(workspace, job.id).status == "paused"
    assert queue.claim_next(workspace) is None  # a paused job is nobody's work
    with pytest.raises(ConflictError, match="only a queued or running job can be paused"):
        queue.pause(workspace, job.id)
    assert queue.resume(workspace, job.id).status == "queued"
    with pytest.raises(ConflictError, match="only a paused job can be resumed"):
        queue.resume(workspace, job.id)
    queue.pause(workspace, job.id)
    assert queue.start(workspace, job.id).status == "queued"  # Mistral's /start resumes too
    queue.pause(workspace, job.id)
    assert queue.cancel(workspace, job.id).status == "cancelled"  # and cancel still ends it


def test_a_running_job_stops_after_a_checkpoint_and_resumes_from_it(workspace, base):
    job = _submit(workspace)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(worker.work_once(workspace)))
    thread.start()
    assert STARTED.wait(30)
    asked = queue.pause(workspace, job.id)
    assert asked.status == "pausing"  # its worker lives: the run stops at a step boundary
    with pytest.raises(ConflictError, match="still stopping"):
        queue.resume(workspace, job.id)
    thread.join(30)
    paused = _wait_status(workspace, job.id, "paused")
    assert paused.lease_owner is None and paused.attempts == 0  # a pause is no failed attempt
    with workspace.registry.session() as session:
        assert session.get(Run, paused.run_id).status == "cancelled"
    (stopped_at,) = _steps(workspace, paused.run_id, "stopped")
    assert 0 < stopped_at < STEPS

    queue.resume(workspace, job.id)
    finished = worker.work_once(workspace)
    assert finished.id == job.id and finished.status == "succeeded", finished.error
    with workspace.registry.session() as session:
        assert session.get(Run, finished.run_id).attempt == 2  # the same run, taken up again
    resumed = _steps(workspace, finished.run_id, "resumed")
    assert resumed == [0, stopped_at]


def test_a_job_whose_worker_died_while_pausing_is_paused(workspace, base):
    job = _submit(workspace)
    claimed = queue.claim_next(workspace, owner="elsewhere:1:x")  # a worker that is gone
    assert claimed.id == job.id
    with workspace.registry.session() as session:  # paused while its lease was live ...
        row = session.get(type(claimed), job.id)
        row.status, row.lease_expires_at = "pausing", None  # ... which then ran out
    assert queue.claim_next(workspace) is None
    assert queue.get_job(workspace, job.id).status == "paused"
