"""A model card shows the gate verdicts recorded when the model was promoted (the audit
log), not a re-evaluation afterwards: once a model holds @prod, `must_beat prod` would
compare it with itself, and a later change of the gates would rewrite its history."""

from __future__ import annotations

import subprocess
import sys

import yaml
from eval_fixtures import run_eval

FORGEML = [sys.executable, "-m", "forgeml"]


def forgeml(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FORGEML, "--workspace", str(world.workspace.root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def set_gates(world, gates: dict) -> None:
    settings = yaml.safe_load(world.workspace.config_path.read_text())
    world.workspace.config_path.write_text(yaml.safe_dump({**settings, "gates": gates}))


def gate_rows(card: str) -> dict[str, str]:
    """{gate: result} from the card's recorded gate tables."""
    section = card.split("### Gates (recorded at promotion)", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {row[0].removeprefix("| "): row[1] for row in rows if row[0] != "| gate"}


def test_card_shows_the_gates_recorded_at_promotion(world):
    run_eval(world, 1)
    run_eval(world, 2)
    card = forgeml(world, "models", "card", "helpdesk:1")
    assert card.returncode == 0, card.stderr
    assert "No promotion of helpdesk:1 recorded" in card.stdout

    # helpdesk:1 passes the perplexity gate; must_beat has no @prod to beat yet: skipped.
    set_gates(world, {"max": {"perplexity": 1e9}, "must_beat": "prod"})
    promoted = forgeml(world, "models", "promote", "helpdesk:1", "--alias", "prod")
    assert promoted.returncode == 0, promoted.stderr

    # The gates tighten afterwards: helpdesk:2 fails one and is refused.
    set_gates(world, {"max": {"perplexity": 1.0}, "must_beat": "prod"})
    refused = forgeml(world, "models", "promote", "helpdesk:2", "--alias", "prod")
    assert refused.returncode == 2 and "max perplexity" in refused.stderr

    first = forgeml(world, "models", "card", "helpdesk:1")
    assert first.returncode == 0, first.stderr
    # As recorded at promotion: a re-evaluation now would fail the tightened gate, and
    # must_beat would compare helpdesk:1 (now @prod) with itself.
    assert gate_rows(first.stdout) == {
        "max perplexity": "passed",
        "must_beat prod score": "skipped",
    }, first.stdout
    assert "promoted → helpdesk@prod" in first.stdout
    assert "no model holds @prod yet: nothing to beat" in first.stdout

    second = forgeml(world, "models", "card", "helpdesk:2")
    assert second.returncode == 0, second.stderr
    rows = gate_rows(second.stdout)
    assert rows["max perplexity"] == "failed", second.stdout
    assert "refused → helpdesk@prod" in second.stdout
