"""A standard Hugging Face model directory, the form transformers, vLLM and TGI read.

    summary = write_hf(model_dir, out_dir)

What goes in, and why:

- `config.json` with `architectures` and `model_type` (vLLM picks its implementation
  from `architectures[0]`) and the weights' dtype under both `dtype` (transformers 5)
  and `torch_dtype` (what older readers, vLLM's config loader among them, look for).
- the weights as safetensors (copied, or re-saved when a checkpoint has only
  `pytorch_model.bin`), sharded exactly as the source was, with its index.
- the tokenizer files, with the chat template both in `chat_template.jinja` and inside
  `tokenizer_config.json` (readers older than transformers 4.43 only look there), and
  `tokenizer_class` set to `PreTrainedTokenizerFast`, which every transformers version
  knows (transformers 5 writes its own new name, `TokenizersBackend`).
- `generation_config.json`, so servers stop at `</s>` without being told.

Training by-products (training_record.json, loss curves, manifest.json) stay behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from forgeml.core.atomic import write_json_atomic
from forgeml.core.errors import InputError

WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",  # SentencePiece base models
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    # a vision-language model's image processor (models/vision.save_processor_files)
    "preprocessor_config.json",
    "processor_config.json",
)
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def write_hf(source: Path, out_dir: Path) -> dict[str, Any]:
    """Write a servable HF directory for the checkpoint in `source`; returns a summary."""
    config_path = source / "config.json"
    if not config_path.is_file():
        raise InputError("not a Hugging Face model directory: config.json is missing", path=source)
    config = json.loads(config_path.read_text())
    if not config.get("architectures"):
        raise InputError(
            "config.json declares no `architectures`; vLLM and the GGUF converter need it",
            path=config_path,
        )
    if not (source / "tokenizer.json").is_file() and not (source / "tokenizer.model").is_file():
        raise InputError("the model directory has no tokenizer files", path=source)

    weights = [p for pattern in WEIGHT_GLOBS for p in sorted(source.glob(pattern))]
    if any(p.suffix == ".safetensors" for p in weights):
        for path in weights:
            _link_or_copy(path, out_dir / path.name)
    else:
        _resave_as_safetensors(source, out_dir)

    dtype = config.get("dtype") or config.get("torch_dtype")
    if dtype:
        config["dtype"] = config["torch_dtype"] = dtype
    write_json_atomic(out_dir / "config.json", config)

    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)
    _portable_tokenizer_config(out_dir)
    _generation_config(source, out_dir, config)
    return {
        "architectures": config["architectures"],
        "model_type": config.get("model_type"),
        "dtype": dtype,
        "weights": sorted(p.name for p in out_dir.glob("*.safetensors")),
    }


def _link_or_copy(source: Path, target: Path) -> None:
    # Artifacts are immutable, so the export may share the weights' bytes with the
    # model it came from instead of doubling a multi-gigabyte file on disk.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _resave_as_safetensors(source: Path, out_dir: Path) -> None:
    from forgeml.models.sizes import load_model

    model = load_model(source, dtype="auto")
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "config.json").unlink()  # rewritten by the caller from the source's


def _portable_tokenizer_config(out_dir: Path) -> None:
    path = out_dir / "tokenizer_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    template = out_dir / "chat_template.jinja"
    if template.is_file():
        settings["chat_template"] = template.read_text()
    if (out_dir / "tokenizer.json").is_file() and settings.get("tokenizer_class") in (
        None,
        "TokenizersBackend",
    ):
        settings["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    write_json_atomic(path, settings)


def _generation_config(source: Path, out_dir: Path, config: dict[str, Any]) -> None:
    path = source / "generation_config.json"
    generation = json.loads(path.read_text()) if path.is_file() else {}
    for key in GENERATION_KEYS:
        if generation.get(key) is None and config.get(key) is not None:
            generation[key] = config[key]
    write_json_atomic(out_dir / "generation_config.json", generation)
