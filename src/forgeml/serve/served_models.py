"""The models a server holds, and how a request's `model` string finds one.

A model is served under the reference it was started with (`support-bot@prod`,
`support-bot:3`, `model/3fa2b1c0`). A request may name it that way or any other way
that resolves, through the registry, to the same artifact: `support-bot:3` reaches
the model started as `support-bot@prod` while the alias points there. Lookups other
than the exact served id are cached for a few seconds, so a busy server does not
query the registry per request. A registry model the server does not hold is loaded
on demand (see `ModelPool`), so a fine-tuned model answers as soon as its job succeeds.
A LoRA adapter is served by its base model's engine (served_adapters.py), on demand too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.registry import ForgottenError
from forgeml.core.schema import Artifact
from forgeml.core.workspace import Workspace
from forgeml.models.image_inputs import ImageShape
from forgeml.serve.auth import Caller
from forgeml.serve.constrained.vocabulary import GuideVocabulary
from forgeml.serve.deployments import start_deployments, stop_deployments
from forgeml.serve.engine.base import Engine
from forgeml.serve.engine_factory import make_engine
from forgeml.serve.errors import APIError, ModelNotServed
from forgeml.serve.export_files import export_files
from forgeml.serve.forgotten_models import withdraw_forgotten
from forgeml.serve.holds import hold_until_request_ends
from forgeml.serve.on_demand import may_load
from forgeml.serve.served_adapters import adapter_base, load_served_adapter
from forgeml.serve.settings import ServeSettings
from forgeml.serve.tokenizer import ServingTokenizer

log = logging.getLogger("forgeml.serve")

RESOLVE_CACHE_SECONDS = 5.0


@dataclass
class ServedModel:
    id: str  # the reference it is served under
    artifact_id: int | None
    artifact_ref: str  # model/<sha256 prefix>
    sha256: str
    tokenizer: object
    engine: Engine
    created: int = field(default_factory=lambda: int(time.time()))
    parent: ServedModel | None = None  # for a LoRA adapter: the base whose engine serves it
    holds: int = field(default=0, compare=False)  # requests that chose it, not yet ended (holds.py)
    # A vision-language model's image geometry; None: the model takes text only.
    image_shape: ImageShape | None = None

    @property
    def max_context(self) -> int:
        return self.engine.max_context

    @cached_property
    def vocabulary(self) -> GuideVocabulary:
        """Constrained-decoding tables, built on first use (about a second for 32k tokens)."""
        if self.parent is not None:  # an adapter's vocabulary is its base's (checked at load)
            return self.parent.vocabulary
        return GuideVocabulary(self.tokenizer)


def load_directory(
    served_id: str,
    path: Path,
    settings: ServeSettings,
    artifact=None,
    *,
    gguf: Path | None = None,
    mmproj: Path | None = None,
    tokenizer_dir: Path | None = None,
    log_dir: Path | None = None,
) -> ServedModel:
    """Load a model directory (or a GGUF, its vision tower and its tokenizer) behind the
    engine settings pick."""
    tokenizer = ServingTokenizer.load(tokenizer_dir or path)
    engine = make_engine(
        served_id,
        path,
        tokenizer,
        settings,
        gguf=gguf,
        mmproj=mmproj,
        tokenizer_dir=tokenizer_dir,
        log_dir=log_dir,
    )
    # A GGUF's image geometry is its source model's (the tower's config travels there).
    config_dir = (tokenizer_dir or path) if gguf is not None else path
    return ServedModel(
        id=served_id,
        artifact_id=artifact.id if artifact is not None else None,
        artifact_ref=artifact.ref if artifact is not None else str(path),
        sha256=artifact.sha256 if artifact is not None else "",
        tokenizer=tokenizer,
        engine=engine,
        image_shape=_image_shape(config_dir) if engine.takes_images else None,
    )


def _image_shape(directory: Path) -> ImageShape | None:
    config = json.loads((directory / "config.json").read_text())
    return ImageShape.of(config) if config.get("model_type") == "mistral3" else None


def load_served_model(workspace: Workspace, ref: str, settings: ServeSettings) -> ServedModel:
    """Resolve a registry reference to a model artifact (or an export of one) and load it."""
    artifact = workspace.registry.resolve(ref, purpose="be served")
    log_dir = workspace.root / "serving"
    if artifact.kind == "export":
        files = export_files(workspace, artifact)
        return load_directory(
            ref,
            files.directory,
            settings,
            artifact,
            gguf=files.gguf,
            mmproj=files.mmproj,
            tokenizer_dir=files.tokenizer_dir,
            log_dir=log_dir,
        )
    if artifact.kind != "model":
        raise InputError(
            f"{ref!r} is a {artifact.kind}, but a model (or an export of one) is needed here",
            hint="List models with `forgeml models list`.",
        )
    return load_directory(ref, workspace.local_path(artifact), settings, artifact, log_dir=log_dir)


def load_served_models(
    workspace: Workspace, models: Sequence[str | ServedModel], settings: ServeSettings
) -> list[ServedModel]:
    """Load the models a server starts with, in order; an adapter goes into its base's
    engine, and a base nobody named is loaded too (served as `model/<sha256 prefix>`)."""
    entries: list[ServedModel | tuple[str, Artifact]] = []
    for model in models:
        if isinstance(model, ServedModel):
            entries.append(model)
        elif (artifact := workspace.registry.resolve(model, purpose="be served")).kind == "adapter":
            entries.append((model, artifact))  # loaded after every model: its base may follow
        else:
            entries.append(load_served_model(workspace, model, settings))
    held = [entry for entry in entries if isinstance(entry, ServedModel)]
    served: list[ServedModel] = []
    for entry in entries:
        if isinstance(entry, ServedModel):
            served.append(entry)
            continue
        ref, adapter = entry
        base_artifact = adapter_base(workspace, adapter)
        base = next((model for model in held if model.artifact_id == base_artifact.id), None)
        if base is None:
            base = load_served_model(workspace, base_artifact.ref, settings)
            held.append(base)
            served.append(base)
        served.append(load_served_adapter(workspace, ref, adapter, base))
    return served


class ModelPool:
    """The models started with the server, plus registry models loaded on demand.

    A request naming a registry model the pool does not hold (a fine-tuned model, the
    moment its job succeeds) loads it in a thread, one load at a time, so the event
    loop keeps serving, if the caller may have it loaded (on_demand.py); beyond
    `settings.max_on_demand_models` the least recently used idle on-demand model is
    unloaded. A model with requests in flight is never unloaded: when every one is
    busy, the load is refused with a 503 to retry. Started models stay loaded.

    A registry adapter loads into its base's engine (the base loaded on demand first if
    need be). Adapters have their own cap, `settings.max_on_demand_adapters`: one costs
    about 1% of a model, so it should not push a whole model out, nor a model it. An
    adapter in use keeps its base recent; unloading a base unloads its adapters first.
    """

    def __init__(
        self,
        workspace: Workspace,
        models: Sequence[ServedModel],
        settings: ServeSettings | None = None,
    ) -> None:
        if not models:
            raise ForgeError(
                "nothing to serve", hint="name at least one model: forgeml serve MODEL"
            )
        ids = [served.id for served in models]
        if len(set(ids)) != len(ids):
            raise ForgeError(f"a model is named twice: {', '.join(ids)}")
        self.workspace = workspace
        self.settings = settings or ServeSettings()
        self.started = list(models)
        self._by_id = {served.id: served for served in models}
        self._on_demand: OrderedDict[str, ServedModel] = OrderedDict()  # oldest use first
        self._deployments: dict[str, int] = {}  # on-demand model id -> deployments row
        self._resolved: dict[str, tuple[float, Artifact | None]] = {}
        self._loading = asyncio.Lock()
        self._forgotten_watch: asyncio.Task | None = None

    @property
    def models(self) -> list[ServedModel]:
        """Every model held now: the started ones, then those loaded on demand."""
        return [*self.started, *self._on_demand.values()]

    async def start(self) -> None:
        for served in self.started:
            await served.engine.start()
        self._forgotten_watch = asyncio.create_task(withdraw_forgotten(self))

    async def stop(self) -> None:
        if self._forgotten_watch is not None:
            self._forgotten_watch.cancel()
        for served in self.models:
            await served.engine.stop()
        await asyncio.to_thread(stop_deployments, self.workspace, self._deployments.values())
        self._deployments.clear()

    async def get(
        self, name: str, caller: Caller | None = None, hold_for: Any = None
    ) -> ServedModel:
        """The model `name` refers to, loaded if need be; NotFoundError (404) if none.
        `caller` is the API key asking (on_demand.py: who may have a model loaded);
        `hold_for`, a request's scope state: the model stays loaded until it ends."""
        served = self._by_id.get(name) or self._on_demand.get(name)
        if served is None:
            artifact = await self._artifact(name)
            served = self._holding(artifact)
            if served is None and artifact is not None and self._cap(artifact.kind):
                allowed = self.settings.on_demand_models
                if await asyncio.to_thread(may_load, self.workspace, allowed, artifact, caller):
                    served = await self._load(name, artifact)
        if served is None:
            held = ", ".join(s.id for s in self.models)
            raise ModelNotServed(f"the model {name!r} is not served here (serving: {held})")
        for used in (served, served.parent):  # an adapter in use keeps its base recent too
            if used is not None and used.id in self._on_demand:
                self._on_demand.move_to_end(used.id)
        if hold_for is not None:  # no await since it was chosen: nothing unloaded it
            hold_until_request_ends(served, hold_for)
        return served

    def _cap(self, kind: str) -> int:
        if kind == "adapter":
            return self.settings.max_on_demand_adapters
        return self.settings.max_on_demand_models

    async def _artifact(self, name: str) -> Artifact | None:
        now = time.monotonic()
        cached = self._resolved.get(name)
        if cached is None or now - cached[0] > RESOLVE_CACHE_SECONDS:
            cached = (now, await asyncio.to_thread(self._resolve, name))
            self._resolved[name] = cached
        return cached[1]

    def _resolve(self, name: str) -> Artifact | None:
        for kind in ("model", "adapter"):
            try:
                return self.workspace.registry.resolve(name, kind=kind, purpose="be served")
            except ForgottenError:
                raise  # 409 naming the deletion request, not "not served here"
            except ForgeError:
                continue
        return None

    def _holding(self, artifact: Artifact | None) -> ServedModel | None:
        if artifact is None:
            return None
        return next((s for s in self.models if s.artifact_id == artifact.id), None)

    async def _load(self, name: str, artifact: Artifact) -> ServedModel:
        async with self._loading:  # a second request for the same model waits, then finds it
            return await self._load_locked(name, artifact)

    async def _load_locked(self, name: str, artifact: Artifact) -> ServedModel:
        held = self._holding(artifact)
        if held is not None:
            return held
        base = None
        if artifact.kind == "adapter":
            base_artifact = await asyncio.to_thread(adapter_base, self.workspace, artifact)
            base = self._holding(base_artifact)
            if base is None and not self.settings.max_on_demand_models:
                raise ModelNotServed(
                    f"the base model of {name!r} ({base_artifact.ref}) is not served here"
                )
            if base is None:
                base = await self._load_locked(base_artifact.ref, base_artifact)
        self._check_room(artifact.kind, name)
        log.info("loading %s (%s) on demand", name, artifact.ref)
        served, deployment = await asyncio.to_thread(self._load_blocking, name, artifact, base)
        await served.engine.start()
        self._on_demand[served.id] = served
        self._deployments[served.id] = deployment
        await self._evict(keep={served.id} | ({base.id} if base is not None else set()))
        return served

    def _load_blocking(
        self, name: str, artifact: Artifact, base: ServedModel | None
    ) -> tuple[ServedModel, int]:
        self.workspace.registry.ensure_usable(artifact, "be served")  # forgotten since resolved?
        if base is not None:
            served = load_served_adapter(self.workspace, name, artifact, base)
        else:
            path = self.workspace.local_path(artifact)
            served = load_directory(name, path, self.settings, artifact)
        served.vocabulary  # noqa: B018  (build constrained-decoding tables before traffic)
        (deployment,) = start_deployments(self.workspace, [served], self.settings, on_demand=True)
        return served, deployment

    def track_deployments(self, ids: Sequence[int]) -> None:
        """The deployment rows of the started models, in their order (app.py makes them)."""
        self._deployments.update(zip((s.id for s in self.started), ids, strict=True))

    async def withdraw(self, served: ServedModel, reason: str = "") -> None:
        """Stop serving a model a deletion request forgot, and the adapters on it; their
        deployment rows end as `withdrawn` with the request's reason."""
        async with self._loading:
            self._resolved.clear()  # a cached name must resolve (and be refused) afresh
            await self._withdraw_locked(served, reason)

    async def _withdraw_locked(self, served: ServedModel, reason: str) -> None:
        if served not in self.models:
            return
        for adapter in [s for s in self.models if s.parent is served]:
            await self._withdraw_locked(adapter, reason)
        deployment = self._deployments.pop(served.id, None)
        if deployment is not None:
            await asyncio.to_thread(
                stop_deployments, self.workspace, [deployment], "withdrawn", reason
            )
        if served.id in self._on_demand:
            await self._unload(served)
            return
        self.started.remove(served)
        del self._by_id[served.id]
        await served.engine.stop()  # requests still running on it end with `abort`

    async def _evict(self, keep: set[str]) -> None:
        # Models first: unloading one takes its adapters along, which may make room.
        for adapters in (False, True):
            cap = self._cap("adapter" if adapters else "model")
            while True:
                held = [s for s in self._on_demand.values() if (s.parent is not None) == adapters]
                others = [s for s in held if s.id not in keep]
                if len(held) <= cap or not others:
                    break
                idle = [s for s in others if _idle(s)]
                if not idle:
                    break  # over the cap until one is idle: never cut requests off
                await self._unload(idle[0])

    def _check_room(self, kind: str, name: str) -> None:
        """Refuse a load that would need a busy model unloaded (503: retry shortly)."""
        cap = self._cap(kind)
        held = [
            s for s in self._on_demand.values() if (s.parent is not None) == (kind == "adapter")
        ]
        if len(held) >= cap and not any(_idle(s) for s in held):
            raise APIError(
                503,
                f"cannot load {name!r} now: the {len(held)} {kind}s loaded on demand "
                f"(max_on_demand_{kind}s) all have requests in flight; retry shortly",
                "server_error",
                code="model_capacity",
                headers={"Retry-After": "5"},
            )

    async def _unload(self, victim: ServedModel) -> None:
        for adapter in [s for s in self._on_demand.values() if s.parent is victim]:
            await self._unload(adapter)  # before its base's engine stops
        del self._on_demand[victim.id]
        kind = "adapter" if victim.parent is not None else "model"
        log.info("unloading %s, the least recently used on-demand %s", victim.id, kind)
        await victim.engine.stop()  # requests still running on it end with `abort`
        deployment = self._deployments.pop(victim.id, None)
        if deployment is not None:
            await asyncio.to_thread(stop_deployments, self.workspace, [deployment])


def _idle(served: ServedModel) -> bool:
    stats = served.engine.stats()
    return not (stats.running or stats.waiting or served.holds)
