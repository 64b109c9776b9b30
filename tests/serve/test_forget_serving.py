"""A running server stops serving a model within seconds of `forgeml data forget`.

A real uvicorn server holds a model fine-tuned on a helpdesk dataset; the deletion
request goes through the real CLI in a subprocess; then, without a restart, the model
leaves /v1/models, chat requests to it (and to a sibling not yet loaded) get 409 naming
the request, fine-tuning jobs cannot start from it, and a clean model keeps serving.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import openai
import pytest
from serving_fixtures import ServerThread, register_tiny_model
from sqlalchemy import select

from forgeml.core.context import StageContext
from forgeml.core.registry import ForgottenError
from forgeml.core.runs import run_stage
from forgeml.core.schema import Deployment
from forgeml.core.stages import StageParams, stage
from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key

REASON = "GDPR #42"
FORGEML = [sys.executable, "-m", "forgeml"]


class TuneParams(StageParams):
    name: str
    note: str = ""


@stage(
    "forgettest.tune",
    params=TuneParams,
    inputs={"base": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def tune(ctx: StageContext, params: TuneParams):
    """'Fine-tune': the base's files plus a note, so lineage runs through the dataset."""
    writer = ctx.new_artifact("model")
    shutil.copytree(ctx.input_path("base"), writer.path, dirs_exist_ok=True)
    (writer.path / "manifest.json").unlink()
    (writer.path / "tuned_on.txt").write_text(ctx.inputs["dataset"].sha256 + params.note)
    model = ctx.commit(writer)
    ctx.name(model, params.name)
    return {"model": model}


@pytest.fixture
def helpdesk(tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    base = register_tiny_model(workspace, "tiny-base")
    tickets = run_stage(workspace, "toy.write", {"text": "Jane's tickets"}).outputs["dataset"]
    manual = run_stage(workspace, "toy.write", {"text": "public manual"}).outputs["dataset"]
    for name, dataset in (("helpdesk", tickets), ("helpdesk-2", tickets), ("manual", manual)):
        inputs = {"base": base, "dataset": dataset}
        run_stage(workspace, "forgettest.tune", {"name": name, "note": name}, inputs)
    yield workspace, tickets
    workspace.close()


def served_ids(url: str, key: str) -> set[str]:
    response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    return {model["id"] for model in response.json()["data"]}


@pytest.mark.slow
def test_a_forgotten_model_stops_serving_within_seconds(helpdesk):
    workspace, tickets = helpdesk
    _, key = create_key(workspace, "app", "inference")
    _, admin = create_key(workspace, "ops", "admin")
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1, max_on_demand_models=2)
    app = create_app(workspace, ["helpdesk", "manual"], settings)
    with ServerThread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        hi = [{"role": "user", "content": "hi"}]
        assert served_ids(url, key) == {"helpdesk", "manual"}
        client.chat.completions.create(model="helpdesk", messages=hi, max_tokens=2)

        forget = subprocess.run(
            [*FORGEML, "--workspace", str(workspace.root), "data", "forget", tickets.ref,
             "--reason", REASON],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert forget.returncode == 0, forget.stderr
        forgotten_at = time.monotonic()
        while "helpdesk" in served_ids(url, key):
            assert time.monotonic() - forgotten_at < 5, "still listed 5 s after the forget"
            time.sleep(0.1)
        withdrawn_after = time.monotonic() - forgotten_at
        assert withdrawn_after < 3
        with workspace.registry.session() as session:
            rows = session.scalars(select(Deployment).where(Deployment.stopped_at.is_(None)))
            assert {row.model_ref: row.status for row in rows} == {"manual": "running"}
            (withdrawn,) = session.scalars(
                select(Deployment).where(Deployment.model_ref == "helpdesk")
            )
            assert withdrawn.status == "withdrawn" and withdrawn.stopped_at is not None

        for model in ("helpdesk", "helpdesk-2"):  # held, and one a request would load
            with pytest.raises(openai.ConflictError, match=REASON):
                client.chat.completions.create(model=model, messages=hi, max_tokens=2)
        assert served_ids(url, key) == {"manual"}
        answer = client.chat.completions.create(model="manual", messages=hi, max_tokens=2)
        assert answer.choices[0].finish_reason in ("stop", "length")

        job = httpx.post(
            f"{url}/v1/fine_tuning/jobs",
            headers={"Authorization": f"Bearer {admin}"},
            json={"model": "helpdesk", "training_file": "file-none"},
        )
        assert job.status_code == 409 and REASON in job.json()["error"]["message"]

    with pytest.raises(ForgottenError, match=REASON):  # nor can a server start with it
        create_app(workspace, ["helpdesk"], settings)
