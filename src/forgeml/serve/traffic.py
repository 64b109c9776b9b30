"""Which model version answers a request: aliases followed live, canary splits, shadows.

    forgeml serve support-bot@prod --canary support-bot@candidate:10
    forgeml serve support-bot@prod --shadow support-bot@candidate

- A request naming an alias (`support-bot@prod`) is answered by the version the alias
  points at *now* (looked up at most every few seconds), so a promotion or
  `forgeml models rollback` reaches a running server without a restart; a version the
  server does not hold is loaded on demand. The response's `model` is that version
  (`support-bot:3`), as OpenAI answers `gpt-4o` with the snapshot that ran.
- A canary (`serving.canary`, or `--canary`/`--shadow`) covers requests for NAME and
  NAME@PROD. In `split` mode the candidate answers `weight` percent of them, chosen by
  a hash of the request's `user` field: one end user always sees the same version (the
  same share of users, not of requests). A request without `user` is split at random,
  on its own. In `shadow` mode prod answers every request, and a copy goes to the
  candidate in the background (shadow.py): its answer is discarded, only measured.
- Every generation request leaves its `Route` on `request.state.route`: the version
  that answered and the alias it was reached through, which the request log and the
  per-version `/metrics` series record (`forgeml monitor usage --by version`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import select

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.registry import ForgottenError
from forgeml.core.schema import Deployment, Version
from forgeml.serve.errors import ModelNotServed
from forgeml.serve.shadow import Shadow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace
    from forgeml.serve.metrics import ServerMetrics
    from forgeml.serve.served_models import ModelPool, ServedModel
    from forgeml.serve.settings import CanarySettings, ServeSettings

ALIAS_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Route:
    name: str  # the model name (or the served id of a model that has none)
    version: str  # NAME:N that answered; "" when its artifact has no name
    alias: str = ""  # the alias the request reached it through
    answered_as: str = ""  # the response's `model`
    traffic: str = "live"  # live | shadow


def models_to_start(models: list[Any], settings: ServeSettings) -> list[Any]:
    """The models named, plus each canary's prod and candidate aliases not among them."""
    named = [m for m in models if isinstance(m, str)]
    extra = []
    for plan in settings.canary:
        for alias in (plan.prod, plan.candidate):
            ref = f"{plan.model}@{alias}"
            if ref not in named and ref not in extra:
                extra.append(ref)
    return [*models, *extra]


def check_canaries(workspace: Workspace, settings: ServeSettings) -> None:
    """Refuse a canary that cannot compare anything, before the server loads a model."""
    seen = set()
    for plan in settings.canary:
        where = f"serving.canary ({plan.model})"
        if plan.model in seen:
            raise InputError(f"{plan.model} has two canaries; give it one", field=where)
        seen.add(plan.model)
        if "@" in plan.model or ":" in plan.model:
            raise InputError(
                f"{plan.model!r} is not a model name", field=where, hint="Give NAME, no @ or :."
            )
        if plan.prod == plan.candidate:
            raise InputError(f"the candidate is the prod alias (@{plan.prod})", field=where)
        registry = workspace.registry
        prod, _ = registry.alias_target(plan.model, plan.prod, purpose="be served")
        candidate, _ = registry.alias_target(plan.model, plan.candidate, purpose="be served")
        if prod == candidate:
            raise InputError(
                f"{plan.model}@{plan.candidate} and {plan.model}@{plan.prod} are both "
                f"{plan.model}:{prod}: there is nothing to compare",
                field=where,
                hint=f"Point @{plan.candidate} at the version to test: "
                f"forgeml models alias {plan.model} N {plan.candidate}",
            )


