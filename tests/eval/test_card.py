"""Model cards hold what the registry knows: data hashes, training params, evals, gates."""

from __future__ import annotations

import json

import yaml
from eval_fixtures import cli, run_eval

from forgeml.core.workspace import Workspace
from forgeml.eval.card import TODO, model_card


def test_card_from_the_registry(world, tmp_path):
    result = run_eval(world, 1)
    data = json.loads(
        (world.workspace.root / result.outputs["eval"].path / "eval.json").read_text()
    )
    settings = yaml.safe_load(world.workspace.config_path.read_text())
    world.workspace.config_path.write_text(
        yaml.safe_dump({**settings, "gates": {"max": {"perplexity": 1e9}}})
    )
    promoted = cli(world, "models", "promote", "helpdesk:1", "--alias", "prod")
    assert promoted.exit_code == 0, promoted.output

    out = tmp_path / "card.md"
    written = cli(world, "models", "card", "helpdesk:1", "-o", str(out))
    assert written.exit_code == 0, written.output
    card = out.read_text()
    # The CLI reads forgeml.yaml afresh; `world.workspace` cached the settings before.
    assert card == model_card(Workspace.open(world.workspace.root), "helpdesk:1")
    assert card.startswith("# Model card: helpdesk:1")
    assert world.models[1].sha256 in card and "helpdesk@prod" in card

    # Lineage: the dataset and its raw files by hash, the assessment's numbers, the mixture.
    assert world.dataset.sha256 in card and world.mixture.ref in card
    assert "topic-0.txt" in card and "duplicate_rate: 0.125" in card
    # Training: the run's parameters and seed, and training.json.
    assert "### evaltest.model" in card and "| learning_rate | 0.003 |" in card
    assert "| steps | 3 |" in card and "| final val_loss | 5.5 |" in card
    # Evaluation: the numbers eval.json holds, and the gate verdicts given at promotion.
    assert result.outputs["eval"].ref in card
    assert f"| perplexity | {data['metrics']['perplexity']:.4g} |" in card
    assert "| max perplexity | passed |" in card
    # Reproducibility, and the owner's placeholders left visible.
    assert "forgeml reproduce " + world.models[1].ref in card and "| torch |" in card
    assert card.count(TODO) == 3 and "## License" in card


def test_card_of_an_unevaluated_model_says_so(world):
    card = cli(world, "--json", "models", "card", "helpdesk:2").json()["markdown"]
    assert "Not evaluated yet: `forgeml eval run helpdesk" in card
    assert "seed 1" in card  # helpdesk:2 was made with seed 1
