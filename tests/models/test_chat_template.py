from __future__ import annotations

import json
from itertools import groupby

import jinja2
import pytest
from chat_conversations import CONVERSATIONS, call

from forgeml.core.errors import InputError
from forgeml.models.chat_template import (
    parse_assistant_output,
    render,
    render_with_assistant_mask,
    tokenize_for_training,
)


@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("reasoning_effort", [None, "none", "high"])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_jinja_template_matches_python(
    tokenizer, name, reasoning_effort, add_generation_prompt
) -> None:
    messages, tools = CONVERSATIONS[name]
    kwargs = {"tools": tools, "add_generation_prompt": add_generation_prompt}
    if reasoning_effort is not None:  # also check the template's own default
        kwargs["reasoning_effort"] = reasoning_effort
    jinja = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert jinja == render(messages, **kwargs)


def test_layout_matches_mistral_v15() -> None:
    tool = {"type": "function", "function": {"name": "calc", "parameters": {}}}
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1", "tool_calls": [call("F1", "{}"), call("F2", {})]},
        {"role": "tool", "tool_call_id": "abcdefghi", "content": "R1"},
        {"role": "tool", "tool_call_id": "abcdefghi", "content": "R2"},
        {"role": "assistant", "reasoning_content": "T", "content": "A2"},
        {"role": "user", "content": "U2"},
    ]
    assert render(messages, tools=[tool], reasoning_effort="high") == (
        '<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{"type": "function", "function": '
        '{"name": "calc", "parameters": {}}}][/AVAILABLE_TOOLS][MODEL_SETTINGS]{"reasoning_effort": '
        '"high"}[/MODEL_SETTINGS][INST]U1[/INST]A1[TOOL_CALLS]F1[ARGS]{}[TOOL_CALLS]F2[ARGS]{}</s>'
        "[TOOL_RESULTS]R1[/TOOL_RESULTS][TOOL_RESULTS]R2[/TOOL_RESULTS][THINK]T[/THINK]A2</s>"
        "[INST]U2[/INST]"
    )
    assert '{"reasoning_effort": "none"}' in render(messages)
    assert "[AVAILABLE_TOOLS]" not in render(messages, tools=[])


def trained_runs(tokenizer, input_ids: list[int], labels: list[int]) -> list[str]:
    """Decode each run of consecutive trained tokens."""
    runs = groupby(zip(input_ids, labels, strict=True), key=lambda pair: pair[1] != -100)
    return [tokenizer.decode([token for token, _ in run]) for trained, run in runs if trained]


def test_mask_covers_exactly_the_assistant_turns(tokenizer) -> None:
    messages, tools = CONVERSATIONS["tools, several calls, results"]
    input_ids, labels = tokenize_for_training(tokenizer, messages, tools, "none")
    assert trained_runs(tokenizer, input_ids, labels) == [
        'Checking both.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Lyon"}[TOOL_CALLS]search[ARGS]{}</s>',
        "Paris 21°C, Lyon 19°C.</s>",
    ]
    assert all(label in (-100, token) for token, label in zip(input_ids, labels, strict=True))

    messages, _ = CONVERSATIONS["thinking"]
    input_ids, labels = tokenize_for_training(tokenizer, messages, None, "high")
    assert trained_runs(tokenizer, input_ids, labels) == [
        "[THINK]91 = 7 × 13.[/THINK]No: 7 × 13.</s>",
        "[THINK]No divisor up to 9.[/THINK]Yes.</s>",
        "[THINK]cut</s>",
    ]


