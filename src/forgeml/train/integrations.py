"""Training metrics to the experiment trackers a team already uses, without going online.

    forgeml train sft ... --report-to wandb:support-bot --report-to mlflow:support-bot
    integrations: [{type: wandb, project: support-bot}]          # a recipe step's params
    POST /v1/fine_tuning/jobs {"integrations": [{"type": "wandb", "wandb": {"project": ...}}]}

- Weights & Biases runs in offline mode: the run is written under `tracking/wandb/` in
  the workspace (or `dir`), and nothing leaves the machine until someone runs
  `wandb sync` there, towards a W&B server of the organisation's choosing.
- MLflow logs to a local SQLite tracking store, `tracking/mlflow.db` in the workspace
  (or `tracking_dir`); `mlflow ui --backend-store-uri sqlite:///...` shows it. MLflow's
  file store is in maintenance mode, and a tracking server would be a network call.

Each tracker gets the stage's parameters as its config, every logged training and
validation metric at its step, and the forgeml run id, so a tracker's run points back
to the registry's. A resumed forgeml run continues the same tracker run. The libraries
are optional: asking for one that is not installed is an error before training starts.

The specs live here (no torch import, for the command line); the trainer callbacks that
report in `integration_callbacks.py`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeml.core.errors import InputError

TRACKING_FOLDER = "tracking"
MAX_TAGS = 32
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._ /-]{0,127}$"


class WandbIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["wandb"]
    project: str = Field(pattern=_NAME, description="The W&B project.")
    name: str | None = Field(default=None, max_length=128, description="The W&B run's name.")
    entity: str | None = Field(default=None, pattern=_NAME, description="The W&B entity.")
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default=[], max_length=MAX_TAGS)
    dir: Path | None = Field(
        default=None, description="Where the offline run is written; default tracking/."
    )


class MlflowIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mlflow"]
    experiment: str = Field(default="forgeml", pattern=_NAME, description="MLflow experiment.")
    run_name: str | None = Field(default=None, max_length=128, description="MLflow run name.")
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default=[], max_length=MAX_TAGS)
    tracking_dir: Path | None = Field(
        default=None, description="Folder of the SQLite tracking store; default tracking/."
    )


Integration = Annotated[WandbIntegration | MlflowIntegration, Field(discriminator="type")]
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def check_installed(kind: str) -> None:
    """An InputError when the tracker's library is missing (before any work starts)."""
    package = PACKAGES.get(kind)
    if package is None:
        raise InputError(
            f"unknown integration type {kind!r}", hint="use one of: " + ", ".join(PACKAGES)
        )
    if importlib.util.find_spec(package) is None:
        raise InputError(
            f"the {kind} integration needs the {package} package, which is not installed",
            hint=f"pip install {package}" + ("-skinny" if kind == "mlflow" else ""),
        )


def check_integrations(value: list[Any]) -> list[Any]:
    """A stage parameter validator: every asked-for tracker is installed."""
    for integration in value:
        try:
            check_installed(integration.type)
        except InputError as exc:
            raise ValueError(f"{exc.message} ({exc.hint})") from None
    return value


def parse_report_to(values: list[str]) -> list[dict[str, Any]]:
    """`--report-to wandb:PROJECT` / `--report-to mlflow[:EXPERIMENT]` as integrations."""
    out = []
    for value in values:
        kind, _, target = value.partition(":")
        if kind == "wandb":
            if not target:
                raise InputError(
                    "--report-to wandb needs a project", hint="--report-to wandb:PROJECT"
                )
            out.append({"type": "wandb", "project": target})
        elif kind == "mlflow":
            out.append({"type": "mlflow", **({"experiment": target} if target else {})})
        else:
            raise InputError(
                f"--report-to {value!r}: unknown tracker {kind!r}",
                hint="use wandb:PROJECT or mlflow[:EXPERIMENT]",
            )
    return out
