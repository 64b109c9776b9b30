"""Fuzzing recipes: the shipped recipes, mutated at random (a value replaced, a key
dropped or misspelt, a type changed), load either cleanly or with an InputError that
names the recipe file and line; nothing else escapes."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from fuzz_settings import fuzz
from hypothesis import given
from hypothesis import strategies as st

from forgeml.core.errors import InputError
from forgeml.core.recipes import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "src/forgeml/recipes").glob("*.yaml"))
VARIABLES = {name: "/tmp/x" for name in ["base_path", "base", "chats", "corpus", "data", "model",
             "name", "preferences", "schema", "suites"]}  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["${data}", "${nope}", "${", "tiny", "data.ingest", "train.sft", "-1"])
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


def paths_in(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths_in(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths_in(child, (*prefix, index))


@st.composite
def mutated_recipes(draw):
    recipe = yaml.safe_load(draw(st.sampled_from(RECIPES)).read_text())
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths_in(recipe))[1:]))
        parent = recipe
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "misspell"]))
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[str(where[-1]) + draw(st.sampled_from(["s", "_", "x"]))] = parent.pop(where[-1])
    return copy.deepcopy(recipe)


@fuzz
@given(recipe=mutated_recipes())
def test_a_mutated_recipe_loads_or_names_its_file_and_line(tmp_path_factory, recipe):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    try:
        load_recipe(path, variables=VARIABLES)
    except InputError as exc:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", exc.message), exc.message


@fuzz
@given(text=st.text(max_size=200))
def test_any_text_as_a_recipe_is_refused_with_a_location(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path, variables=VARIABLES)
    except InputError as exc:
        assert exc.message.startswith(str(path)), exc.message
