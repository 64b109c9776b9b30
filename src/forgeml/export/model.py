"""`export.model`: a model, or an adapter merged into its base, as a servable artifact.

    forgeml export support-bot --format hf
    forgeml export support-bot --format gguf --quant q4_k_m

Input: one `model`, or one `adapter` (whose base model is the `base` input, or else the
model input of the run that trained the adapter). Output: an `export` artifact, whose
lineage edge points at what was exported:

    hf:    config.json, *.safetensors, tokenizer files, chat template,
           generation_config.json, export.json (see hf.py)
    gguf:  model-<quant>.gguf (+ mmproj-f16.gguf for a vision-language model), export.json (see gguf.py)

`export.json` records the format, the quantisation, the sha256 of the exported model
(and of the adapter's base) and the versions of the tools that wrote the files.
"""

from __future__ import annotations

import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import select

from forgeml import __version__
from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.schema import Artifact, LineageEdge
from forgeml.core.stages import StageParams, stage
from forgeml.export.gguf import check_tools, write_gguf
from forgeml.export.hf import write_hf
from forgeml.export.merge import merge_adapter

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

SCHEMA = "forgeml.export/1"
RECORD = "export.json"
DEFAULT_GGUF_TYPE = "f16"
# Roles a training stage may give the model it fine-tuned, most specific first.
BASE_ROLES = ("base", "model")


class ExportParams(StageParams):
    format: Literal["hf", "gguf"] = Field(
        default="hf",
        description="hf: a Hugging Face directory (transformers, vLLM); gguf: llama.cpp.",
    )
    quant: Literal["f32", "f16", "q8_0", "q4_k_m"] | None = Field(
        default=None, description="GGUF only: f16 (default), f32, q8_0 or q4_k_m."
    )
    name: str | None = Field(default=None, description="Name the export.")

    @model_validator(mode="before")
    @classmethod
    def _default_quant(cls, values: Any) -> Any:
        # Resolved here, so `--format gguf` and `--format gguf --quant f16` are one run key.
        if isinstance(values, dict) and values.get("format") == "gguf" and not values.get("quant"):
            return {**values, "quant": DEFAULT_GGUF_TYPE}
        return values

    @model_validator(mode="after")
    def _quant_needs_gguf(self) -> ExportParams:
        if self.format == "hf" and self.quant is not None:
            raise ValueError(
                "quant applies to format gguf only; an hf export keeps the checkpoint's weights"
            )
        return self


@stage(
    "export.model",
    params=ExportParams,
    inputs={"model": "model?", "adapter": "adapter?", "base": "model?"},
    outputs={"export": "export"},
)
def export_model(ctx: StageContext, params: ExportParams):
    """Export a model (or an adapter merged into its base) as an HF directory or a GGUF."""
    model, adapter = ctx.inputs.get("model"), ctx.inputs.get("adapter")
    if (model is None) == (adapter is None):
        raise InputError("export takes one model or one adapter", field="inputs")
    if adapter is None and "base" in ctx.inputs:
        raise InputError("a base model applies only to an adapter", field="base")
    if params.format == "gguf":
        _, tools = check_tools(params.quant)  # a missing tool fails now, not after a merge
        release, installed = tools["converter"]["llama_cpp_python_sdist"], tools["llama_cpp_python"]
        if release and installed and release != installed:
            ctx.warn(
                f"llama.cpp's converter is from llama-cpp-python {release} but {installed} is "
                "installed: the GGUF may use keys the installed library does not know"
            )
    started = time.monotonic()

    merged_dir = ctx.work_dir / "merged"
    shutil.rmtree(merged_dir, ignore_errors=True)  # a previous attempt's leftovers
    record: dict[str, Any] = {"schema": SCHEMA, "format": params.format, "quant": params.quant}
    writer = ctx.new_artifact("export")
    try:
        if adapter is not None:
            base = ctx.inputs.get("base") or find_adapter_base(ctx.workspace, adapter)
            ctx.log(f"merging {adapter.ref} into {base.ref}")
            merged_dir.mkdir(parents=True)
            record["merge"] = merge_adapter(
                ctx.artifact_path(base), ctx.artifact_path(adapter), merged_dir
            )
            record["source"], record["base"] = _describe(adapter), _describe(base)
            source_dir = merged_dir
        else:
            record["source"], record["base"] = _describe(model), None
            source_dir = ctx.artifact_path(model)
        if params.format == "hf":
            record["hf"] = write_hf(source_dir, writer.path)
        else:
            name = record["source"]["ref"]
            record["gguf"] = write_gguf(source_dir, writer.path, params.quant, ctx.work_dir, name)
            if fallback := record["gguf"]["fallback_quantization"]:
                ctx.warn(
                    f"{fallback['tensors']} of {fallback['of']} tensors are too narrow for "
                    f"{params.quant} and were stored in another type (see llama_cpp.log)"
                )
        record["tools"] = _tool_versions(merged=adapter is not None)
        write_json_atomic(writer.path / RECORD, record)
    except BaseException:
        ctx.discard(writer)
        raise
    finally:
        shutil.rmtree(merged_dir, ignore_errors=True)  # as large as the model; not kept

    writer.meta.update(format=params.format, quant=params.quant, source=record["source"]["ref"])
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    ctx.set_metrics(
        format=params.format,
        quant=params.quant,
        source=record["source"]["ref"],
        size_bytes=artifact.size_bytes,
        seconds=round(time.monotonic() - started, 2),
    )
    return {"export": artifact}


def find_adapter_base(workspace: Workspace, adapter: Artifact) -> Artifact:
    """The model an adapter was trained on: the `model` input of the run that made it."""
    hint = "Name the base model explicitly (`forgeml export ADAPTER --base MODEL`)."
    if adapter.run_id is None:
        raise InputError(
            f"{adapter.ref} was not made by a run here, so its base model is unknown", hint=hint
        )
    with workspace.registry.session() as session:
        rows = session.execute(
            select(LineageEdge.role, Artifact)
            .join(Artifact, LineageEdge.artifact_id == Artifact.id)
            .where(
                LineageEdge.run_id == adapter.run_id,
                LineageEdge.direction == "input",
                Artifact.kind == "model",
            )
        ).all()
    by_role = {role: artifact for role, artifact in rows}
    if len(by_role) == 1:
        return next(iter(by_role.values()))
    for role in BASE_ROLES:
        if role in by_role:
            return by_role[role]
    found = ", ".join(f"{role}={artifact.ref}" for role, artifact in rows) or "none"
    raise InputError(
        f"cannot tell the base model of {adapter.ref} from run {adapter.run_id} (model inputs: {found})",
        hint=hint,
    )


def _describe(artifact: Artifact) -> dict[str, str]:
    return {"kind": artifact.kind, "ref": artifact.ref, "sha256": artifact.sha256}


def _tool_versions(merged: bool) -> dict[str, str | None]:
    packages = ["torch", "transformers", "tokenizers", "safetensors"] + (["peft"] if merged else [])
    found: dict[str, str | None] = {"forgeml": __version__}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
