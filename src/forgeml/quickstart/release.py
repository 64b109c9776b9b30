"""After the quickstart recipe: gate and promote the final model, write its card, and
export it for llama.cpp when the GGUF toolchain is installed.

These are governance actions rather than stages (a promotion moves an alias, it makes
no artifact), so the quickstart runs them after the recipe, as a user would:

    forgeml models promote quickstart-router --alias prod
    forgeml models card quickstart-router@prod -o MODEL_CARD.md
    forgeml export quickstart-router --format gguf --quant q8_0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from forgeml.core.atomic import write_text_if_changed
from forgeml.core.errors import ForgeError
from forgeml.core.runs import run_stage
from forgeml.eval.card import model_card
from forgeml.eval.gates import GateFailed
from forgeml.eval.promote import alias_holder, promote, resolve_version
from forgeml.export import toolchain

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

ALIAS = "prod"
GGUF_QUANT = "q8_0"


@dataclass
class Release:
    model: str  # name:version of the final model
    promoted: bool
    detail: str  # what the gates said, or why nothing changed
    serve_ref: str  # what to serve: name@prod when promoted, else name:version
    card: Path
    gguf: str | None = None  # export ref, when the toolchain is installed
    gguf_note: str = ""
    gates: list[dict] = field(default_factory=list)


def release(workspace: Workspace, name: str, quiet: bool) -> Release:
    """Promote `name`'s newest version to @prod through its gates; card; GGUF export."""
    model_name, version, artifact = resolve_version(workspace, name)
    label = f"{model_name}:{version}"
    holder = alias_holder(workspace, model_name, ALIAS)
    if holder is not None and holder[0] == version:
        promoted, detail, gates = True, f"already {model_name}@{ALIAS}", []
    else:
        try:
            promotion = promote(workspace, label, ALIAS, reason="quickstart")
        except GateFailed as refused:
            promoted, detail, gates = False, str(refused), [g.to_dict() for g in refused.results]
        else:
            promoted = True
            gates = [g.to_dict() for g in promotion.gates]
            detail = promoted_detail(label, gates)
    serve_ref = f"{model_name}@{ALIAS}" if promoted else label
    card = workspace.root / "quickstart" / "MODEL_CARD.md"
    card.parent.mkdir(parents=True, exist_ok=True)
    write_text_if_changed(card, model_card(workspace, label))
    result = Release(label, promoted, detail, serve_ref, card, gates=gates)
    if _gguf_toolchain_ready():
        exported = run_stage(
            workspace,
            "export.model",
            {"format": "gguf", "quant": GGUF_QUANT, "name": f"{model_name}-gguf"},
            {"model": artifact},
            recipe="quickstart",
            step="export-gguf",
            quiet=quiet,
        )
        result.gguf = exported.outputs["export"].ref
    else:
        result.gguf_note = (
            "GGUF export skipped: the llama.cpp toolchain is not installed (make gguf)"
        )
    return result


def promoted_detail(label: str, gates: list[dict]) -> str:
    """What the summary says after a promotion, e.g. `m:1 -> @prod (2 of 3 gates passed,
    1 skipped)`; a gate is skipped when it cannot apply (no @prod yet to beat)."""
    passed = sum(g["status"] == "passed" for g in gates)
    skipped = sum(g["status"] == "skipped" for g in gates)
    return f"{label} -> @{ALIAS} ({passed} of {len(gates)} gates passed, {skipped} skipped)"


def _gguf_toolchain_ready() -> bool:
    try:
        toolchain.find_converter()
    except ForgeError:
        return False
    return toolchain.llama_cpp_version() is not None
