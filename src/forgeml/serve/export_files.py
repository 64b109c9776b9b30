"""Serving an `export` artifact: where its model files and its tokenizer are.

An hf export is a Hugging Face directory, served like a model artifact. A gguf export
holds one GGUF file (the llama.cpp engine serves it) and no tokenizer files, while the
server renders prompts and decodes with our own tokenizer: it is the tokenizer of what
was exported, found through the export's record (export.json) as export/merge.py
chose it: an adapter's own tokenizer when its training saved one, else its base's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from forgeml.core.errors import ForgeError
from forgeml.core.schema import Artifact
from forgeml.core.workspace import Workspace

RECORD = "export.json"  # export/model.py writes it


@dataclass(frozen=True)
class ExportFiles:
    directory: Path  # the export's directory
    tokenizer_dir: Path
    gguf: Path | None  # the GGUF file of a gguf export
    mmproj: Path | None = None  # its vision tower, for a vision-language model


def export_files(workspace: Workspace, artifact: Artifact) -> ExportFiles:
    directory = workspace.local_path(artifact)
    record = json.loads((directory / RECORD).read_text())
    if record["format"] != "gguf":
        return ExportFiles(directory, directory, None)
    for described in (record["source"], record.get("base")):
        if described is None:
            continue
        source = workspace.registry.resolve(f"{described['kind']}/{described['sha256']}")
        source_dir = workspace.local_path(source)
        if (source_dir / "tokenizer.json").is_file():
            mmproj = (record["gguf"].get("mmproj") or {}).get("file")
            return ExportFiles(
                directory,
                source_dir,
                directory / record["gguf"]["file"],
                directory / mmproj if mmproj else None,
            )
    raise ForgeError(
        f"{artifact.ref} is a GGUF, and no tokenizer was found for it: neither "
        f"{record['source']['ref']} nor its base has tokenizer.json",
        hint="serve the model it was exported from, or an hf export of it",
    )
