"""Every recipe that ships in recipes/ is valid: stages, parameters, step references and
example files, as `forgeml run --dry-run` would check them."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgeml.core.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "src" / "forgeml" / "recipes"
# Variables a recipe cannot default (the user's own paths).
REQUIRED = {"continued-pretraining.yaml": {"base_path": "/models/my-base"}}


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipe_is_valid(path, tmp_path):
    variables = {"data": str(tmp_path), **REQUIRED.get(path.name, {})}
    loaded = load_recipe(path, variables=variables)
    assert loaded.recipe.steps
    defaults = loaded.recipe.vars.values()
    for value in [v for d in defaults for v in (d if isinstance(d, list) else [d])]:
        if isinstance(value, str) and value.startswith("${recipe_dir}/examples/"):
            example = RECIPES / value.removeprefix("${recipe_dir}/")
            assert example.is_file(), f"{path.name}: missing example file {example}"


def test_a_recipe_variable_without_a_value_is_named():
    with pytest.raises(Exception, match=r"base_path"):
        load_recipe(RECIPES / "continued-pretraining.yaml")


def test_variable_defaults_are_resolved_before_use():
    loaded = load_recipe(RECIPES / "sft-dpo-from-openai-jsonl.yaml")
    chats = next(step for step in loaded.recipe.steps if step.name == "chats")
    assert chats.with_["paths"] == [str(RECIPES / "examples" / "support-chats.jsonl")]
