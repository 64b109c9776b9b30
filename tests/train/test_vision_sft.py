"""Fine-tuning a vision-language model on chats with images, through the installed CLI:
add a vision tower to a text model, train the projector alone, then everything (full
and LoRA), and the errors a user gets for images a model cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import build_base, forgeml, register_model, weights

from forgeml.core.workspace import Workspace
from forgeml.models.image_inputs import data_url
from forgeml.quickstart.form_images import form_records, write_dataset, write_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.mktemp("base"))


@pytest.fixture
def forms_workspace(tmp_path, base_dir) -> Path:
    workspace = Workspace.init(tmp_path / "ws")
    register_model(workspace, base_dir, name="base")
    workspace.close()
    source = write_dataset(tmp_path / "forms", form_records(24, seed=0))
    forgeml(tmp_path / "ws", "data", "ingest", str(source), "--name", "forms")
    return tmp_path / "ws"


def model_path(workspace: Path, name: str) -> Path:
    opened = Workspace.open(workspace)
    try:
        return opened.root / opened.registry.resolve(name, kind="model").path
    finally:
        opened.close()


def test_a_text_model_learns_from_images(forms_workspace):
    ws = forms_workspace
    forgeml(ws, "models", "add-vision", "base", "--vision", "tiny", "--name", "base-vl")
    vl = model_path(ws, "base-vl")
    assert json.loads((vl / "config.json").read_text())["model_type"] == "mistral3"
    assert (vl / "preprocessor_config.json").is_file()

    train = ("train", "sft", "--data", "forms", "--batch-size", "8", "--no-collapse-check")
    forgeml(ws, *train, "--model", "base-vl", "--trainable", "projector", "--max-steps", "3",
            "--name", "projector")  # fmt: skip
    before, after = weights(vl), weights(model_path(ws, "projector"))
    changed = {key for key in before if not before[key].equal(after[key])}
    assert changed and all("multi_modal_projector" in key for key in changed)

    forgeml(ws, *train, "--model", "projector", "--max-steps", "8", "--lr", "3e-3",
            "--name", "forms-vl")  # fmt: skip
    trained = model_path(ws, "forms-vl")
    record = json.loads((trained / "training.json").read_text())
    assert record["data"]["images"] == 24 and record["trained_parts"] == ["all"]
    losses = [loss for _, loss in record["loss_curve"]]
    assert losses[-1] < losses[0]
    assert (trained / "preprocessor_config.json").is_file()  # still loads as a processor

    suite = write_suite(ws.parent / "suite", form_records(4, seed=9), "forms-eval")
    evaluated = forgeml(ws, "--json", "eval", "run", "forms-vl", "--suite", str(suite),
                        "--reasoning", "none", "--max-new-tokens", "8")  # fmt: skip
    report = json.loads(evaluated.stdout)
    assert 0.0 <= report["metrics"]["json_match"] <= 1.0  # scored from answers to images
    lines = suite.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][0]["content"][1]["image_url"]["url"] = "images/nowhere.png"
    suite.write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    refused = forgeml(ws, "eval", "run", "forms-vl", "--suite", str(suite), ok=False)
    assert refused.returncode == 2
    assert f"{suite}:2: messages[0].content[1]: image file not found" in refused.stderr

    exported = forgeml(ws, "--json", "export", "forms-vl", "--format", "hf")
    export_dir = Path(json.loads(exported.stdout)["path"])
    assert (export_dir / "preprocessor_config.json").is_file()
    gguf = json.loads(forgeml(ws, "--json", "export", "forms-vl", "--format", "gguf",
                              "--name", "forms-vl-gguf").stdout)  # fmt: skip
    gguf_dir = Path(gguf["path"])
    record = json.loads((gguf_dir / "export.json").read_text())
    assert (gguf_dir / "model-f16.gguf").is_file() and (gguf_dir / "mmproj-f16.gguf").is_file()
    assert record["gguf"]["mmproj"]["projector_type"] == "pixtral"
    assert record["gguf"]["mmproj"]["img_break"] is True  # what llama.cpp's CLIP loader needs
    served_with_images(ws, "forms-vl-gguf", suite)

    forgeml(ws, *train, "--model", "projector", "--max-steps", "2", "--lora", "--merge",
            "--name", "forms-vl-lora")  # fmt: skip
    merged = weights(model_path(ws, "forms-vl-lora"))
    assert set(merged) == set(after)  # a plain VL checkpoint, adapter merged in
    assert any(not merged[key].equal(after[key]) for key in merged)


def served_with_images(workspace: Path, export: str, suite: Path) -> None:
    """forgeml's llama.cpp engine serves the VL GGUF export (text model + mmproj) and
    answers a form's image (tests/serve/test_llama_cpp_vision.py compares the answers
    with the transformers engine's)."""
    import httpx

    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.auth import create_key
    from forgeml.serve.background import BackgroundServer

    form = json.loads(suite.read_text().splitlines()[0])
    image_part = form["messages"][0]["content"][1]
    image_part["image_url"]["url"] = data_url(
        (suite.parent / image_part["image_url"]["url"]).read_bytes()
    )
    opened = Workspace.open(workspace)
    try:
        _, key = create_key(opened, "gguf", "inference")
        app = create_app(opened, [export], ServeSettings(torch_threads=1))
        with BackgroundServer(app) as address:
            answered = httpx.post(f"{address}/v1/chat/completions",
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"model": export, "messages": form["messages"][:1],
                                        "max_tokens": 4})  # fmt: skip
            assert answered.status_code == 200, answered.text
            assert answered.json()["usage"]["prompt_tokens"] > 64  # the form's image tokens
    finally:
        opened.close()


