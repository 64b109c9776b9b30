"""A tiny untrained chat model in a workspace, served by a real uvicorn on 127.0.0.1.

One server for the whole module set (loading and starting take a second or two); its
outputs are gibberish, so the tests check protocol behaviour, never quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_fixtures import MODEL_NAME, ServerThread, register_tiny_model

from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    workspace: Workspace
    inference_key: str
    admin_key: str
    app: Any = None  # the FastAPI app, for its OpenAPI schema (the server hides /openapi.json)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@pytest.fixture(scope="session")
def serve_workspace(tmp_path_factory) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path_factory.mktemp("serve") / "ws")
    register_tiny_model(workspace)
    yield workspace
    workspace.close()


@pytest.fixture(scope="session")
def model_dir(serve_workspace: Workspace) -> Path:
    """The registered tiny chat model's directory."""
    return serve_workspace.root / serve_workspace.registry.resolve(MODEL_NAME).path


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def served(serve_workspace: Workspace) -> Iterator[Served]:
    _, inference_key = create_key(serve_workspace, "tests", "inference")
    _, admin_key = create_key(serve_workspace, "ops", "admin")
    settings = ServeSettings(max_batch_size=32, key_cache_seconds=0.0, torch_threads=1)
    app = create_app(serve_workspace, [MODEL_NAME], settings)
    with ServerThread(app) as url:
        yield Served(url, serve_workspace, inference_key, admin_key, app)


@pytest.fixture
def openai_client(served: Served):
    from openai import OpenAI

    with OpenAI(base_url=served.base_url, api_key=served.inference_key, max_retries=0) as client:
        yield client


@pytest.fixture
def mistral_client(served: Served):
    from mistralai.client import Mistral

    with Mistral(api_key=served.inference_key, server_url=served.url) as client:
        yield client
