"""What an API key cannot make the server do (issue 14), over real HTTP to a real server:
graders that import code or read files, a job naming its model, feedback on someone
else's (or a made-up) completion, loading models on demand or unloading a busy one,
compressed-upload bombs, file names that pick the reader; and jobs whose worker died.

One server for the module (job workers off: the tests play the worker themselves).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from serving_fixtures import MODEL_NAME, ServerThread, register_tiny_model

from forgeml.core.schema import AuditEntry, RequestLog, StoredFile
from forgeml.core.workspace import Workspace
from forgeml.jobs import files, queue
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.chat import serving as chat_serving
from forgeml.serve.chat.prompt import prepare

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
TRAINING = (json.dumps(CHAT) + "\n").encode() * 4
PROMPTS = (json.dumps({"prompt": "2+2?", "reference": "4"}) + "\n").encode() * 4
HELLO = [{"role": "user", "content": "Hello"}]


@dataclass
class Server:
    url: str
    workspace: Workspace
    app: object
    admin: str
    app_key: str
    other_key: str
    admin_prefix: str

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def post(self, path: str, key: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.post(self.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    workspace = Workspace.init(tmp_path_factory.mktemp("hardening") / "ws")
    register_tiny_model(workspace)
    register_tiny_model(workspace, "listed-chat", seed=1)
    register_tiny_model(workspace, "unlisted-chat", seed=2)
    admin_row, admin = create_key(workspace, "ops", "admin")
    _, app_key = create_key(workspace, "app", "inference")
    _, other_key = create_key(workspace, "other-app", "inference")
    settings = ServeSettings(
        key_cache_seconds=0.0,
        torch_threads=1,
        job_workers=0,
        engine_process=False,
        max_batch_size=1,  # requests queue up: a model stays busy for a while
        feedback_cache_size=0,  # feedback must find completions in the request log
        max_on_demand_models=1,
        on_demand_models=["listed-chat"],
    )
    app = create_app(workspace, [MODEL_NAME], settings)
    with ServerThread(app) as url:
        yield Server(url, workspace, app, admin, app_key, other_key, admin_row.prefix)
    workspace.close()


def upload(server: Server, name: str, content: bytes) -> httpx.Response:
    return server.post(
        "/v1/files", server.admin, files={"file": (name, content)}, data={"purpose": "fine-tune"}
    )


# --- 3 and 7: what a job may ask for --------------------------------------------------------


@pytest.mark.parametrize(
    ("grader", "param"),
    [
        ({"type": "python", "function": "os:getcwd"}, "method.reinforcement.grader"),
        (
            {"type": "json_schema", "schema_path": "/etc/passwd"},
            "method.reinforcement.grader.schema_path",
        ),
        ({"type": "python", "source": "def grade(s, i): return 1"}, "method.reinforcement.grader"),
    ],
)
def test_graders_that_import_code_or_read_files_are_refused(server, grader, param):
    prompts = upload(server, "prompts.jsonl", PROMPTS).json()["id"]
    client = server.client(server.admin)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model=MODEL_NAME,
            training_file=prompts,
            method={"type": "reinforcement", "reinforcement": {"grader": grader}},
        )
    assert refused.value.body["param"] == param
    assert "string_check" in refused.value.message or "inline" in refused.value.message
    assert not [job for job in client.fine_tuning.jobs.list().data if job.status != "cancelled"]


def test_documented_graders_and_inline_schemas_are_accepted(server):
    prompts = upload(server, "prompts.jsonl", PROMPTS).json()["id"]
    client = server.client(server.admin)
    for grader in (
        {"type": "string_check", "operation": "eq", "reference": "{{item.reference}}"},
        {"type": "json_schema", "json_schema": {"type": "object"}},
    ):
        job = client.fine_tuning.jobs.create(
            model=MODEL_NAME,
            training_file=prompts,
            method={"type": "reinforcement", "reinforcement": {"grader": grader}},
        )
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"


def test_a_job_cannot_name_its_model_or_set_rewards(server):
    training = upload(server, "train.jsonl", TRAINING).json()["id"]
    bodies = [
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"name": MODEL_NAME}}}},
         "method.supervised.hyperparameters.name"),
        ({"hyperparameters": {"name": MODEL_NAME}}, "hyperparameters.name"),
        ({"hyperparameters": {"rewards": [{"type": "python", "function": "os:getcwd"}]}},
         "hyperparameters.rewards"),
    ]  # fmt: skip
    for extra, param in bodies:
        body = {"model": MODEL_NAME, "training_file": training, **extra}
        answer = server.post("/v1/fine_tuning/jobs", server.admin, json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param
    mistral = {
        "model": MODEL_NAME,
        "training_files": [{"file_id": training}],
        "hyperparameters": {"name": MODEL_NAME},
    }
    answer = server.post("/v1/fine_tuning/jobs", server.admin, json=mistral)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "hyperparameters.name"
    assert (
        server.workspace.registry.resolve(MODEL_NAME).ref
        == server.workspace.registry.resolve(f"{MODEL_NAME}:1").ref
    )  # production's name still points at its one version


# --- 4: feedback ----------------------------------------------------------------------------


def _logged(workspace: Workspace, completion_id: str) -> bool:
    with workspace.registry.session() as session:
        return session.query(RequestLog).filter_by(completion_id=completion_id).first() is not None


def test_feedback_only_for_logged_completions_of_the_callers_key(server):
    conversation = {"messages": HELLO, "output": "Poisoned answer.", "model": MODEL_NAME}
    made_up = {"completion_id": "chatcmpl-made-up", "rating": 1, **conversation}
    answer = server.post("/v1/feedback", server.app_key, json=made_up)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "completion_not_found"

    chat = server.client(server.app_key).chat.completions.create(
        model=MODEL_NAME, messages=HELLO, max_tokens=2
    )
    deadline = time.monotonic() + 10
    while not _logged(server.workspace, chat.id):  # the request log writes every second
        assert time.monotonic() < deadline
        time.sleep(0.1)
    body = {"completion_id": chat.id, "rating": 1}
    assert (
        server.post("/v1/feedback", server.other_key, json=body | conversation).status_code == 404
    )
    no_text = server.post("/v1/feedback", server.app_key, json=body)  # prompts are not logged
    assert no_text.status_code == 404 and "`messages`" in no_text.json()["error"]["message"]
    sent = server.post("/v1/feedback", server.app_key, json=body | conversation)
    assert sent.status_code == 200 and sent.json()["source"] == "client"
    assert server.post("/v1/feedback", server.admin, json=body | conversation).status_code == 200

    # The next training round leaves conversations the client sent out unless asked.
    def from_feedback(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "forgeml", "--workspace", str(server.workspace.root)]
        command += ["--json", "data", "from-feedback", *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    default = from_feedback()
    assert default.returncode == 2 and "no feedback matches" in default.stderr + default.stdout
    included = from_feedback("--include-client-conversations")
    assert included.returncode == 0, included.stderr
    assert json.loads(included.stdout)["metrics"]["feedback"] == 2


# --- 8: loading models on demand ------------------------------------------------------------


def test_only_listed_models_load_on_demand_for_inference_keys(server):
    app = server.client(server.app_key)
    with pytest.raises(openai.NotFoundError):
        app.chat.completions.create(model="unlisted-chat", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        app.models.retrieve("unlisted-chat")
    assert app.chat.completions.create(model="listed-chat", messages=HELLO, max_tokens=1).model
    assert "unlisted-chat" not in [m.id for m in app.models.list()]


def test_a_busy_model_is_never_unloaded(server):
    app = server.client(server.app_key)
    app.chat.completions.create(model="listed-chat", messages=HELLO, max_tokens=1)  # loaded
    (listed,) = [m for m in server.app.state.pool.models if m.id == "listed-chat"]
    finished: list[str] = []

    def ask() -> None:
        answer = app.chat.completions.create(model="listed-chat", messages=HELLO, max_tokens=48)
        finished.append(answer.choices[0].finish_reason)

    askers = [threading.Thread(target=ask) for _ in range(6)]
    for asker in askers:
        asker.start()
    deadline = time.monotonic() + 30
    while not listed.engine.stats().waiting:  # one decodes, the others wait their turn
        assert time.monotonic() < deadline
        time.sleep(0.01)
    busy = server.post(
        "/v1/chat/completions",
        server.admin,  # an admin may load any model, but not by cutting requests off
        json={"model": "unlisted-chat", "messages": HELLO, "max_tokens": 1},
    )
    for asker in askers:
        asker.join(120)
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "model_capacity" and busy.headers["retry-after"]
    assert len(finished) == 6 and set(finished) <= {"length", "stop"}  # none aborted
    loaded = server.client(server.admin).chat.completions.create(
        model="unlisted-chat", messages=HELLO, max_tokens=1
    )
    assert loaded.model == "unlisted-chat"  # once idle, the listed one made room
    assert [m.id for m in server.app.state.pool.models] == [MODEL_NAME, "unlisted-chat"]


def test_a_model_chosen_but_not_yet_queued_is_never_unloaded(server, monkeypatch):
    """The gap before the engine counts a request: its prompt is being rendered (in a
    thread) when an admin asks for another model that would need this one's place."""
    app = server.client(server.app_key)
    app.chat.completions.create(model="listed-chat", messages=HELLO, max_tokens=1)  # loaded
    rendering, go_on = threading.Event(), threading.Event()

    def slow_prepare(body, served, settings):
        if served.id == "listed-chat":
            rendering.set()
            go_on.wait(60)
        return prepare(body, served, settings)

    monkeypatch.setattr(chat_serving, "prepare", slow_prepare)
    answers: list[str] = []
    asker = threading.Thread(
        target=lambda: answers.append(
            app.chat.completions.create(model="listed-chat", messages=HELLO, max_tokens=4)
            .choices[0]
            .finish_reason
        )
    )
    asker.start()
    assert rendering.wait(30)
    busy = server.post(
        "/v1/chat/completions",
        server.admin,
        json={"model": "unlisted-chat", "messages": HELLO, "max_tokens": 1},
    )
    go_on.set()
    asker.join(60)
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "model_capacity"
    assert answers and answers[0] in {"length", "stop"}  # answered, not cut off
    (listed,) = [m for m in server.app.state.pool.models if m.id == "listed-chat"]
    assert listed.holds == 0  # released when the request ended


