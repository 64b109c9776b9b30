"""`forgeml deploy bundle`: a model packaged to run where forgeml is not installed.

    forgeml deploy bundle support-bot@prod --target edge -o support-bot-edge
    forgeml deploy bundle support-bot --target edge --quant q4_k_m -o bot.tar.gz

`--target edge`: the GGUF export, its chat template, model card, lineage pointer, a
pinned requirements.txt and a `./serve` launcher (llama-cpp-python's OpenAI-compatible
server); see forgeml/deploy/edge.py.
"""

from __future__ import annotations

from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options
from forgeml.core.errors import InputError

app = typer.Typer(help="Package a model to run elsewhere.", no_args_is_help=True)
TARGETS = ("edge",)


@app.command("bundle")
def bundle(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model: NAME, NAME:VERSION, NAME@ALIAS or model/SHA."),
    target: str = typer.Option(..., "--target", help="Where it runs: edge (llama.cpp, CPU)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="A new (or empty) directory, or a .tar.gz file."
    ),
    quant: str = typer.Option(
        "q8_0", "--quant", help="edge: the GGUF's type: f32, f16, q8_0 or q4_k_m."
    ),
) -> None:
    """Write a self-contained bundle that serves the model with an OpenAI-compatible API."""
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}", field="target", hint="one of: edge")
    from forgeml.deploy.edge import build_edge_bundle, check_request

    check_request(quant, output.absolute())  # before opening the workspace or exporting
    workspace = options(ctx).open()
    model = workspace.registry.resolve(ref, kind="model", purpose="be bundled for deployment")
    manifest = build_edge_bundle(workspace, model, quant, output)
    size = sum(entry["size_bytes"] for entry in manifest["files"].values())

    def render() -> None:
        console.print(
            f"edge bundle of {manifest['model']['name']} ({quant}, {size:,} bytes): {output}"
        )
        console.print("  run it: pip install -r requirements.txt; ./serve --host H --port P")

    emit(ctx, {**manifest, "size_bytes": size}, render)
