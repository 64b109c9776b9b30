"""Training-data formats: detection, shape and semantic checks, normalisation, jsonl reports."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from forgeml.core.errors import InputError
from forgeml.data.formats import (
    check_record,
    detect_format,
    ensure_valid_jsonl,
    iter_normalized,
    normalize_record,
    validate_jsonl,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tool_call(call_id: str = "call_1", arguments: Any = '{"city": "Paris"}') -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


def tool_chat() -> dict[str, Any]:
    """An OpenAI chat fine-tuning line with a tool call, as their docs show it."""
    return copy.deepcopy(
        {
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "tool_calls": [tool_call()]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                {"role": "assistant", "content": "It is 21 °C in Paris."},
            ],
            "tools": [WEATHER_TOOL],
        }
    )


def problems(record: Any, expected_format: str | None = None) -> list[str]:
    return [str(problem) for problem in check_record(record, expected_format)[2]]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# -- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"text": "a"}, "text"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "chat",
        ),
        ({"prompt": "q", "completion": "a"}, "chat"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference"),
        (
            {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []},
            "preference",
        ),
        ({"prompt": "q", "answer": "42"}, "prompt"),
        ({"messages": [{"role": "user", "content": "q"}]}, "prompt"),
    ],
)
def test_detect_format(record: dict[str, Any], expected: str) -> None:
    assert detect_format(record) == expected


def test_detect_format_names_the_fields_it_found() -> None:
    with pytest.raises(InputError, match="got fields: body, id"):
        detect_format({"body": "x", "id": 1})


# -- chat -------------------------------------------------------------------------------------


def test_openai_tool_chat_is_accepted_and_normalised() -> None:
    canonical = normalize_record(tool_chat())
    assert canonical["format"] == "chat"
    assert canonical["tools"] == [WEATHER_TOOL]
    call_turn = canonical["messages"][2]
    assert call_turn == {
        "role": "assistant",
        "content": None,
        "tool_calls": [tool_call()],
        "weight": 1,
    }
    assert canonical["messages"][3] == {
        "role": "tool",
        "content": '{"temp": 21}',
        "tool_call_id": "call_1",
    }


def test_mistral_fine_tuning_line_is_accepted_as_is() -> None:
    # Mistral's format: 9-character call ids, arguments as a JSON string, weight 0 to skip a turn.
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "weight": 0},
            {"role": "assistant", "tool_calls": [tool_call("TX92Jm8Zi")]},
            {"role": "tool", "content": "21", "tool_call_id": "TX92Jm8Zi"},
            {"role": "assistant", "content": "21 °C."},
        ],
        "tools": [WEATHER_TOOL],
    }
    canonical = normalize_record(record, "chat")
    assert [m.get("weight") for m in canonical["messages"]] == [None, 0, 1, None, 1]


def test_bad_role_is_reported_like_the_spec_says(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = copy.deepcopy(good)
    bad["messages"].insert(1, {"role": "bot", "content": "?"})
    path = write_jsonl(tmp_path / "train.jsonl", [good] * 6 + [bad])
    report = validate_jsonl(path, expected_format="chat")
    (error,) = report.errors
    assert str(error) == (
        f"{path}:7: messages[1].role: expected one of system, user, assistant, tool; got 'bot'"
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["messages"][3].update(tool_call_id="call_9"),
            "messages[3].tool_call_id: 'call_9' does not match an open tool call of "
            "messages[2] (open: 'call_1')",
        ),
        (
            lambda r: r["messages"].pop(2),
            "messages[2]: a tool message must follow an assistant message with tool_calls",
        ),
        (
            lambda r: r["messages"].pop(3),
            "messages[2].tool_calls[0]: tool call 'call_1' has no tool message answering it",
        ),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="{'city': 1}"),
            "messages[2].tool_calls[0].function.arguments: not valid JSON",
        ),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='["Paris"]'),
            "messages[2].tool_calls[0].function.arguments: expected a JSON object; got a list",
        ),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name="get_time"),
            "messages[2].tool_calls[0].function.name: 'get_time' is not among the record's tools",
        ),
        (
            lambda r: r["messages"][3].pop("tool_call_id"),
            "messages[3].tool_call_id: required for a tool message",
        ),
        (
            lambda r: r["messages"][1].update(tool_calls=[tool_call()]),
            "messages[1].tool_calls: only assistant messages have tool_calls; this is user",
        ),
        (
            lambda r: r["messages"][4].update(content="   "),
            "messages[4]: an assistant message needs content or tool_calls",
        ),
        (
            lambda r: r["messages"][1].update(content=""),
            "messages[1].content: empty text",
        ),
        (
            lambda r: r["messages"][1].update(contnet="typo"),
            "messages[1].contnet: unknown field (allowed: role, content,",
        ),
        (
            lambda r: r["tools"][0]["function"].update(parameters={"type": "banana"}),
            "tools[0].function.parameters: not a valid JSON schema",
        ),
    ],
)
def test_chat_semantic_and_shape_errors(mutate: Any, expected: str) -> None:
    record = tool_chat()
    mutate(record)
    found = problems(record, "chat")
    assert any(p.startswith(expected) for p in found), found


def test_tool_call_arguments_as_object_become_a_json_string() -> None:
    record = tool_chat()
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}
    canonical = normalize_record(record)
    arguments = canonical["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"city": "Paris"}


def test_trailing_tool_call_is_fine_for_training() -> None:
    record = tool_chat()
    del record["messages"][3:]
    assert problems(record) == []


def test_chat_needs_an_assistant_turn_to_train_on() -> None:
    user_only = {"messages": [{"role": "user", "content": "hello"}]}
    assert problems(user_only, "chat") == ["messages: no assistant message: nothing to train on"]
    silenced = {
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi", "weight": 0},
        ]
    }
    assert problems(silenced) == [
        "messages: every assistant message has weight 0: nothing to train on"
    ]


def test_reasoning_variants_normalise_to_reasoning_content() -> None:
    base = {"messages": [{"role": "user", "content": "2+2?"}]}
    variants = [
        {"role": "assistant", "content": "4", "reasoning_content": "add"},
        {"role": "assistant", "content": "4", "thinking": "add"},
        {  # Mistral's content chunks
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "add"}]},
                {"type": "text", "text": "4"},
            ],
        },
    ]
    for variant in variants:
        canonical = normalize_record({"messages": [*base["messages"], variant]})
        assert canonical["messages"][1] == {
            "role": "assistant",
            "content": "4",
            "reasoning_content": "add",
            "weight": 1,
        }
    both = {"role": "assistant", "content": "4", "thinking": "a", "reasoning_content": "b"}
    assert problems({"messages": [*base["messages"], both]}) == [
        "messages[1]: give reasoning_content or thinking, not both"
    ]
    on_user = {"messages": [{"role": "user", "content": "q", "reasoning_content": "hm"}]}
    assert "only assistant messages have reasoning_content" in problems(on_user, "chat")[0]


def test_text_parts_are_joined_and_bad_images_named() -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    record = {
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "hi"}]
    }
    assert normalize_record(record)["messages"][0]["content"] == "Hello there"
    parts.append({"type": "image_url", "image_url": {"url": "x"}})
    assert problems(record) == [
        "messages[0]: content[2]: an image must be a base64 data URL (data:image/png;base64,...)"
    ]
    parts[2] = {"type": "audio", "audio": "x"}
    assert problems(record) == [
        "messages[0]: content[2]: only text and image parts are supported; got 'audio'"
    ]


def test_prompt_completion_is_a_chat() -> None:
    canonical = normalize_record({"prompt": "Capital of France?", "completion": "Paris."})
    assert canonical["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris.", "weight": 1},
    ]


# -- preference ------------------------------------------------------------------------------


def test_trl_and_openai_preference_shapes_normalise_the_same() -> None:
    trl = {"prompt": "Is it cold?", "chosen": "About 10 °C.", "rejected": "Dunno."}
    openai = {
        "input": {"messages": [{"role": "user", "content": "Is it cold?"}], "tools": []},
        "preferred_output": [{"role": "assistant", "content": "About 10 °C."}],
        "non_preferred_output": [{"role": "assistant", "content": "Dunno."}],
    }
    expected = {
        "format": "preference",
        "prompt": [{"role": "user", "content": "Is it cold?"}],
        "chosen": [{"role": "assistant", "content": "About 10 °C."}],
        "rejected": [{"role": "assistant", "content": "Dunno."}],
    }
    assert normalize_record(trl) == expected
    assert normalize_record(openai) == expected


def test_implicit_prompt_is_the_shared_prefix() -> None:
    question = {"role": "user", "content": "Is it cold?"}
    record = {
        "chosen": [question, {"role": "assistant", "content": "Yes, wear a coat."}],
        "rejected": [question, {"role": "assistant", "content": "No idea."}],
    }
    canonical = normalize_record(record, "preference")
    assert canonical["prompt"] == [question]
    assert canonical["chosen"] == [{"role": "assistant", "content": "Yes, wear a coat."}]
    record["rejected"][0] = {"role": "user", "content": "Is it hot?"}
    assert problems(record) == [
        "no prompt: give one, or start chosen and rejected with the same messages"
    ]


def test_preference_errors_use_the_files_own_field_names() -> None:
    same = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "a"}],
    }
    assert problems(same) == [
        "non_preferred_output: identical to the chosen answer: nothing to learn"
    ]
    bad_role = copy.deepcopy(same)
    bad_role["input"]["messages"][0]["role"] = "human"
    assert problems(bad_role)[0].startswith("input.messages[0].role: expected one of")
    ends_with_answer = {
        "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "chosen": "b",
        "rejected": "c",
    }
    assert problems(ends_with_answer) == [
        "prompt: a prompt must end with a user or tool message; it ends with assistant"
    ]
    assert problems({"prompt": "q", "chosen": 5, "rejected": "c"}) == [
        "chosen: expected a string or a list of messages; got a number"
    ]


# -- prompt-only ------------------------------------------------------------------------------


def test_prompt_records_keep_their_reference_fields() -> None:
    canonical = normalize_record({"prompt": "2+2?", "answer": "4", "reference": {"unit": None}})
    assert canonical == {
        "format": "prompt",
        "prompt": [{"role": "user", "content": "2+2?"}],
        "extra": {"answer": "4", "reference": {"unit": None}},
    }
    as_messages = normalize_record(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
        },
        "prompt",
    )
    assert [m["role"] for m in as_messages["prompt"]] == ["system", "user"]


def test_empty_text_is_rejected() -> None:
    assert problems({"text": "  \n"}) == ["text: empty text"]
    assert problems({"text": None}) == ["text: expected a string; got null"]


# -- whole files ------------------------------------------------------------------------------


def test_report_counts_caps_errors_and_flags_mixed_formats(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [
        chat,
        chat,
        "{broken",
        {"text": "plain text"},
        {"messages": [{"role": "user", "content": "only"}]},
    ]
    lines += [{"messages": []}] * 30
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)
    report = validate_jsonl(path, max_errors=5)
    assert report.format == "chat"
    assert report.records == 35
    assert report.valid == 2
    assert report.error_count == 33
    assert len(report.errors) == 5
    assert report.counts["text"] == 1
    messages = [str(e) for e in report.errors[:4]]
    assert messages[0].startswith(f"{path}:3: not valid JSON")
    assert messages[1] == f"{path}:4: expected a chat record like line 1; got a text record"
    assert messages[2] == f"{path}:5: messages: no assistant message: nothing to train on"
    assert messages[3] == f"{path}:6: messages: must not be empty"
    with pytest.raises(InputError) as raised:
        report.raise_for_errors()
    assert "33 problem(s)" in str(raised.value)
    assert "... and 28 more" in str(raised.value)
    assert raised.value.hint is not None


def test_valid_gz_file_passes_and_streams_canonical_records(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl.gz"
    record = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("\ufeff" + json.dumps(record) + "\n\n" + json.dumps(record) + "\n")
    report = ensure_valid_jsonl(path, "preference")
    assert (report.ok, report.valid, dict(report.counts)) == (True, 2, {"preference": 2})
    assert "2 of 2 records valid" in report.summary()
    records = list(iter_normalized(path, "preference"))
    assert len(records) == 2
    assert records[0]["chosen"] == [{"role": "assistant", "content": "good"}]


def test_empty_file_and_non_utf8_lines_are_errors(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert [str(e) for e in validate_jsonl(empty).errors] == [f"{empty}: the file has no records"]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps({"text": "Café"}, ensure_ascii=False).encode("cp1252") + b"\n")
    (error,) = validate_jsonl(latin).errors
    assert str(error) == f"{latin}:1: not valid UTF-8 (byte 13)"


def test_iter_normalized_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "ok"}, {"text": ""}])
    stream = iter_normalized(path, "text")
    assert next(stream) == {"format": "text", "text": "ok"}
    with pytest.raises(InputError) as raised:
        next(stream)
    assert str(raised.value) == f"{path}:2: text: empty text"


def test_missing_file_or_unknown_format_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        validate_jsonl(tmp_path / "absent.jsonl")
    path = write_jsonl(tmp_path / "t.jsonl", [])
    with pytest.raises(InputError, match="expected_format: expected one of text, chat"):
        validate_jsonl(path, expected_format="sft")