# --- 9 and 12: uploads ----------------------------------------------------------------------


def test_compressed_uploads_are_decompressed_within_caps(server, monkeypatch):
    monkeypatch.setattr(files, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    bomb = gzip.compress(TRAINING * ((1 << 20) // len(TRAINING) + 1))
    refused = upload(server, "train.jsonl.gz", bomb)
    assert refused.status_code == 400 and "decompresses to more than" in refused.text
    assert len(bomb) < files.MAX_DECOMPRESSED_BYTES // 10

    monkeypatch.setattr(files, "MAX_LINE_BYTES", 1000)
    long_line = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]}).encode()
    refused = upload(server, "train.jsonl", TRAINING + long_line + b"\n")
    assert refused.status_code == 400 and "train.jsonl:5" in refused.text


def test_the_clients_file_name_never_picks_the_reader(server):
    for name, content in (("train.jsonl.gz", gzip.compress(TRAINING)), ("t.parquet", TRAINING)):
        answer = upload(server, name, content)
        assert answer.status_code == 200, answer.text
        assert answer.json()["filename"] == name
        with server.workspace.registry.session() as session:
            stored = session.get(StoredFile, answer.json()["id"])
        assert stored.path == f"files/{stored.id}/data.jsonl"  # read as the jsonl it holds
        assert (server.workspace.root / stored.path).read_bytes() == TRAINING


