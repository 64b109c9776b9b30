"""What the README says about forgeml is what the code does: the model sizes, the
quickstart summary's shape, and what each `reasoning_effort` means."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from forgeml.cli.quickstart import EVAL_COLUMNS, EVAL_STEPS, FINAL_MODEL, RECIPE
from forgeml.models.sizes import SIZES
from forgeml.quickstart.release import promoted_detail
from forgeml.serve.chat.prompt import REASONING_BUDGETS, REASONING_EFFORTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first markdown table after `heading`."""
    lines = README.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("`", "") for cell in line.strip("|").split("|")])
    return rows


def test_the_size_table_and_claims_match_the_code():
    rows = table_after("The named model sizes")
    documented = {row[0]: [int(cell.replace(",", "")) for cell in row[1:]] for row in rows}
    actual = {
        name: [
            size.num_hidden_layers,
            size.hidden_size,
            size.n_routed_experts,
            size.num_experts_per_tok,
            size.n_shared_experts,
            size.max_position_embeddings,
        ]
        for name, size in SIZES.items()
    }
    assert documented == actual
    # Prose such as "the `tiny` MoE (8 experts, 2 active)", in the README and the docs.
    texts = [README, *(path.read_text() for path in (ROOT / "docs").glob("*.md"))]
    claims = [
        match
        for text in texts
        for match in re.finditer(r"`(\w+)` MoE \((\d+) experts,\s+(\d+) active\)", text)
    ]
    assert claims, "the README names the quickstart's size and its experts"
    for claim in claims:
        size = SIZES[claim[1]]
        stated = (int(claim[2]), int(claim[3]))
        assert stated == (size.n_routed_experts, size.num_experts_per_tok), claim[0]


def quickstart_summary() -> list[str]:
    block = README.split("evaluation: held-out tickets and held-out text\n", 1)[1]
    return block.split("```", 1)[0].splitlines()


def test_the_quickstart_summary_has_the_shape_the_code_prints():
    header, *rest = quickstart_summary()
    assert re.split(r"\s{2,}", header.strip()) == ["model", *EVAL_COLUMNS]
    rows = [re.split(r"\s{2,}", line.strip()) for line in rest[: len(EVAL_STEPS)]]
    assert [row[0] for row in rows] == list(EVAL_STEPS.values())
    # No measured numbers: they depend on the run. Placeholders only.
    assert all(re.fullmatch(r"[0x]\.xx", cell) for row in rows for cell in row[1:]), rows
    assert all(len(row) == 1 + len(EVAL_COLUMNS) for row in rows)

    # The recipe's gates on a first run: every min/max passes (or the model is not
    # promoted), must_beat is skipped since nothing holds @prod yet.
    recipe = yaml.safe_load(RECIPE.read_text())
    final = next(step for step in recipe["steps"] if step["name"] == "eval-final")
    gates = final["with"]["gates"]
    statuses = ["passed"] * sum(len(gates.get(rule, {})) for rule in ("min", "max"))
    statuses += ["skipped"] * ("must_beat" in gates)
    detail = promoted_detail(f"{FINAL_MODEL}:1", [{"status": s} for s in statuses])
    assert f"promoted: {detail}" in rest


def test_the_reasoning_effort_table_matches_the_server():
    rows = table_after("`reasoning_effort` takes OpenAI's and Mistral's values")
    documented = {}
    for row in rows:
        for name in re.findall(r"\w+", row[0].replace("(or unset)", "")):
            documented[name] = (row[1], row[2])
    assert documented.keys() == REASONING_EFFORTS.keys()
    for name, (reasoning, cap) in documented.items():
        assert reasoning == ("on" if REASONING_EFFORTS[name] == "high" else "off"), name
        if reasoning == "off":
            assert cap == "0", name
        elif name in REASONING_BUDGETS:
            assert int(cap) == REASONING_BUDGETS[name], name
        else:
            assert cap.startswith("no cap"), name


def test_the_console_section_matches_the_code():
    """The README's console claims: the command, the scopes, the cookie, the vendored files.
    (tests/console/ proves each in a browser.)"""
    from forgeml.cli.app import app
    from forgeml.console.gate import PREFIX
    from forgeml.console.render import HERE, NAV
    from forgeml.serve.auth import SCOPES

    section = README.split("### Console", 1)[1].split("\n### ", 1)[0]
    assert PREFIX == "/ui" and "`/ui`" in section
    assert "ui" in {command.name for command in app.registered_commands}
    assert set(SCOPES) == {"inference", "viewer", "admin"}
    for scope in SCOPES:
        assert f"`{scope}`" in section
    assert "HttpOnly, SameSite=Strict" in section
    assert (HERE / "static" / "vendor" / "MANIFEST.json").is_file()
    labels = {label for _, label, _ in NAV}
    for page in ("Models", "Lineage", "Runs", "Evaluations", "API keys"):
        assert page in labels
