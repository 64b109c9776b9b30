"""Experiment trackers as a user asks for them: `--report-to wandb:P --report-to mlflow:E`
on the command line writes an offline W&B run and a local MLflow run holding the
training metrics, each pointing back to the forgeml run; nothing needs a network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import build_base, chat_lines, forgeml, register_model, write_jsonl

import wandb_log
from forgeml.core.workspace import Workspace

TRAIN = ["--max-steps", "4", "--batch-size", "4", "--seq-len", "64", "--no-collapse-check"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trackers")
    ws = Workspace.init(root / "ws")
    register_model(ws, build_base(root / "base"))
    ws.close()
    forgeml(root / "ws", "data", "ingest", str(write_jsonl(root / "chat.jsonl", chat_lines())),
            "--name", "chat")  # fmt: skip
    return root / "ws"


def mlflow_runs(workspace: Path, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'tracking' / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client, client.search_runs([found.experiment_id])


def wandb_runs(workspace: Path) -> list[Path]:
    return sorted((workspace / "tracking" / "wandb").glob("offline-run-*"))


def test_training_metrics_reach_offline_wandb_and_local_mlflow(workspace):
    result = forgeml(workspace, "--json", "train", "sft", "--model", "base", "--data", "chat",
                     "--lr", "1e-3", "--name", "tracked", *TRAIN, "--report-to", "wandb:support",
                     "--report-to", "mlflow:support")  # fmt: skip
    run_id = json.loads(result.stdout)["run_id"]
    client, (run,) = mlflow_runs(workspace, "support")
    assert run.data.tags["forgeml_run_id"] == run_id and run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.001" and run.data.params["max_steps"] == "4"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert losses and all(m.step >= 1 for m in losses) and losses[-1].value > 0
    (offline,) = wandb_runs(workspace)
    (log,) = offline.glob("*.wandb")
    rows = wandb_log.history(log)
    assert [row["_step"] for row in rows if "loss" in row] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] > 0
    config = wandb_log.config(log)
    assert config["forgeml_run_id"] == run_id and config["max_steps"] == 4


def test_an_unknown_tracker_is_refused_before_training(workspace):
    refused = forgeml(workspace, "train", "sft", "--model", "base", "--data", "chat", *TRAIN,
                      "--report-to", "neptune:x", ok=False)  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "unknown tracker 'neptune'" in refused.stderr and "wandb:PROJECT" in refused.stderr
    no_project = forgeml(workspace, "train", "sft", "--model", "base", "--data", "chat", *TRAIN,
                         "--report-to", "wandb", ok=False)  # fmt: skip
    assert no_project.returncode == 2 and "needs a project" in no_project.stderr


def test_a_missing_tracker_library_is_named(monkeypatch):
    import importlib.util

    from forgeml.core.errors import InputError
    from forgeml.train.integrations import check_installed

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a)
    )
    with pytest.raises(InputError, match="needs the wandb package") as caught:
        check_installed("wandb")
    assert caught.value.hint == "pip install wandb"


def test_a_recipe_step_reports_to_a_tracker(workspace, tmp_path):
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(
        "name: tracked\n"
        "steps:\n"
        "  - name: sft\n"
        "    uses: train.sft\n"
        "    inputs: {model: base, dataset: chat}\n"
        "    with:\n"
        "      max_steps: 2\n"
        "      batch_size: 4\n"
        "      seq_len: 64\n"
        "      collapse_check: false\n"
        "      integrations: [{type: mlflow, experiment: from-a-recipe}]\n"
    )
    forgeml(workspace, "run", str(recipe))
    client, (run,) = mlflow_runs(workspace, "from-a-recipe")
    assert client.get_metric_history(run.info.run_id, "train_loss")
    bad = recipe.read_text().replace("type: mlflow", "type: tensorboard")
    recipe.write_text(bad)
    refused = forgeml(workspace, "run", str(recipe), ok=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "integrations" in refused.stderr and "tensorboard" in refused.stderr