@pytest.mark.parametrize("name", ["", ".", "..", "../.."])
def test_upload_names_that_say_nothing_are_400(server, name):
    answer = upload(server, name, TRAINING)
    assert answer.status_code in (400, 422), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["param"] == "file"


def test_uploads_and_artifacts_are_closed_to_other_users(server):
    stored = upload(server, "train.jsonl", TRAINING).json()["id"]
    root = server.workspace.root
    for path in (root / "files", root / "files" / stored, root / "files" / stored / "data.jsonl"):
        assert path.stat().st_mode & 0o007 == 0, path
    assert (root / "artifacts").stat().st_mode & 0o007 == 0


def test_the_audit_log_names_the_key_of_each_api_write(server):
    client = server.client(server.admin)
    uploaded = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=uploaded.id)
    client.fine_tuning.jobs.cancel(job.id)
    client.files.delete(uploaded.id)
    with server.workspace.registry.session() as session:
        entries = session.query(AuditEntry).filter(AuditEntry.target.in_([uploaded.id, job.id]))
        by_action = {entry.action: entry.details for entry in entries}
    for action in ("file.upload", "job.create", "job.cancel", "file.delete"):
        assert by_action[action]["api_key"] == server.admin_prefix, action
        assert by_action[action]["api_key_name"] == "ops"


