"""Every use of an artifact goes through the one forgotten-data gate.

Commands find artifacts with `Registry.resolve`; one that *uses* what it finds must pass
`purpose=`, so a forgotten artifact is refused there. This test lists every call without
one and fails on any not known to only look (lineage, show, verify): a new command that
forgets the gate fails here, not in production.
"""

from __future__ import annotations

import ast
from pathlib import Path

import forgeml

SOURCE = Path(forgeml.__file__).parent

# (module, function): calls that look at an artifact, or re-check it another way.
LOOK_ONLY = {
    ("cli/artifacts.py", "show"),
    ("cli/artifacts.py", "verify"),
    ("cli/data.py", "forget"),  # the deletion request itself
    ("cli/governance.py", "lineage"),
    ("console/pages/evals.py", "_label"),  # naming what an evaluation evaluated
    ("console/pages/lineage.py", "lineage"),  # the lineage page marks forgotten ones
    ("core/runs.py", "resolve_inputs"),  # ensure_usable checks every input just after
    ("eval/card.py", "model_card"),
    ("eval/promote.py", "alias_holder"),  # what an alias points at now
    ("plan/estimate.py", "_artifact_facts"),  # sizing a plan; the run itself checks
    ("serve/export_files.py", "export_files"),  # the tokenizer of an export already checked
    ("serve/fine_tuning/serving.py", "_training_record"),  # describing a finished job
    ("serve/fine_tuning/serving.py", "_earlier_checkpoints"),  # listing a job's checkpoints
    ("cli/models_checkpoints.py", "list_checkpoints"),  # listing; from-checkpoint checks
    ("serve/on_demand.py", "may_load"),  # matching the allow list; the load itself checks
}


def resolve_calls_without_purpose() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(SOURCE.rglob("*.py")):
        module = path.relative_to(SOURCE).as_posix()
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "resolve"
                    and _name(node.func.value) == "registry"
                    and not any(keyword.arg == "purpose" for keyword in node.keywords)
                ):
                    found.add((module, function.name))
    return found


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_every_use_of_an_artifact_passes_a_purpose():
    unchecked = resolve_calls_without_purpose() - LOOK_ONLY
    assert not unchecked, (
        f"registry.resolve without purpose= in {sorted(unchecked)}: pass purpose='be ...' "
        "if the command uses the artifact, or add it to LOOK_ONLY if it only looks"
    )


def test_the_scan_finds_calls():
    """Guard the guard: the scan does see calls (lineage only looks)."""
    assert ("cli/governance.py", "lineage") in resolve_calls_without_purpose()
