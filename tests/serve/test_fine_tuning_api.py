"""/v1/files and /v1/fine_tuning/jobs over real HTTP, with the openai and mistralai clients.

One server for the module, with one job worker subprocess: a real `train.sft` job on
the tiny model runs end to end, then its model answers a chat completion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from serving_fixtures import MODEL_NAME, ServerThread, register_tiny_model

from forgeml.core.schema import Deployment, Run
from forgeml.core.workspace import Workspace
from forgeml.jobs import queue
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key

CHATS = [
    [("user", "Where is my parcel?"), ("assistant", "It ships today.")],
    [("user", "Refund me"), ("assistant", "Your refund is on its way.")],
    [("user", "Opening hours?"), ("assistant", "Nine to five.")],
    [("user", "Thanks!"), ("assistant", "You are welcome.")],
]
TRAINING = "".join(
    json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) + "\n" for chat in CHATS
).encode()
# Small and quick: 4 conversations in batches of 2 for one epoch is 2 optimizer steps.
TINY = {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 2}


@dataclass
class FineTuningServer:
    url: str
    workspace: Workspace
    admin_key: str
    inference_key: str

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=key or self.admin_key, max_retries=0
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[FineTuningServer]:
    workspace = Workspace.init(tmp_path_factory.mktemp("fine-tuning") / "ws")
    register_tiny_model(workspace)
    _, admin_key = create_key(workspace, "ops", "admin")
    _, inference_key = create_key(workspace, "app", "inference")
    settings = ServeSettings(
        key_cache_seconds=0.0,
        torch_threads=1,
        job_workers=1,
        max_on_demand_models=1,
        on_demand_models=["other-chat"],  # jobs' models are servable without being listed
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # the worker subprocess shares 2 cores with us
        with ServerThread(create_app(workspace, [MODEL_NAME], settings)) as url:
            yield FineTuningServer(url, workspace, admin_key, inference_key)
    workspace.close()


def wait_for(check, seconds: float = 150.0, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return result


def test_files_round_trip_and_a_bad_file_is_refused_with_its_line(server):
    client = server.openai()
    uploaded = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert uploaded.bytes == len(TRAINING) and uploaded.purpose == "fine-tune"
    assert uploaded.status == "processed"
    FileObject.model_validate(uploaded.to_dict())  # the client does not check; pydantic does
    assert client.files.retrieve(uploaded.id).filename == "train.jsonl"
    assert uploaded.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.content(uploaded.id).content == TRAINING

    bad = TRAINING + b'{"messages": [{"role": "bot", "content": "hi"}]}\n'
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert "bad.jsonl:5" in refused.value.message and "role" in refused.value.message
    assert refused.value.body["param"] == "file"

    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_files_and_jobs_need_an_admin_key(server):
    for path in ("/v1/files", "/v1/fine_tuning/jobs"):
        assert httpx.get(server.url + path).status_code == 401
    inference = server.openai(server.inference_key)
    with pytest.raises(openai.PermissionDeniedError):
        inference.files.list()
    with pytest.raises(openai.PermissionDeniedError):
        inference.fine_tuning.jobs.list()


def test_a_bad_job_is_refused_before_it_is_queued(server):
    client = server.openai()
    file_id = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as no_file:
        client.fine_tuning.jobs.create(model=MODEL_NAME, training_file="file-nope")
    assert no_file.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError, match="trains on preference records"):
        client.fine_tuning.jobs.create(
            model=MODEL_NAME,
            training_file=file_id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    with pytest.raises(openai.BadRequestError) as bad_epochs:
        client.fine_tuning.jobs.create(
            model=MODEL_NAME,
            training_file=file_id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -1}}},
        )
    assert bad_epochs.value.body["param"] == "hyperparameters.n_epochs"
    with pytest.raises(openai.NotFoundError) as no_model:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=file_id)
    assert no_model.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad_tracker:
        client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=file_id,
                                       integrations=[{"type": "neptune"}])  # fmt: skip
    assert bad_tracker.value.body["param"] == "integrations.0.type"
    with pytest.raises(openai.BadRequestError) as no_project:
        client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=file_id,
                                       integrations=[{"type": "wandb", "wandb": {"dir": "/etc"}}])  # fmt: skip
    assert "unknown field(s) dir" in no_project.value.body["message"]
    assert client.fine_tuning.jobs.list().data == []


def test_mistral_client_uploads_and_a_held_job_starts_and_cancels(server):
    from mistralai.client import Mistral
    from mistralai.client._version import __user_agent__

    with Mistral(api_key=server.admin_key, server_url=server.url) as mistral:
        uploaded = mistral.files.upload(
            file={"file_name": "train.jsonl", "content": TRAINING}, purpose="fine-tune"
        )
        assert uploaded.size_bytes == len(TRAINING) and uploaded.sample_type == "instruct"
        assert uploaded.num_lines == len(CHATS)
        assert mistral.files.retrieve(file_id=uploaded.id).deleted is False
        listed = mistral.files.list(page=0, page_size=10)
        assert uploaded.id in [f.id for f in listed.data] and listed.total >= 1
        assert mistral.files.download(file_id=uploaded.id).read() == TRAINING

    # mistralai 3.x dropped `fine_tuning.jobs`; older SDKs and curl send this wire format.
    jobs = httpx.Client(
        base_url=server.url + "/v1/fine_tuning",
        headers={"Authorization": f"Bearer {server.admin_key}", "User-Agent": __user_agent__},
        timeout=30,
    )
    created = jobs.post(
        "/jobs",
        json={
            "model": MODEL_NAME,
            "training_files": [{"file_id": uploaded.id, "weight": 1}],
            "hyperparameters": {"training_steps": 1, "learning_rate": 0.0001},
            "auto_start": False,
            "suffix": "mistral",
        },
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["status"] == "VALIDATED" and job["auto_start"] is False
    assert job["object"] == "job" and job["job_type"] == "completion"
    assert job["training_files"] == [uploaded.id]
    assert job["hyperparameters"]["training_steps"] == 1
    plan = job["metadata"]  # Mistral's estimate for a VALIDATED job, before any compute
    assert plan["training_steps"] == 1 and plan["hardware"] == "cpu-2"
    assert plan["train_tokens"] > 0 and plan["expected_duration_seconds"] >= 0
    listed = jobs.get("/jobs", params={"page": 0, "page_size": 10}).json()
    assert listed["total"] >= 1 and job["id"] in [j["id"] for j in listed["data"]]

    started = jobs.post(f"/jobs/{job['id']}/start").json()
    assert started["status"] == "QUEUED"
    assert [e["data"]["status"] for e in started["events"]] == ["VALIDATED"]
    cancelled = jobs.post(f"/jobs/{job['id']}/cancel").json()
    # The worker needs seconds to boot, so the job is almost surely still queued.
    assert cancelled["status"] in ("CANCELLED", "CANCELLATION_REQUESTED")
    wait_for(lambda: jobs.get(f"/jobs/{job['id']}").json()["status"] == "CANCELLED", 60)
    # The openai client gets OpenAI's shape of the same job.
    seen = server.openai().fine_tuning.jobs.retrieve(job["id"])
    assert seen.status == "cancelled" and seen.training_file == uploaded.id


def test_supervised_job_trains_a_model_that_answers_at_once(server):
    client = server.openai()
    file_id = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=MODEL_NAME,
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": TINY}},
        suffix="helpdesk",
        seed=7,
        integrations=[
            {"type": "wandb", "wandb": {"project": "helpdesk", "tags": ["nightly"]}},
            {"type": "mlflow", "mlflow": {"experiment": "helpdesk"}},  # forgeml's addition
        ],
    )
    assert job.status == "queued" and job.model == MODEL_NAME and job.seed == 7
    assert job.integrations[0].wandb.project == "helpdesk"
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 2
    assert job.method.type == "supervised"

    # The one worker trains `job` first (oldest first), so this one is still queued.
    waiting = client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=file_id)
    assert waiting.hyperparameters.n_epochs == waiting.hyperparameters.batch_size == "auto"
    assert client.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(waiting.id)

    def finished():
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    done = finished() or wait_for(finished)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith(f"ft-{MODEL_NAME}-helpdesk-")
    assert done.finished_at >= done.created_at and done.trained_tokens > 0
    FineTuningJob.model_validate(done.to_dict())  # every field OpenAI requires, well typed
    with server.workspace.registry.session() as session:
        trained_with = session.get(Run, queue.get_job(server.workspace, job.id).run_id).params
    assert trained_with["learning_rate_multiplier"] == 2
    model_dir = (
        server.workspace.root / server.workspace.registry.resolve(done.fine_tuned_model).path
    )
    resolved = json.loads((model_dir / "training.json").read_text())["params"]
    assert resolved["learning_rate"] == pytest.approx(2e-3)  # 2 x what a tiny model gets
    assert client.fine_tuning.jobs.retrieve(waiting.id).status == "cancelled"
    _assert_tracked(server.workspace.root / "tracking", job.id)

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "The job has successfully completed"  # newest first
    assert events[-1].message == "Created fine-tuning job"
    assert any(e.type == "metrics" and e.data["step"] >= 1 for e in events)
    first_page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert [e.id for e in first_page.data] == [e.id for e in events[:2]] and first_page.has_more
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.fine_tuned_model_checkpoint == done.fine_tuned_model
    assert checkpoint.step_number == 2 and checkpoint.metrics.train_loss > 0
    FineTuningJobCheckpoint.model_validate(checkpoint.to_dict())
    FineTuningJobEvent.model_validate(events[0].to_dict())

    # The new model answers through the inference key, loaded on demand.
    chat = server.openai(server.inference_key).chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert chat.model == done.fine_tuned_model and chat.choices[0].finish_reason
    models = [m.id for m in server.openai(server.inference_key).models.list()]
    assert models == [MODEL_NAME, done.fine_tuned_model]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1).data] == [waiting.id]


def _assert_tracked(tracking: Path, job_id: str) -> None:
    """The job's training metrics reached its offline W&B run and its MLflow run, both
    named after the job."""
    from mlflow import MlflowClient

    import wandb_log

    (log,) = tracking.glob("wandb/offline-run-*/*.wandb")
    run = wandb_log.run(log)
    assert run.display_name == job_id and run.project == "helpdesk"
    assert list(run.tags) == ["nightly", f"forgeml/{job_id}", "forgeml/train.sft"]
    assert any("loss" in row for row in wandb_log.history(log))
    client = MlflowClient(tracking_uri=f"sqlite:///{tracking / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("helpdesk")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_name == job_id and f"forgeml/{job_id}" in tracked.data.tags
    assert client.get_metric_history(tracked.info.run_id, "loss")


def _assert_one_tracker_run_across_the_pause(tracking: Path) -> None:
    """The resumed run went on logging to the MLflow run it started, not a new one."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracking / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("paused").experiment_id])
    steps = [m.step for m in client.get_metric_history(tracked.info.run_id, "loss")]
    assert tracked.info.status == "FINISHED" and steps[-1] == 800
    assert len(steps) >= 40 and steps == sorted(set(steps))  # each step once, none repeated


