"""Deploy fixtures: the serving tests' tiny model helpers (container, compose), and one
workspace holding the export tests' tiny model, named `edge-bot` (edge bundle)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from deploy_fixtures import MODEL, import_artifact, make_model_dir

from forgeml.core.workspace import Workspace


@pytest.fixture(scope="session")
def edge_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("edge-model"))


@pytest.fixture(scope="session")
def edge_workspace(tmp_path_factory: pytest.TempPathFactory, edge_model_dir: Path) -> Path:
    """A workspace with the tiny chat model as `edge-bot:1` (shared: tests only read it,
    apart from the export runs, which every test may reuse)."""
    root = tmp_path_factory.mktemp("edge") / "ws"
    workspace = Workspace.init(root)
    try:
        model = import_artifact(workspace, edge_model_dir, "model")
        with workspace.registry.session() as session:
            workspace.registry.add_version(session, MODEL, model)
    finally:
        workspace.close()
    return root
