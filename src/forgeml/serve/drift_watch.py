"""Drift alerts while serving: every `drift_check_seconds`, each served model's last
`drift_window_minutes` of traffic is tested as `forgeml monitor drift` tests it.

Each check sets `/metrics` gauges (`forgeml_drift_effect{model,signal}`, the effect size;
`forgeml_drift_alert{model}`, 1 while drifting). When a model starts drifting, the
registry's audit log gets a `monitor.drift_alert` entry naming the signals that moved,
and `drift_webhook_url`, if set, is posted the same alert as JSON. A model with too few
requests in the window, or with no training data to compare with, is skipped until it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from forgeml.core.errors import ForgeError
from forgeml.core.schema import utcnow
from forgeml.monitor.drift import drift

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace
    from forgeml.serve.metrics import ServerMetrics
    from forgeml.serve.served_models import ModelPool
    from forgeml.serve.settings import ServeSettings

log = logging.getLogger("forgeml.serve")


class DriftWatch:
    def __init__(
        self, workspace: Workspace, pool: ModelPool, settings: ServeSettings, metrics: ServerMetrics
    ) -> None:
        self.workspace, self.pool, self.settings, self.metrics = workspace, pool, settings, metrics
        self.drifting: dict[str, bool] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.settings.drift_check_seconds > 0:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drift_check_seconds)
            for served in list(self.pool.models):
                try:
                    await asyncio.to_thread(self.check, served.id)
                except Exception:  # a check must never take the server down
                    log.exception("drift check of %s failed", served.id)

    def check(self, model: str) -> dict[str, Any] | None:
        until = utcnow()
        since = until - timedelta(minutes=self.settings.drift_window_minutes)
        try:
            report = drift(self.workspace, model, since=since, until=until)
        except ForgeError as exc:  # too few requests, no training data: nothing to say yet
            log.debug("drift check of %s skipped: %s", model, exc)
            return None
        for signal in report["signals"]:
            self.metrics.drift_effect.labels(model, signal["signal"]).set(signal["value"])
        self.metrics.drift_alert.labels(model).set(int(report["drift"]))
        if report["drift"] and not self.drifting.get(model):
            self._alert(model, report)
        self.drifting[model] = report["drift"]
        return report

    def _alert(self, model: str, report: dict[str, Any]) -> None:
        moved = {s["signal"]: s["value"] for s in report["signals"] if s["drifted"]}
        alert = {
            "event": "drift",
            "model": model,
            "artifact": report["artifact"],
            "since": report["since"],
            "until": report["until"],
            "requests": report["requests"],
            "signals": moved,
        }
        with self.workspace.registry.session() as session:
            self.workspace.registry.audit(session, "monitor.drift_alert", model, **alert)
        log.warning("%s is drifting: %s", model, ", ".join(moved))
        if self.settings.drift_webhook_url:
            import httpx  # here: a server without a webhook never loads it (~4 MB)

            try:
                httpx.post(
                    self.settings.drift_webhook_url, json=alert, timeout=5
                ).raise_for_status()
            except httpx.HTTPError as exc:  # the alert is in the audit log either way
                log.warning("drift webhook %s failed: %s", self.settings.drift_webhook_url, exc)
