"""Fine-tuning jobs: upload validation, queue, one worker per job, cancel, restart safety."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from pydantic import Field

from forgeml.core.errors import ConflictError, InputError
from forgeml.core.runs import run_stage
from forgeml.core.schema import Run
from forgeml.core.stages import StageParams, stage
from forgeml.jobs import files, queue, worker

CHAT = [
    {
        "messages": [
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": '{"category": "shipping"}'},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Refund me"},
            {"role": "assistant", "content": '{"category": "billing"}'},
        ]
    },
]


class FakeSftParams(StageParams):
    name: str | None = None
    epochs: int = Field(default=1, ge=1)
    learning_rate: float = 1e-4


@stage(
    "toy.sft",
    params=FakeSftParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def fake_sft(ctx, params):
    """Stands in for train.sft: records what it was given as the 'weights'."""
    ctx.raise_if_cancelled()
    writer = ctx.new_artifact("model")
    (writer.path / "weights.json").write_text(
        json.dumps({"epochs": params.epochs, "lr": params.learning_rate})
    )
    model = ctx.commit(writer)
    ctx.name(model, params.name)
    return {"model": model}


@pytest.fixture
def base(workspace):
    data = run_stage(workspace, "toy.write", {"text": "x"}).outputs["dataset"]
    return run_stage(workspace, "toy.train", {"name": "base"}, {"dataset": data}).outputs["model"]


@pytest.fixture(autouse=True)
def use_fake_sft(monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft")


def _upload(workspace, records) -> str:
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    return files.store_file(workspace, "train.jsonl", content, "fine-tune").id


def test_a_bad_training_file_is_rejected_at_upload_with_its_line(workspace):
    bad = [*CHAT, {"messages": [{"role": "bot", "content": "hi"}]}]
    with pytest.raises(InputError, match=r"train.jsonl:3"):
        _upload(workspace, bad)
    assert files.list_files(workspace) == []


def test_job_runs_to_a_named_model_with_translated_hyperparameters(workspace, base):
    file_id = _upload(workspace, CHAT)
    job = queue.submit(
        workspace,
        method="supervised",
        base_model="base",
        training_files=[{"file_id": file_id}],
        hyperparameters={"n_epochs": 3, "learning_rate": 0.01, "unknown_knob": 1},
        suffix="helpdesk",
    )
    assert job.status == "queued"
    done = worker.work_once(workspace)
    assert done.id == job.id and done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft-base-helpdesk-")
    model = workspace.registry.resolve(done.fine_tuned_model)
    weights = json.loads((workspace.root / model.path / "weights.json").read_text())
    assert weights == {"epochs": 3, "lr": 0.01}
    assert done.run_id and [e.kind for e in queue.job_events(workspace, done)][-1] == "status"
    assert worker.work_once(workspace) is None  # nothing left


def test_created_jobs_wait_for_start_and_cancel_is_final(workspace, base):
    file_id = _upload(workspace, CHAT)
    held = queue.submit(
        workspace,
        method="supervised",
        base_model="base",
        training_files=[{"file_id": file_id}],
        auto_start=False,
    )
    assert worker.work_once(workspace) is None
    queue.start(workspace, held.id)
    with pytest.raises(ConflictError):
        queue.start(workspace, held.id)
    assert queue.cancel(workspace, held.id).status == "cancelled"
    assert worker.work_once(workspace) is None
    with pytest.raises(ConflictError, match="already cancelled"):
        queue.cancel(workspace, held.id)


def _claim(root: str, results, done) -> None:
    from forgeml.core.workspace import Workspace

    job = queue.claim_next(Workspace.open(root))
    results.put(job.id if job else None)
    # Stay alive until both have claimed: a worker that has exited holds a dead lease,
    # which the other then takes over, rightly (seen when one claimer started late).
    done.wait(60)


def test_two_workers_never_claim_the_same_job(workspace, base):
    file_id = _upload(workspace, CHAT)
    job = queue.submit(
        workspace, method="supervised", base_model="base", training_files=[{"file_id": file_id}]
    )
    spawn = multiprocessing.get_context("spawn")
    results, done = spawn.Queue(), spawn.Event()
    claimers = [
        spawn.Process(target=_claim, args=(str(workspace.root), results, done)) for _ in range(2)
    ]
    for process in claimers:
        process.start()
    claimed = sorted([results.get(timeout=60), results.get(timeout=60)], key=lambda x: x is None)
    done.set()
    for process in claimers:
        process.join(60)
    assert claimed == [job.id, None]


def test_unknown_base_model_and_file_are_refused(workspace, base):
    with pytest.raises(Exception, match="no artifact or version named 'nope'"):
        queue.submit(
            workspace,
            method="supervised",
            base_model="nope",
            training_files=[{"file_id": "file-x"}],
        )
    with pytest.raises(Exception, match="no file 'file-x'"):
        queue.submit(
            workspace,
            method="supervised",
            base_model="base",
            training_files=[{"file_id": "file-x"}],
        )
    with pytest.raises(InputError, match="method.type"):
        queue.submit(workspace, method="magic", base_model="base", training_files=[])


@stage(
    "toy.sft_stopped_once",
    params=FakeSftParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def sft_stopped_once(ctx, params):
    """Its first attempt is stopped the way SIGTERM stops a worker (forgeml's handler)."""
    if ctx.attempt == 1:
        raise SystemExit(143)
    return fake_sft(ctx, params)


def test_a_stopped_worker_puts_its_job_back_and_the_next_one_resumes_it(
    workspace, base, monkeypatch
):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "supervised", "toy.sft_stopped_once")
    file_id = _upload(workspace, CHAT)
    job = queue.submit(
        workspace, method="supervised", base_model="base", training_files=[{"file_id": file_id}]
    )
    with pytest.raises(SystemExit):
        worker.work_once(workspace)
    assert queue.get_job(workspace, job.id).status == "queued"
    done = worker.work_once(workspace)
    assert done.id == job.id and done.status == "succeeded", done.error
    with workspace.registry.session() as session:
        assert session.get(Run, done.run_id).attempt == 2  # the same run, taken up again