def test_weight_zero_turns_are_not_trained(tokenizer) -> None:
    messages, _ = CONVERSATIONS["chunks, systems in place, weight 0, consecutive turns"]
    input_ids, labels = tokenize_for_training(tokenizer, messages)
    # Two consecutive trained turns form one run; the weight-0 answer is absent.
    assert trained_runs(tokenizer, input_ids, labels) == ["Bonjour, ça va ? 🙂</s>Encore.</s>"]
    assert tokenizer.decode(input_ids) == render(messages)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_mask_agrees_with_transformers_generation_blocks(tokenizer, name) -> None:
    messages, tools = CONVERSATIONS[name]
    input_ids, labels = tokenize_for_training(tokenizer, messages, tools, "high")
    encoded = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        reasoning_effort="high",
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assert encoded["input_ids"] == input_ids
    assert encoded["assistant_masks"] == [int(label != -100) for label in labels]
    text, spans = render_with_assistant_mask(messages, tools, "high")
    trained = [token for token, label in zip(input_ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(trained) == "".join(text[start:end] for start, end in spans)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_parse_assistant_output_round_trips(name) -> None:
    messages, tools = CONVERSATIONS[name]
    text, spans = render_with_assistant_mask(messages, tools)
    trained = [m for m in messages if m["role"] == "assistant" and m.get("weight", 1) != 0]
    assert len(trained) == len(spans)
    for message, (start, end) in zip(trained, spans, strict=True):
        content, reasoning, tool_calls = parse_assistant_output(text[start:end])
        chunks = message.get("content") or ""
        if isinstance(chunks, list):
            thoughts = [c["thinking"] for c in chunks if c["type"] == "thinking"]
            assert reasoning == "".join(thoughts)
            chunks = "".join(c["text"] for c in chunks if c["type"] == "text")
        else:
            assert reasoning == message.get("reasoning_content", message.get("reasoning"))
        assert content == chunks
        expected_calls = []
        for tool_call in message.get("tool_calls", []):
            arguments = tool_call["function"]["arguments"]
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            expected_calls.append(
                {"name": tool_call["function"]["name"], "arguments": arguments or "{}"}
            )
        assert [c["function"] for c in tool_calls] == expected_calls
        assert all(c["type"] == "function" and len(c["id"]) == 9 for c in tool_calls)


def test_parse_generated_text_edge_cases() -> None:
    assert parse_assistant_output("Plain answer</s>[INST]junk") == ("Plain answer", None, [])
    assert parse_assistant_output("[THINK]still thinking") == ("", "still thinking", [])
    content, reasoning, calls = parse_assistant_output("[TOOL_CALLS]lookup[ARGS]{not json")
    assert (content, reasoning) == ("", None)
    assert calls[0]["function"] == {"name": "lookup", "arguments": "{not json"}
    assert calls[0]["id"] != parse_assistant_output("[TOOL_CALLS]x[ARGS]{}")[2][0]["id"]


@pytest.mark.parametrize(
    ("messages", "kwargs", "field"),
    [
        ([{"role": "assistant", "content": "first"}], {}, "messages[0].role"),
        (
            [{"role": "user", "content": "u"}, {"role": "tool", "content": "t"}],
            {},
            "messages[1].role",
        ),
        ([{"role": "robot", "content": "r"}], {}, "messages[0].role"),
        ([{"content": "no role"}], {}, "messages[0].role"),
        (
            [
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
                {"role": "system", "content": "s"},
            ],
            {},
            "messages[2].role",
        ),
        ([{"role": "user", "content": "u"}], {"reasoning_effort": "medium"}, "reasoning_effort"),
        (
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": ""}],
            {},
            "messages[1]",
        ),
        (
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 2}],
            {},
            "messages[1].weight",
        ),
        # images are user content only
        (
            [
                {"role": "system", "content": [{"type": "image_url"}]},
                {"role": "user", "content": "u"},
            ],
            {},
            "messages[0].content",
        ),
        ([{"role": "user", "content": [{"type": "audio"}]}], {}, "messages[0].content"),
    ],
)
def test_invalid_conversations_are_rejected(messages, kwargs, field) -> None:
    with pytest.raises(InputError) as error:
        render(messages, **kwargs)
    assert error.value.field == field


def test_jinja_rejects_unknown_reasoning_effort(tokenizer) -> None:
    with pytest.raises(jinja2.TemplateError):
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "u"}], tokenize=False, reasoning_effort="low"
        )


def test_tokenize_for_training_needs_our_control_tokens(tokenizer, corpus) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(InputError, match="control tokens"):
        tokenize_for_training(plain, [{"role": "user", "content": "u"}])
