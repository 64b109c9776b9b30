"""A fine-tuning job across machines sharing a workspace through PostgreSQL and an S3
store: the API's machine takes the upload and has the base model; a worker on another
machine (its own folder, nothing shared but the database and the bucket) fetches both,
checked against their hashes, trains, and publishes the model for the first to serve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from finetune_fixtures import build_base, chat_lines, register_model

from forgeml.core.workspace import Workspace
from forgeml.jobs import files, queue
from s3_server import BUCKET, machine_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_a_worker_on_another_machine_runs_a_job_from_the_shared_store(
    tmp_path, s3_endpoint, bucket, postgres_url, monkeypatch
):
    env = machine_env(s3_endpoint, postgres_url)
    store = {"url": f"s3://{BUCKET}/team", "endpoint_url": s3_endpoint}
    api, worker = tmp_path / "api", tmp_path / "worker"
    for root in (api, worker):
        Workspace.init(root, database_url=postgres_url).close()
        settings = yaml.safe_load((root / "forgeml.yaml").read_text())
        (root / "forgeml.yaml").write_text(yaml.safe_dump({**settings, "artifact_store": store}))

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    workspace = Workspace.open(api)  # what the API server does on an upload and a job
    try:
        register_model(workspace, build_base(tmp_path / "base"), name="base")
        content = "".join(json.dumps(line) + "\n" for line in chat_lines(8)).encode()
        upload = files.store_file(workspace, "chats.jsonl", content, "fine-tune")
        job = queue.submit(workspace, method="supervised", base_model="base",
                           training_files=[{"file_id": upload.id}], suffix="shared",
                           hyperparameters={"training_steps": 2, "batch_size": 2})  # fmt: skip
    finally:
        workspace.close()
    assert bucket.exists(f"{BUCKET}/team/{upload.path}")
    assert not (worker / upload.path).exists() and not list((worker / "artifacts").glob("model/*"))

    command = [sys.executable, "-m", "forgeml", "--workspace", str(worker), "--json", "jobs",
               "worker", "--once"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"jobs_run": 1}
    assert (worker / upload.path).read_bytes() == (api / upload.path).read_bytes()

    listed = subprocess.run([sys.executable, "-m", "forgeml", "--workspace", str(api), "--json",
                             "jobs", "list"], capture_output=True, text=True, env=env)  # fmt: skip
    finished = next(j for j in json.loads(listed.stdout) if j["id"] == job.id)
    assert finished["status"] == "succeeded", finished
    # The model the worker made is in the store: the API's machine fetches it to serve it.
    shown = subprocess.run([sys.executable, "-m", "forgeml", "--workspace", str(api), "--json",
                            "artifacts", "verify", finished["fine_tuned_model"]],
                           capture_output=True, text=True, env=env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
