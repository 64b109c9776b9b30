"""LoRA adapters served over their base model's engine, not as a second copy of it.

    forgeml serve support-bot support-bot-lora    # a base model, and an adapter over it
    # model="support-bot-lora" decodes in support-bot's batch, with the adapter's weights

An `adapter` artifact (from train.sft_lora, train.preference_lora, train.rl_lora) holds
only its LoRA matrices; its base is the `model` input of the run that trained it, found
through lineage as `forgeml export` finds it. The adapter is served under its own name
by its base's transformers engine, which loads the adapter's weights once
(`TransformersEngine.add_adapter`); requests for the base and for each of its adapters
share every decode step (engine/lora.py). The adapter's tokenizer (which may carry a
newer chat template) renders its prompts; its vocabulary must be the base's, since one
engine decodes both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from forgeml.core.errors import InputError
from forgeml.core.schema import Artifact
from forgeml.core.workspace import Workspace
from forgeml.serve.engine.base import Engine, EngineStats, GenerationChunk, GenerationRequest
from forgeml.serve.tokenizer import ServingTokenizer

if TYPE_CHECKING:
    from forgeml.serve.engine.transformers import TransformersEngine
    from forgeml.serve.served_models import ServedModel

EXPORT_HINT = (
    "export it merged into a base model (`forgeml export ADAPTER --base MODEL`) "
    "and serve the export"
)


class AdapterEngine(Engine):
    """An adapter's view of its base model's engine: its requests name the adapter."""

    def __init__(self, base: TransformersEngine, adapter: str) -> None:
        self.base, self.adapter = base, adapter
        self.name = base.name
        self.max_context = base.max_context

    async def start(self) -> None:
        """Nothing to start: the base's worker decodes for the adapter."""

    async def stop(self) -> None:
        """Unload the adapter's weights; its requests in flight end with `abort`."""
        await asyncio.to_thread(self.base.remove_adapter, self.adapter)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self.base.generate(replace(request, adapter=self.adapter))

    def stats(self) -> EngineStats:
        return self.base.adapter_stats(self.adapter)


def adapter_base(workspace: Workspace, adapter: Artifact) -> Artifact:
    """The model an adapter was trained on (the `model` input of its run)."""
    from forgeml.export.model import find_adapter_base  # torch-free serving never needs it

    try:
        return find_adapter_base(workspace, adapter)
    except InputError as error:
        raise InputError(f"cannot serve the adapter: {error.message}", hint=EXPORT_HINT) from error


def load_served_adapter(
    workspace: Workspace, served_id: str, adapter: Artifact, base: ServedModel
) -> ServedModel:
    """Load an adapter into `base`'s engine and describe it as a model of its own.

    Blocking (reads the weights; decoding pauses while they go in): call it from a thread
    once the server runs.
    """
    if not getattr(base.engine, "serves_adapters", False):
        raise InputError(
            f"cannot serve {served_id}: LoRA adapters are served by the transformers engine, "
            f"and its base {base.id} runs on {base.engine.name}",
            hint=EXPORT_HINT,
        )
    directory = workspace.local_path(adapter)
    tokenizer = _adapter_tokenizer(directory, base)
    key = "adapter_" + adapter.sha256[:16]  # PEFT's name: a module key, so no dots
    base.engine.add_adapter(key, directory)
    # A ServedModel like its base's (built with `replace`: that module imports this one).
    return replace(
        base,
        id=served_id,
        artifact_id=adapter.id,
        artifact_ref=adapter.ref,
        sha256=adapter.sha256,
        tokenizer=tokenizer,
        engine=AdapterEngine(base.engine, key),
        created=int(time.time()),
        parent=base,
    )


def _adapter_tokenizer(directory: Path, base: ServedModel):
    """The tokenizer saved with the adapter (else the base's), if it encodes as the base's."""
    if not (directory / "tokenizer.json").is_file():
        return base.tokenizer
    tokenizer = ServingTokenizer.load(directory)
    same = (
        tokenizer.get_vocab() == base.tokenizer.get_vocab()
        and tokenizer.eos_token_id == base.tokenizer.eos_token_id
    )
    if not same:
        raise InputError(
            "the adapter's tokenizer differs from its base model's, so the base's engine "
            "cannot decode for it",
            path=directory,
            hint=EXPORT_HINT,
        )
    return tokenizer
