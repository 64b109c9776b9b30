"""A tiny vision-language model in a workspace, and test pictures, for the tests that
serve images from a GGUF export (forgeml's llama.cpp engine, the edge bundle)."""

from __future__ import annotations

import base64
import copy
import io
import pydoc_data.topics

import numpy as np
from PIL import Image

from forgeml.core.context import record_artifact
from forgeml.core.schema import Artifact
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, build_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.models.vision import add_vision, save_processor_files


def register_tiny_vision_model(workspace: Workspace, name: str) -> Artifact:
    """`tiny` text model + `tiny` tower (untrained), saved as a registry model `name`."""
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    text = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    model, tokenizer = add_vision(text, copy.deepcopy(tokenizer), "tiny", seed=1)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    save_processor_files(temp, model.config)
    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, name, artifact)
    return artifact


def png_url(width: int, height: int, seed: int) -> str:
    """Noise (even seeds) or a smooth gradient (odd ones): the two must read differently."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if seed % 2:
        gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
        pixels = np.broadcast_to(gradient, (height, width, 3)).copy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