def candidate_answers(plan: CanarySettings, user: str | None) -> bool:
    """Whether the candidate takes this request: a stable hash of (model, user)."""
    key = user if user else secrets.token_hex(8)
    digest = hashlib.sha256(f"{plan.model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < round(plan.weight * 100)


class TrafficRouter:
    def __init__(
        self,
        workspace: Workspace,
        pool: ModelPool,
        settings: ServeSettings,
        metrics: ServerMetrics,
    ) -> None:
        self.workspace, self.pool, self.metrics = workspace, pool, metrics
        self.plans = {plan.model: plan for plan in settings.canary}
        self.started_ids = {served.id for served in pool.started}
        self.shadows = {
            plan.model: Shadow(plan.model, plan.shadow_queue, metrics)
            for plan in settings.canary
            if plan.mode == "shadow"
        }
        self._aliases: dict[tuple[str, str], tuple[float, int]] = {}
        self._versions: dict[tuple[int | None, str], str] = {}

    async def start(self) -> None:
        for shadow in self.shadows.values():
            await shadow.start()
        if self.plans:
            await asyncio.to_thread(self._record)

    async def stop(self) -> None:
        for shadow in self.shadows.values():
            await shadow.stop()

    def _record(self) -> None:
        """Audit each canary; the deployment rows hold it in their settings (`canary`)."""
        registry = self.workspace.registry
        with registry.session() as session:
            rows = session.scalars(
                select(Deployment.id).where(
                    Deployment.status == "running", Deployment.model_ref.in_(self.started_ids)
                )
            ).all()
            for plan in self.plans.values():
                registry.audit(
                    session,
                    "deployment.canary",
                    plan.model,
                    prod=plan.prod,
                    candidate=plan.candidate,
                    weight=plan.weight if plan.mode == "split" else 0.0,
                    mode=plan.mode,
                    deployments=sorted(rows),
                )

    # --- routing ---------------------------------------------------------------------------

    async def get(self, requested: str, request: Request, user: str | None = None) -> ServedModel:
        """The model that answers `requested`; its Route goes on `request.state.route`."""
        caller = getattr(request.state, "caller", None)
        hold = request.scope.setdefault("state", {})  # holds.py: kept until the request ends
        name, _, alias = requested.partition("@")
        plan = self.plans.get(name)
        if plan is not None and alias in ("", plan.prod):
            split = plan.mode == "split" and candidate_answers(plan, user)
            alias = plan.candidate if split else plan.prod
            served, route = await self._through_alias(name, alias, None, requested, hold=hold)
            if plan.mode == "shadow":
                request.state.shadow = plan
        elif alias:
            trusted = requested in self.started_ids  # the operator serves this alias
            served, route = await self._through_alias(
                name, alias, None if trusted else caller, hold=hold
            )
        else:
            served = await self.pool.get(requested, caller, hold)
            version = await self._version_of(served, name)
            route = Route(version.partition(":")[0] or served.id, version, "", served.id)
        request.state.route = route
        return served

    def shadow(self, request: Request, generations: Callable[[ServedModel], list[Any]]) -> None:
        """Queue a copy of the request for the candidate, if its canary is a shadow."""
        plan = getattr(request.state, "shadow", None)
        if plan is not None:
            self.shadows[plan.model].send(
                lambda: self._through_alias(plan.model, plan.candidate, None, traffic="shadow"),
                generations,
            )

    async def _through_alias(
        self,
        name: str,
        alias: str,
        caller: Any,
        fallback: str | None = None,
        traffic: str = "live",
        hold: Any = None,
    ) -> tuple[ServedModel, Route]:
        requested = f"{name}@{alias}"
        try:
            number = await self._alias_version(name, alias)
        except ForgottenError:
            raise  # 409 naming the deletion request
        except ForgeError:
            return await self._plain(fallback or requested, caller, alias, traffic, hold)
        ref = f"{name}:{number}"
        try:
            served = await self.pool.get(ref, caller, hold)
        except ModelNotServed:
            # Not held and not loadable (max_on_demand_models: 0): what the server started
            # with under that alias answers until it is restarted.
            if requested not in self.started_ids:
                raise
            return await self._plain(requested, None, alias, traffic, hold)
        return served, Route(name, ref, alias, ref, traffic)

    async def _plain(
        self, requested: str, caller: Any, alias: str, traffic: str = "live", hold: Any = None
    ) -> tuple[ServedModel, Route]:
        served = await self.pool.get(requested, caller, hold)
        name = requested.partition("@")[0]
        version = await self._version_of(served, name)
        return served, Route(name, version, alias, version or served.id, traffic)

    async def _alias_version(self, name: str, alias: str) -> int:
        now = time.monotonic()
        cached = self._aliases.get((name, alias))
        if cached is None or now - cached[0] > ALIAS_CACHE_SECONDS:
            number, _ = await asyncio.to_thread(
                self.workspace.registry.alias_target, name, alias, purpose="be served"
            )
            cached = self._aliases[name, alias] = (now, number)
        return cached[1]

    async def _version_of(self, served: ServedModel, name: str) -> str:
        """NAME:N of the artifact `served` holds (preferring `name`), "" if it has none."""
        key = (served.artifact_id, name)
        if key not in self._versions:
            self._versions[key] = await asyncio.to_thread(self._lookup_version, *key)
        return self._versions[key]

    def _lookup_version(self, artifact_id: int | None, name: str) -> str:
        if artifact_id is None:
            return ""
        with self.workspace.registry.reading() as session:
            versions = session.scalars(
                select(Version)
                .where(Version.artifact_id == artifact_id)
                .order_by(Version.version.desc())
            ).all()
        mine = [v for v in versions if v.name == name] or versions
        return f"{mine[0].name}:{mine[0].version}" if mine else ""
