"""Training fixtures: a small real corpus (24 topics of Python's own documentation,
written as text files and ingested like a user's documents) and one reference run."""

from __future__ import annotations

import pydoc_data.topics
from pathlib import Path

import pytest
import torch
from slurm_fixtures import slurm  # noqa: F401 (the loopback Slurm, for every test here)
from train_fixtures import TOPICS, prepare_data, pretrain

from forgeml.core.workspace import Workspace
from ray_fixtures import cluster  # noqa: F401 (a Ray head on loopback, for the Ray tests here)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread: these models are too small to share, and on a busy 2-core
    machine two threads wait on each other (a tiny step goes from ~40 ms to ~400 ms).
    Runs that are compared bit for bit must use the same thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    for index, text in enumerate(list(pydoc_data.topics.topics.values())[:TOPICS]):
        (directory / f"topic-{index:02d}.txt").write_text(text)
    return directory


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path):
    """One straight 8-step run that other tests compare against and build upon."""
    workspace = Workspace.init(tmp_path_factory.mktemp("reference") / "ws")
    inputs = prepare_data(workspace, corpus_dir)
    result = pretrain(workspace, inputs)
    yield workspace, inputs, result
    workspace.close()