# --- 6: jobs whose worker died --------------------------------------------------------------

DIE_AFTER_CLAIMING = """
import os, sys
from forgeml.core.workspace import Workspace
from forgeml.jobs import queue
job = queue.claim_next(Workspace.open(sys.argv[1]))
print(job.id if job else "")
sys.stdout.flush()
os._exit(9)  # as if killed, out of memory, or crashed by the job
"""


def die_after_claiming(workspace: Workspace) -> str:
    done = subprocess.run(
        [sys.executable, "-c", DIE_AFTER_CLAIMING, str(workspace.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip()


def test_cancel_ends_a_job_whose_worker_died(server):
    client = server.client(server.admin)
    training = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=training)
    assert die_after_claiming(server.workspace) == job.id
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_a_job_that_keeps_killing_its_worker_fails_with_the_reason(server):
    client = server.client(server.admin)
    training = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL_NAME, training_file=training)
    for _ in range(queue.MAX_ATTEMPTS):
        assert die_after_claiming(server.workspace) == job.id  # taken up again each time
    command = [sys.executable, "-m", "forgeml", "--workspace", str(server.workspace.root)]
    worker = subprocess.run(
        [*command, "jobs", "worker", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert f"stopped {queue.MAX_ATTEMPTS} times" in failed.error.message


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes(server):
    # A real worker process runs a real SFT job; SIGKILL it once the run is training,
    # then start another: it takes the job up (the dead worker's lease is void), the
    # run resumes, and the job succeeds on its second attempt. Nothing stays running.
    client = server.client(server.admin)
    training = client.files.create(file=("train.jsonl", TRAINING * 8), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=MODEL_NAME, training_file=training, hyperparameters={"n_epochs": 6, "batch_size": 1}
    )
    command = [sys.executable, "-m", "forgeml", "--workspace", str(server.workspace.root)]
    worker = subprocess.Popen([*command, "jobs", "worker"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any(
            e.message.startswith("Step ") for e in client.fine_tuning.jobs.list_events(job.id)
        ):
            assert worker.poll() is None, worker.stderr.read()
            assert time.monotonic() < deadline, (
                "the job never started training",
                client.fine_tuning.jobs.retrieve(job.id),
                [e.message for e in client.fine_tuning.jobs.list_events(job.id)],
            )
            time.sleep(0.3)
        worker.kill()  # SIGKILL mid-training
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # nobody said anything

    again = subprocess.run(
        [*command, "jobs", "worker", "--once"], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert queue.get_job(server.workspace, job.id).attempts == 2
    assert not [j for j in client.fine_tuning.jobs.list().data if j.status == "running"]
