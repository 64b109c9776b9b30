"""Test helpers for serving: a tiny untrained chat model and uvicorn in a thread."""

from __future__ import annotations

import pydoc_data.topics
from typing import Any

from forgeml.core.context import record_artifact
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, build_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.serve.background import BackgroundServer

MODEL_NAME = "tiny-chat"


def register_tiny_model(workspace: Workspace, name: str = MODEL_NAME, seed: int = 0, **config: Any):
    """Train a ~1k tokenizer, build the `tiny` size (`config` overrides its settings),
    store both as a named model artifact."""
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    model = build_model(build_config("tiny", vocab_size=len(tokenizer), **config), seed=seed)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    stored = workspace.store.commit(temp, "model", None, {"size": "tiny"})
    artifact = record_artifact(workspace, stored, None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, name, artifact)
    return artifact


# uvicorn in a background thread on a free loopback port (the product's own helper).
ServerThread = BackgroundServer