def test_images_a_model_cannot_take_are_refused(forms_workspace):
    result = forgeml(forms_workspace, "train", "sft", "--model", "base", "--data", "forms",
                     "--max-steps", "1", ok=False)  # fmt: skip
    assert result.returncode == 2
    assert "takes none" in result.stderr and "forgeml models add-vision" in result.stderr
    result = forgeml(forms_workspace, "train", "sft", "--model", "base", "--data", "forms",
                     "--trainable", "projector", "--max-steps", "1", ok=False)  # fmt: skip
    assert result.returncode == 2 and "needs a vision-language model" in result.stderr
    result = forgeml(forms_workspace, "models", "add-vision", "base", "--vision", "huge", ok=False)
    assert result.returncode == 2 and "unknown vision size 'huge'" in result.stderr
    assert "Traceback" not in result.stderr


def test_image_sft_is_exact_across_workspaces_and_an_interruption(base_dir, tmp_path, monkeypatch):
    """add-vision then SFT on images, straight in one workspace and killed at step 4 then
    rerun in another: the same tower, and the same trained model, byte for byte."""
    from finetune_fixtures import dies_at_step, ingest

    from forgeml.core.runs import run_stage

    source = write_dataset(tmp_path / "forms", form_records(16, seed=3))
    params = {"max_steps": 6, "batch_size": 4, "checkpoint_every": 3, "collapse_check": False}

    def prepared(root: Path):
        workspace = Workspace.init(root)
        base = register_model(workspace, base_dir)
        vl = run_stage(workspace, "train.add_vision", {"vision": "tiny"}, {"model": base}, seed=5)
        return workspace, {"model": vl.outputs["model"], "dataset": ingest(workspace, source)}

    straight_ws, inputs = prepared(tmp_path / "a")
    straight = run_stage(straight_ws, "train.sft", params, inputs, seed=7, quiet=True)

    killed_ws, killed_inputs = prepared(tmp_path / "b")
    assert killed_inputs["model"].sha256 == inputs["model"].sha256
    with dies_at_step(monkeypatch, 4), pytest.raises(KeyboardInterrupt):
        run_stage(killed_ws, "train.sft", params, killed_inputs, seed=7, quiet=True)
    resumed = run_stage(killed_ws, "train.sft", params, killed_inputs, seed=7, quiet=True)
    assert resumed.metrics["resumed_from_step"] == 3
    assert resumed.outputs["model"].sha256 == straight.outputs["model"].sha256
    for workspace in (straight_ws, killed_ws):
        workspace.close()


def test_a_hugging_face_vision_language_directory_is_a_base(tmp_path, base_dir):
    """A multimodal HF directory (config.json of `mistral3`, safetensors, tokenizer and
    processor files, as transformers saves one) enters the registry as any base does,
    through continued pre-training on text (`--base-path`), and is then fine-tuned on
    images. Text pre-training leaves the tower as it was."""
    import pydoc_data.topics

    from transformers import AutoTokenizer

    from forgeml.models.sizes import load_model
    from forgeml.models.vision import add_vision, save_processor_files

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    vl, tokenizer = add_vision(load_model(base_dir), tokenizer, "tiny", seed=7)
    hf_dir = tmp_path / "hf-vl"
    vl.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    save_processor_files(hf_dir, vl.config)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, topic in enumerate(list(pydoc_data.topics.topics.values())[:30]):
        (corpus / f"{index}.txt").write_text(topic)
    ws = tmp_path / "ws"
    Workspace.init(ws).close()
    forgeml(ws, "data", "ingest", str(corpus), "--name", "docs")
    forgeml(ws, "data", "mix", "docs=1", "--name", "docs-mix")
    forgeml(ws, "train", "pretrain", "--mixture", "docs-mix", "--base-path", str(hf_dir),
            "--max-steps", "2", "--seq-len", "64", "--batch-size", "2", "--name", "vl-base")  # fmt: skip
    based = model_path(ws, "vl-base")
    assert json.loads((based / "config.json").read_text())["model_type"] == "mistral3"
    before, after = weights(hf_dir), weights(based)
    tower = [key for key in before if key.startswith("vision_tower.")]
    assert tower and all(before[key].equal(after[key]) for key in tower)
    assert any(not before[k].equal(after[k]) for k in before if k.startswith("language_model."))

    source = write_dataset(tmp_path / "forms", form_records(8, seed=0))
    forgeml(ws, "data", "ingest", str(source), "--name", "forms")
    forgeml(ws, "train", "sft", "--model", "vl-base", "--data", "forms", "--batch-size", "4",
            "--no-collapse-check", "--trainable", "projector", "--max-steps", "2",
            "--name", "vl-forms")  # fmt: skip
    record = json.loads((model_path(ws, "vl-forms") / "training.json").read_text())
    assert record["data"]["images"] == 8
