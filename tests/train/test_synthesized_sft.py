"""Examples made from documents train like any chat data: documents → `data synthesize`
→ `train sft`, through the installed CLI, with the model's lineage reaching the documents."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from finetune_fixtures import build_base, register_model


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("base"))


@pytest.mark.slow
def test_sft_on_synthesized_examples(workspace, base_dir, corpus_dir):
    register_model(workspace, base_dir)

    def forgeml(*args: str) -> dict:
        command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace.root),
                   "--json", *args]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    docs = forgeml("data", "ingest", str(corpus_dir), "--name", "docs")
    made = forgeml("data", "synthesize", "docs", "--max-examples", "64", "--name", "docs-qa")
    assert made["metrics"]["examples"] == 64
    trained = forgeml(
        "train", "sft", "--model", "base", "--data", "docs-qa", "--max-steps", "3",
        "--batch-size", "4", "--seq-len", "128", "--no-collapse-check", "--name", "docs-bot",
    )  # fmt: skip
    assert trained["metrics"]["train_loss"] > 0
    lineage = forgeml("lineage", "docs-bot")
    assert docs["outputs"]["dataset"] in json.dumps(lineage)
