"""The token guide, driven by uniform random choices (harsher than any model).

Whatever the sampler picks among allowed tokens, a constrained completion must end
(with </s>) inside its token budget as JSON that parses and validates.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from serving_fixtures import MODEL_NAME
from transformers import AutoTokenizer

from forgeml.core.errors import InputError
from forgeml.models import chat_template as ct
from forgeml.serve.constrained.guide import OutputGuide, OutputSpec
from forgeml.serve.constrained.json_schema import json_grammar
from forgeml.serve.constrained.tools import tool_call_grammar, tool_parameters
from forgeml.serve.constrained.vocabulary import GuideVocabulary

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "score": {"type": "number"},
            "member": {"type": "boolean"},
        },
        "required": ["name", "age", "score", "member"],
        "additionalProperties": False,
    },
    "enum_const_array": {
        "type": "object",
        "properties": {
            "kind": {"const": "ticket"},
            "labels": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}, "minItems": 1},
            "ids": {"type": "array", "items": {"type": "integer"}, "maxItems": 4},
        },
        "required": ["kind", "labels", "ids"],
    },
    "nested_nullable_ref": {
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/address"},
            "work": {"anyOf": [{"$ref": "#/$defs/address"}, {"type": "null"}]},
            "note": {"type": "string", "maxLength": 20},
        },
        "required": ["home", "work"],
    },
    "top_level_array": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
}


@pytest.fixture(scope="module")
def vocabulary(serve_workspace):
    path = serve_workspace.root / serve_workspace.registry.resolve(MODEL_NAME).path
    return GuideVocabulary(AutoTokenizer.from_pretrained(path))


def drive(vocabulary, spec, max_tokens, seed):
    """Sample uniformly among allowed tokens; return (text, finished with </s>)."""
    guide = OutputGuide(vocabulary, spec, max_tokens)
    generator = torch.Generator().manual_seed(seed)
    tokens = []
    for remaining in range(max_tokens, 0, -1):
        allowed = guide.allowed(remaining)
        allowed = np.ones(vocabulary.size, dtype=bool) if allowed is None else allowed
        token = int(torch.multinomial(torch.from_numpy(allowed).float(), 1, generator=generator))
        guide.advance(token)
        if token == vocabulary.eos_id:
            return "".join(vocabulary.texts[t] for t in tokens), True, guide
        tokens.append(token)
    return "".join(vocabulary.texts[t] for t in tokens), False, guide


@pytest.mark.parametrize("name", SCHEMAS)
def test_random_sampling_always_yields_valid_json(vocabulary, name):
    schema = SCHEMAS[name]
    spec = OutputSpec(grammar=json_grammar(schema, "schema"))
    for seed in range(6):
        text, finished, _ = drive(vocabulary, spec, 80, seed)
        assert finished, text
        jsonschema.validate(json.loads(text), schema)
        assert "\n" not in text  # no free whitespace: the template's one-line JSON layout


def test_a_short_budget_still_closes(vocabulary):
    spec = OutputSpec(grammar=json_grammar(SCHEMAS["flat"], "schema"))
    for seed in range(4):
        text, finished, _ = drive(vocabulary, spec, 40, seed)
        assert finished, text
        jsonschema.validate(json.loads(text), SCHEMAS["flat"])


def test_reasoning_budget_then_answer(vocabulary):
    spec = OutputSpec(reasoning=True, reasoning_budget=4)
    text, _, guide = drive(vocabulary, spec, 20, seed=0)
    assert text.startswith(ct.THINK) and ct.END_THINK in text
    assert guide.reasoning_tokens == 4
    content, reasoning, calls = ct.parse_assistant_output(text)
    assert reasoning and not calls and ct.THINK not in content


def test_reasoning_off_and_no_tools_keep_control_tokens_out(vocabulary):
    for seed in range(5):
        text, _, _ = drive(vocabulary, OutputSpec(), 30, seed)
        assert not any(token in text for token in ct.CONTROL_TOKENS), text


def test_auto_tool_choice_switches_the_grammar_on(vocabulary):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}},
                    "required": ["q"],
                },
            },
        }
    ]
    grammar = tool_call_grammar(
        tool_parameters(tools), vocabulary.id(ct.TOOL_CALLS), vocabulary.id(ct.ARGS)
    )
    guide = OutputGuide(vocabulary, OutputSpec(tool_grammar=grammar), 60)
    assert bool(guide.allowed(60)[vocabulary.id(ct.TOOL_CALLS)])  # the model may call
    guide.advance(vocabulary.id(ct.TOOL_CALLS))
    generator = torch.Generator().manual_seed(1)
    tokens = [vocabulary.id(ct.TOOL_CALLS)]
    for remaining in range(59, 0, -1):
        allowed = torch.from_numpy(guide.allowed(remaining)).float()
        token = int(torch.multinomial(allowed, 1, generator=generator))
        guide.advance(token)
        if token == vocabulary.eos_id:
            break
        tokens.append(token)
    _, _, calls = ct.parse_assistant_output("".join(vocabulary.texts[t] for t in tokens))
    assert calls and all(call["function"]["name"] == "lookup" for call in calls)
    for call in calls:
        jsonschema.validate(
            json.loads(call["function"]["arguments"]), tools[0]["function"]["parameters"]
        )


def test_bad_schemas_and_tools_are_input_errors():
    with pytest.raises(InputError, match="invalid JSON schema"):
        json_grammar({"type": "nonsense"}, "response_format")
    with pytest.raises(InputError, match="tool name"):
        tool_parameters([{"type": "function", "function": {"name": "has space"}}])
    with pytest.raises(InputError, match="two tools"):
        tool_parameters([{"function": {"name": "a"}}, {"function": {"name": "a"}}])
