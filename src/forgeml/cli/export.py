"""`forgeml export`: a model, or an adapter merged into its base, ready to serve elsewhere.

    forgeml export support-bot --format hf                    # transformers / vLLM
    forgeml export support-bot --format gguf --quant q4_k_m   # llama.cpp
    forgeml export support-lora --format gguf                 # adapter: merged first

The export is an artifact (kind `export`) with lineage back to the model; its
directory path is printed (and is `path` in `--json`).
"""

from __future__ import annotations

import json

import typer

from forgeml.cli.output import console, options, report_run
from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage


def export(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., help="Model or adapter: NAME, NAME:VERSION, NAME@ALIAS or KIND/SHA-PREFIX."
    ),
    format: str = typer.Option(
        "hf",
        "--format",
        help="hf (Hugging Face directory: transformers, vLLM) or gguf (llama.cpp).",
    ),
    quant: str | None = typer.Option(
        None, "--quant", help="GGUF only: f16 (default), f32, q8_0 or q4_k_m."
    ),
    name: str | None = typer.Option(None, "--name", help="Name the export."),
    base: str | None = typer.Option(
        None, "--base", help="An adapter's base model, when no run here recorded it."
    ),
) -> None:
    """Export a model (or an adapter merged into its base) as an HF directory or a GGUF file."""
    from forgeml.export.model import RECORD, find_adapter_base  # imports torch: not at start-up

    workspace = options(ctx).open()
    source = workspace.registry.resolve(ref, purpose="be exported")
    if source.kind not in ("model", "adapter"):
        raise InputError(f"{ref!r} is a {source.kind}; export takes a model or an adapter")
    inputs = {source.kind: source}
    if source.kind == "adapter":
        # Resolved here so the run records a lineage edge to the base, not only the adapter.
        inputs["base"] = (
            workspace.registry.resolve(base, kind="model", purpose="be exported")
            if base
            else find_adapter_base(workspace, source)
        )
    elif base:
        raise InputError("--base applies only to an adapter", field="base")
    params = {"format": format, "quant": quant, "name": name}
    result = run_stage(workspace, "export.model", params, inputs)
    directory = workspace.local_path(result.outputs["export"])
    record = json.loads((directory / RECORD).read_text())
    main_file = (record.get("gguf") or {}).get("file")
    report_run(ctx, result, extra={"path": str(directory), "file": main_file})
    if not options(ctx).json:
        console.print(f"  {directory / main_file if main_file else directory}")
