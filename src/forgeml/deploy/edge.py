"""The edge bundle: one model as a directory (or .tar.gz) that serves itself with llama.cpp.

    forgeml deploy bundle support-bot@prod --target edge --quant q8_0 -o support-bot-edge

What the bundle holds (bundle.json lists every other file with its sha256):

    serve                  the launcher: `./serve --host H --port P` (OpenAI-compatible API
                           from llama-cpp-python's server; imports neither forgeml nor torch)
    requirements.txt       its runtime, every package pinned
    model-<quant>.gguf     the GGUF export (the `export.model` run, reused when it exists)
    mmproj-<type>.gguf     a vision-language model's vision tower (llama.cpp's mtmd reads
                           it; the launcher then takes `image_url` parts)
    chat_template.jinja    the model's chat template (the launcher serves with it)
    MODEL_CARD.md          `forgeml models card` of the model
    lineage.json           the model's and the export's refs and sha256: `forgeml lineage
                           <sha256>` in the workspace shows where they came from
    README.md              how to run it
    bundle.json            the manifest

The same model and flags give the same bytes (no timestamps; a tarball's entries are
sorted, with the model's creation time as every mtime). The bundle is built in a
temporary directory next to the output and renamed into place: never half-written.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from forgeml import __version__
from forgeml.core.atomic import fsync_dir, write_bytes_atomic
from forgeml.core.errors import ForgeError, InputError
from forgeml.core.hashing import sha256_file
from forgeml.core.runs import run_stage
from forgeml.core.schema import Artifact, Version
from forgeml.core.workspace import Workspace
from forgeml.eval.card import model_card
from forgeml.export.gguf import GGUF_TYPES

SCHEMA = "forgeml.edge-bundle/1"
MANIFEST = "bundle.json"
LAUNCHER = "serve"
LAUNCHER_SOURCE = Path(__file__).with_name("edge_launcher.py")
CHAT_TEMPLATE = "chat_template.jinja"
DEFAULT_QUANT = "q8_0"
# The launcher's default context: the trained one, capped so a long-context model does
# not allocate its whole KV cache on a small machine (`./serve --n-ctx N` raises it).
MAX_DEFAULT_CONTEXT = 4096
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
# llama-cpp-python's `[server]` extra and everything under it, for llama-cpp-python
# RUNTIME_PINS_FOR (the version scripts/install_gguf_toolchain.sh builds) on Python 3.11+, at the versions in requirements.lock where forgeml uses them too
# (tests/deploy/test_edge_requirements.py checks that). llama-cpp-python itself is pinned
# to the version that wrote and loaded the GGUF.
RUNTIME_PINS_FOR = "0.3.36"
RUNTIME_PINS = (
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "click==8.5.1",
    "diskcache==5.6.3",
    "fastapi==0.165.0",
    "h11==0.16.0",
    "idna==3.20",
    "Jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "numpy==2.4.6",
    "opentelemetry-api==1.45.2",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "pydantic_core==2.50.5",
    "python-dotenv==1.2.4",
    "PyYAML==6.0.4",
    "sse-starlette==3.7.1",
    "starlette==1.10.0",
    "starlette-context==0.3.6",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "uvicorn==0.55.0",
)
# A vision-language model's bundle decodes and resizes images as forgeml does.
VISION_PINS = ("pillow==13.0.0",)
PYTHON_REQUIRES = ">=3.11"  # numpy 2.4's floor


def check_request(quant: str, output: Path) -> None:
    """Refuse a bad quantisation or an output in the way before any work."""
    if quant not in GGUF_TYPES:
        raise InputError(
            f"unknown quantisation {quant!r}", field="quant", hint=f"one of {', '.join(GGUF_TYPES)}"
        )
    if output.is_dir() and any(output.iterdir()):
        raise InputError(
            f"{output} exists and is not empty",
            hint="give a new directory (or an empty one) to -o, or remove this one",
        )
    if output.exists() and not output.is_dir():
        raise InputError(f"{output} already exists", hint="give -o a path that does not exist")
    if not output.parent.is_dir():
        raise InputError(f"the folder {output.parent} does not exist", hint="create it first")


def build_edge_bundle(
    workspace: Workspace, model: Artifact, quant: str, output: Path
) -> dict[str, Any]:
    """Write the bundle for `model` (already resolved and checked usable) at `output`;
    returns its manifest, with `export` the GGUF export run's outcome."""
    output = output.absolute()
    check_request(quant, output)
    model_dir = workspace.local_path(model)
    template = _chat_template(model_dir, model)
    result = run_stage(
        workspace, "export.model", {"format": "gguf", "quant": quant}, {"model": model}
    )
    export = result.outputs["export"]
    export_dir = workspace.local_path(export)
    record = json.loads((export_dir / "export.json").read_text())
    gguf = record["gguf"]
    llama_cpp_python = gguf["tools"]["llama_cpp_python"]
    if not llama_cpp_python:
        raise ForgeError(
            "the GGUF export was not checked by llama-cpp-python, so the bundle cannot pin it",
            hint="install the GGUF toolchain (`make gguf`), then bundle again",
        )
    names = _names(workspace, model)
    config = json.loads((model_dir / "config.json").read_text())
    context = int(config.get("max_position_embeddings") or MAX_DEFAULT_CONTEXT)
    vision = _vision(config, gguf.get("mmproj"))
    requirements = [f"llama_cpp_python=={llama_cpp_python}", *RUNTIME_PINS]
    requirements += VISION_PINS if vision else ()
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {
            "name": names[-1] if names else model.ref,
            "names": names,
            "ref": model.ref,
            "sha256": model.sha256,
        },
        "quant": quant,
        "gguf": gguf["file"],
        # k-quants need rows of 256 values: narrower tensors get another type
        "fallback_quantization": gguf["fallback_quantization"],
        "chat_template": CHAT_TEMPLATE,
        "chat": _special_tokens(model_dir),
        "vision": vision,
        "serving": {
            "context_length": context,
            "n_ctx": min(context, MAX_DEFAULT_CONTEXT),
            "kv_cache": "f32",
        },
        "runtime": {"python": PYTHON_REQUIRES, "llama_cpp_python": llama_cpp_python},
        "made_by": {"forgeml": __version__, "export": export.ref},
    }
    lineage = {
        "model": {"ref": model.ref, "sha256": model.sha256, "names": names},
        "export": {
            "ref": export.ref,
            "sha256": export.sha256,
            "run": result.run_id,
            "quant": quant,
        },
        "how": f"forgeml lineage {model.sha256}  (in the workspace that made it)",
    }

    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        root = staging / "bundle"
        root.mkdir()
        shutil.copyfile(export_dir / gguf["file"], root / gguf["file"])
        if vision:
            shutil.copyfile(export_dir / vision["mmproj"], root / vision["mmproj"])
        (root / CHAT_TEMPLATE).write_text(template, encoding="utf-8")
        (root / "MODEL_CARD.md").write_text(model_card(workspace, model.ref), encoding="utf-8")
        (root / "lineage.json").write_text(_json(lineage), encoding="utf-8")
        (root / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        (root / "README.md").write_text(_readme(manifest), encoding="utf-8")
        (root / LAUNCHER).write_text(LAUNCHER_SOURCE.read_text(), encoding="utf-8")
        (root / LAUNCHER).chmod(0o755)
        manifest["files"] = {
            path.name: {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
            for path in sorted(root.iterdir())
        }
        (root / MANIFEST).write_text(_json(manifest), encoding="utf-8")
        if output.name.endswith(TARBALL_SUFFIXES):
            top = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{manifest['model']['name']}-{quant}")
            write_bytes_atomic(output, _tarball(root, top, model))
        else:
            for path in root.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            fsync_dir(root)
            os.replace(root, output)  # an empty directory at `output` is replaced too
            fsync_dir(output.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "path": str(output), "export_reused": result.reused}


def _vision(config: dict[str, Any], mmproj: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the launcher needs to take images: the tower's file and how forgeml resizes
    for it (models/image_inputs.py); None for a text model."""
    if mmproj is None:
        return None
    return {
        "mmproj": mmproj["file"],
        "patch_size": config["vision_config"]["patch_size"],
        "image_size": config["vision_config"]["image_size"],
        "spatial_merge_size": config["spatial_merge_size"],
    }


def _chat_template(model_dir: Path, model: Artifact) -> str:
    path = model_dir / CHAT_TEMPLATE
    if path.is_file():
        return path.read_text(encoding="utf-8")
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if isinstance(config.get("chat_template"), str):
        return config["chat_template"]
    raise InputError(
        f"{model.ref} has no chat template, so a chat server cannot format its prompts",
        hint="bundle a model whose tokenizer has forgeml's chat template "
        "(forgeml tokenizer train adds it; so does fine-tuning with forgeml train sft)",
    )


def _special_tokens(model_dir: Path) -> dict[str, Any]:
    """The strings and the end-of-turn id the launcher's template renderer needs."""
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    ids = {token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}
    bos, eos = config.get("bos_token") or "", config.get("eos_token") or ""
    if eos not in ids:
        raise InputError(f"the tokenizer's end-of-sequence token {eos!r} is not a special token")
    return {"bos_token": bos, "eos_token": eos, "eos_token_id": ids[eos]}


def _names(workspace: Workspace, model: Artifact) -> list[str]:
    with workspace.registry.reading() as session:
        versions = session.scalars(
            select(Version).where(Version.artifact_id == model.id).order_by(Version.id)
        )
        return [f"{v.name}:{v.version}" for v in versions]


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def _tarball(root: Path, top: str, model: Artifact) -> bytes:
    """A .tar.gz of `root` under `top/` (named after the model and quantisation, not the
    file, so renaming the output changes nothing inside): sorted entries, fixed owners and mtimes, no gzip
    timestamp, so the same files always give the same bytes."""
    mtime = int(model.created_at.timestamp())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(top)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, mtime
        tar.addfile(folder)
        for path in sorted(root.iterdir()):
            info = tarfile.TarInfo(f"{top}/{path.name}")
            info.size, info.mtime = path.stat().st_size, mtime
            info.mode = 0o755 if path.name == LAUNCHER else 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as archive:
        archive.write(raw.getvalue())
    return packed.getvalue()


def _vision_readme(manifest: dict[str, Any]) -> str:
    if not manifest["vision"]:
        return ""
    return f"""

The model reads images: {manifest["vision"]["mmproj"]} is its vision tower. Send them as
`image_url` parts with data URLs (`data:image/png;base64,...`; nothing is fetched), at
most 8 a request (`--max-images`), each up to 20 MiB and 40 megapixels."""


def _readme(manifest: dict[str, Any]) -> str:
    model = manifest["model"]
    return f"""# {model["name"]} ({manifest["quant"]}), served by llama.cpp

Made by forgeml {manifest["made_by"]["forgeml"]} from {model["ref"]} (sha256 {model["sha256"]}).
Needs Python {manifest["runtime"]["python"]}; nothing from forgeml, no torch.

```bash
python3 -m venv .venv
.venv/bin/pip install -r requirements.txt   # llama-cpp-python builds from source (minutes)
                                             # unless a wheel is given: --find-links DIR
PATH=$PWD/.venv/bin:$PATH ./serve --host 127.0.0.1 --port 8080
PATH=$PWD/.venv/bin:$PATH ./serve --verify  # every file against bundle.json's sha256
```

An OpenAI-compatible API at http://HOST:PORT/v1 (chat/completions, completions, models),
from llama-cpp-python's server. It decodes one request at a time: concurrent requests
wait and run in turn. `./serve --help` lists the options (threads, context, KV cache,
API key).{_vision_readme(manifest)}

MODEL_CARD.md describes the model; lineage.json points back to the registry it came from.
"""
