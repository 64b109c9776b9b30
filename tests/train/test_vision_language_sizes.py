"""Named vision-language sizes (`tiny-vl`), as a user reaches them: the installed CLI.

`forgeml train pretrain --size tiny-vl` trains the `tiny` text model on the mixture's
text and saves it with a fresh `tiny` tower: the same model, to the bit, as pre-training
`tiny` and then `forgeml models add-vision --vision tiny` with the same seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from train_fixtures import prepare_data

from forgeml.core.workspace import Workspace

TRAIN = ["--seq-len", "32", "--batch-size", "2", "--max-steps", "3", "--seed", "5"]


def forgeml(workspace: Path, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def model_dir(workspace: Path, name: str) -> Path:
    opened = Workspace.open(workspace)
    directory = opened.root / opened.registry.resolve(name, kind="model").path
    opened.close()
    return directory


def weights(workspace: Path, name: str) -> dict:
    return load_file(model_dir(workspace, name) / "model.safetensors")


def test_pretraining_a_vl_size_equals_pretrain_then_add_vision(tmp_path, corpus_dir) -> None:
    workspace = Workspace.init(tmp_path / "ws")
    mixture = prepare_data(workspace, corpus_dir)["mixture"].ref
    workspace.close()
    ws = tmp_path / "ws"
    tokenizer = forgeml(ws, "tokenizer", "train", mixture, "--vocab-size", "400", "--name", "tok")
    assert tokenizer["metrics"]["vocab_size"] == 400
    common = ["train", "pretrain", "--mixture", mixture, "--tokenizer", "tok", *TRAIN]

    vl = forgeml(ws, *common, "--size", "tiny-vl", "--name", "named-vl")
    config = json.loads((model_dir(ws, "named-vl") / "config.json").read_text())
    assert config["model_type"] == "mistral3", config  # a model that takes images
    assert (model_dir(ws, "named-vl") / "preprocessor_config.json").is_file()

    forgeml(ws, *common, "--size", "tiny", "--name", "text")
    forgeml(ws, "models", "add-vision", "text", "--vision", "tiny", "--seed", "5", "--name", "added")  # fmt: skip
    named, added = weights(ws, "named-vl"), weights(ws, "added")
    assert named.keys() == added.keys()
    assert any(key.startswith("vision_tower.") for key in named)
    assert all((named[key] == added[key]).all() for key in named)
    assert vl["metrics"]["steps"] == 3

    # The listed size is the model built: the same parameter count.
    rows = {row["size"]: row for row in forgeml(ws, "models", "sizes", "--vocab-size", "400")}
    assert rows["tiny-vl"]["vision"] == "tiny" and rows["tiny"]["vision"] is None
    assert rows["tiny-vl"]["parameters"] == sum(t.numel() for t in named.values())
    assert rows["small4-vl"]["parameters"] == pytest.approx(119.4e9, rel=0.01)


@pytest.mark.parametrize("command", [["data", "assess", "docs"], ["train", "pretrain", "--mixture", "docs"]])  # fmt: skip
def test_an_unknown_size_is_refused_naming_the_vision_language_ones(tmp_path, command) -> None:
    Workspace.init(tmp_path / "ws").close()
    done = subprocess.run(
        [sys.executable, "-m", "forgeml", "--workspace", str(tmp_path / "ws"), *command,
         "--size", "tiny-vlm"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "unknown size" in done.stderr and "tiny-vl, small-vl" in done.stderr
