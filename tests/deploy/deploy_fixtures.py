"""Helpers for the deploy tests: the CLI in a subprocess, the export tests' tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The export tests' model maker: one tiny model definition for every GGUF test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_fixtures import import_artifact, make_model_dir  # noqa: F401

FORGEML = [sys.executable, "-m", "forgeml"]
MODEL = "edge-bot"


def bundle_files(quant: str) -> set[str]:
    """What an edge bundle holds (test_edge_bundle.py proves it on a real one)."""
    return {
        "serve",
        "requirements.txt",
        "bundle.json",
        f"model-{quant}.gguf",
        "chat_template.jinja",
        "MODEL_CARD.md",
        "lineage.json",
        "README.md",
    }


def forgeml(
    root: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The installed CLI, as a user runs it."""
    return subprocess.run(
        [*FORGEML, "--workspace", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )
