"""Drift thresholds: defaults here, `monitoring:` in forgeml.yaml, per model under `models:`.

    monitoring:
      alpha: 0.01
      models:
        support-bot: {min_psi: 0.3}     # this model tolerates more length drift

A model's thresholds are the workspace's, with the fields its entry names replaced.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgeml.core.errors import InputError

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace


class DriftThresholds(BaseModel):
    """When a drift signal counts as drifted (`forgeml monitor drift`, `report`, alerts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        0.01, gt=0, lt=1, description="Significance level, split over the signals (Bonferroni)."
    )
    min_psi: float = Field(
        0.2, gt=0, description="Smallest PSI of a numeric signal that counts as drift."
    )
    min_js: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Smallest Jensen-Shannon distance of a label signal that counts.",
    )
    min_auc: float = Field(
        0.75,
        gt=0.5,
        le=1,
        description="Smallest held-out AUC of the domain classifier (window vs training data "
        "sketches) that counts as a topic shift.",
    )
    min_requests: int = Field(
        30, ge=5, le=1_000_000, description="Answered requests a window needs to be tested."
    )


class MonitoringSettings(DriftThresholds):
    models: dict[str, DriftThresholds] = Field(
        default_factory=dict,
        description="Per model name: thresholds that differ from the workspace's.",
    )

    def for_model(self, model: str) -> DriftThresholds:
        name = re.split(r"[@:]", model, maxsplit=1)[0]
        override = self.models.get(model) or self.models.get(name)
        base = self.model_dump(exclude={"models"})
        if override is not None:
            base.update(override.model_dump(include=override.model_fields_set))
        return DriftThresholds(**base)


def monitoring_settings(workspace: Workspace) -> MonitoringSettings:
    try:
        return MonitoringSettings.model_validate(workspace.settings.get("monitoring") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("monitoring", *first["loc"]))
        raise InputError(first["msg"], path=workspace.config_path, field=where) from None