def test_a_running_job_pauses_after_a_checkpoint_and_resumes_from_it(server):
    client = server.openai()
    file_id = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune").id
    # 800 steps of ~20 ms: the run sees the pause within its 2 s cancel poll well before
    # it ends (a job that ends first is simply succeeded).
    many_steps = TINY | {"n_epochs": 400}
    job = client.fine_tuning.jobs.create(
        model=MODEL_NAME,
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": many_steps}},
        seed=11,
        integrations=[{"type": "mlflow", "mlflow": {"experiment": "paused"}}],
    )

    def training():
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        return any(e.type == "metrics" for e in events)

    wait_for(training)
    assert client.fine_tuning.jobs.pause(job.id).status in ("running", "paused")

    def paused_job():
        current = client.fine_tuning.jobs.retrieve(job.id)
        assert current.status in ("running", "paused"), "it ended before it stopped"
        return current if current.status == "paused" else None

    paused = wait_for(paused_job)
    stopped = queue.get_job(server.workspace, job.id)
    with server.workspace.registry.session() as session:
        run = session.get(Run, stopped.run_id)
        assert run.status == "cancelled" and run.attempt == 1
    assert paused.finished_at is None
    assert client.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    with pytest.raises(openai.BadRequestError, match="only a paused job can be resumed"):
        client.fine_tuning.jobs.resume(job.id)

    def finished():
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    done = wait_for(finished, seconds=300)
    assert done.status == "succeeded", done.error
    with server.workspace.registry.session() as session:
        run = session.get(Run, queue.get_job(server.workspace, job.id).run_id)
        assert run.attempt == 2 and run.status == "succeeded"  # the same run, resumed
    _assert_one_tracker_run_across_the_pause(server.workspace.root / "tracking")
    # The run kept checkpoints at 750 and 800: the final model, and one made of step 750.
    final, earlier = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert (final.step_number, earlier.step_number) == (800, 750)
    assert final.fine_tuned_model_checkpoint == done.fine_tuned_model
    assert earlier.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}-step-750"
    assert earlier.metrics.train_loss > 0
    FineTuningJobCheckpoint.model_validate(earlier.to_dict())
    # Servable by that name, through the inference key...
    chat = server.openai(server.inference_key).chat.completions.create(
        model=earlier.fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
    )
    assert chat.model == earlier.fine_tuned_model_checkpoint
    # ...and promotable like any model, with its lineage back to the job's training file.
    promoted = subprocess.run(
        [sys.executable, "-m", "forgeml", "--workspace", str(server.workspace.root), "models",
         "promote", earlier.fine_tuned_model_checkpoint, "--alias", "candidate", "--force",
         "--reason", "less over-fitted"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    resolved = server.workspace.registry.resolve(f"{earlier.fine_tuned_model_checkpoint}@candidate")
    assert resolved.kind == "model"
    lineage = subprocess.run(
        [sys.executable, "-m", "forgeml", "--workspace", str(server.workspace.root), "--json",
         "lineage", earlier.fine_tuned_model_checkpoint],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert f"{job.id}-training" in lineage.stdout and "train.from_checkpoint" in lineage.stdout


def test_on_demand_models_load_once_and_the_least_recently_used_is_unloaded(server):
    register_tiny_model(server.workspace, "other-chat", seed=1)
    client = server.openai(server.inference_key)
    before = {m.id for m in client.models.list()}
    answers = []

    def ask() -> None:
        answers.append(
            client.chat.completions.create(
                model="other-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            ).model
        )

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(60)
    assert answers == ["other-chat", "other-chat"]
    after = [m.id for m in client.models.list()]
    assert after == [MODEL_NAME, "other-chat"]  # max_on_demand_models=1: the other went
    with server.workspace.registry.session() as session:
        rows = [row for row in session.query(Deployment) if row.config.get("on_demand")]
    on_demand = [(row.model_ref, row.status) for row in rows]
    assert on_demand.count(("other-chat", "running")) == 1  # loaded once for two requests
    for unloaded in before - {MODEL_NAME}:  # the fine-tuned model, if the test before ran
        assert (unloaded, "stopped") in on_demand


def test_a_mistral_classifier_job_trains_a_model_that_classifies_at_once(server):
    labelled = "".join(
        json.dumps({"text": text, "labels": {"team": team}}) + "\n"
        for text, team in [("Where is my parcel?", "shipping"), ("Refund me", "billing"),
                           ("The parcel is late", "shipping"), ("Wrong invoice", "billing")]
    ).encode()  # fmt: skip
    admin = httpx.Client(
        base_url=server.url + "/v1",
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=30,
    )
    uploaded = admin.post(
        "/files", files={"file": ("labels.jsonl", labelled)}, data={"purpose": "fine-tune"}
    ).json()
    chats = admin.post(
        "/files", files={"file": ("chats.jsonl", TRAINING)}, data={"purpose": "fine-tune"}
    ).json()
    body = {"model": MODEL_NAME, "job_type": "classifier", "hyperparameters": {"training_steps": 2}}
    wrong = admin.post(
        "/fine_tuning/jobs", json={**body, "training_files": [{"file_id": chats["id"]}]}
    )
    assert wrong.status_code == 400 and "trains on classification records" in wrong.text
    created = admin.post(
        "/fine_tuning/jobs", json={**body, "training_files": [{"file_id": uploaded["id"]}]}
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["job_type"] == "classifier"
    done = wait_for(
        lambda: (
            (j := admin.get(f"/fine_tuning/jobs/{job['id']}").json())["status"]
            in ("SUCCESS", "FAILED")
            and j
        )
    )
    assert done["status"] == "SUCCESS", done
    answer = httpx.post(
        server.url + "/v1/classifications",
        headers={"Authorization": f"Bearer {server.inference_key}"},
        json={"model": done["fine_tuned_model"], "input": ["Where is my parcel?"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["results"][0]["team"]["scores"]) == {"billing", "shipping"}
