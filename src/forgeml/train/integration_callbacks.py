"""Trainer callbacks that report to the trackers `integrations.py` describes."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from transformers import TrainerCallback

from forgeml.core.context import StageContext
from forgeml.train.integrations import TRACKING_FOLDER, MlflowIntegration, WandbIntegration


def callbacks(ctx: StageContext, params: BaseModel) -> list[TrainerCallback]:
    """One trainer callback per integration the stage's parameters ask for."""
    made: list[TrainerCallback] = []
    for integration in getattr(params, "integrations", []):
        root = ctx.workspace.root / TRACKING_FOLDER
        if isinstance(integration, WandbIntegration):
            made.append(WandbReporter(ctx, params, integration, integration.dir or root))
        else:
            made.append(MlflowReporter(ctx, params, integration, integration.tracking_dir or root))
    return made


def _numbers(logs: dict[str, Any] | None) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in (logs or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _config(ctx: StageContext, params: BaseModel) -> dict[str, Any]:
    config = params.model_dump(mode="json", exclude={"integrations"})
    return {**config, "forgeml_run_id": ctx.run_id, "forgeml_stage": ctx.stage_name}


class WandbReporter(TrainerCallback):
    """A W&B run in offline mode, its id derived from the forgeml run's (resume continues it)."""

    def __init__(self, ctx: StageContext, params: BaseModel, spec: WandbIntegration, root: Path):
        self.ctx, self.params, self.spec, self.root = ctx, params, spec, root
        self.run: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode="offline",
            dir=str(self.root),
            project=self.spec.project,
            entity=self.spec.entity,
            name=self.spec.name or self.ctx.run_id,
            id=re.sub(r"[^A-Za-z0-9]", "", self.ctx.run_id)[:64],
            resume="allow",
            tags=[*self.spec.tags, f"forgeml/{self.ctx.stage_name}"],
            config=_config(self.ctx, self.params),
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = _numbers(logs)
        if self.run is not None and numbers:
            self.run.log(numbers, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.finish()
            self.run = None


class MlflowReporter(TrainerCallback):
    """An MLflow run in a local SQLite store, found again by its forgeml run id on resume."""

    def __init__(self, ctx: StageContext, params: BaseModel, spec: MlflowIntegration, root: Path):
        self.ctx, self.params, self.spec, self.root = ctx, params, spec, root
        self.client: Any = None
        self.run_id: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from mlflow import MlflowClient

        self.root.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{(self.root / 'mlflow.db').resolve()}")
        experiment = self.client.get_experiment_by_name(self.spec.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(
                self.spec.experiment, artifact_location=str(self.root / "mlflow-artifacts")
            )
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.forgeml_run_id = '{self.ctx.run_id}'"
        )
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"forgeml_run_id": self.ctx.run_id, "forgeml_stage": self.ctx.stage_name}
        tags.update({tag: "" for tag in self.spec.tags})
        run = self.client.create_run(
            experiment_id, run_name=self.spec.run_name or self.ctx.run_id, tags=tags
        )
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        config = _config(self.ctx, self.params).items()
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in config])

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = _numbers(logs)
        if self.run_id is None or not numbers:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, state.global_step) for k, v in numbers.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)
            self.run_id = None
