"""Tell a record's format, check it, and turn it into the canonical dict the stages read.

Canonical records (what `normalize_record` returns):

    {"format": "text", "text": str}
    {"format": "chat", "messages": [message, ...], "tools"?: [...]}
    {"format": "preference", "prompt": [message, ...], "chosen": [...], "rejected": [...],
     "tools"?: [...]}
    {"format": "prompt", "prompt": [message, ...], "tools"?: [...], "extra": {...}}
    {"format": "classification", "text" | "messages": ..., "labels": {set: [label, ...]},
     "multi_label": [set, ...]}

A canonical message is OpenAI-style: `role`, `content` (a string; None only for an
assistant message that only calls tools), and where they apply `tool_calls` (with
`arguments` as a JSON string), `tool_call_id`, `name`, `reasoning_content`. Chat assistant
messages also carry `weight` (1 unless the file said 0). `extra` holds a prompt record's
other top-level fields (reference answers and the like) for the reward functions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from forgeml.core.errors import InputError
from forgeml.data.formats.checks import (
    Problem,
    Turn,
    check_conversation,
    check_prompt_end,
    check_response_start,
    check_trainable_chat,
    problems_from,
)
from forgeml.data.formats.schema import (
    ChatRecord,
    ClassificationRecord,
    Message,
    MessagesPromptRecord,
    OpenAIPreferenceRecord,
    PreferenceRecord,
    PromptCompletionRecord,
    PromptRecord,
    TextRecord,
    Tool,
    label_problem,
    type_name,
)

FORMATS = ("text", "chat", "preference", "prompt", "classification")

SHAPES: dict[str, type[BaseModel]] = {
    "text": TextRecord,
    "chat": ChatRecord,
    "prompt_completion": PromptCompletionRecord,
    "preference": PreferenceRecord,
    "openai_preference": OpenAIPreferenceRecord,
    "prompt": PromptRecord,
    "messages_prompt": MessagesPromptRecord,
    "classification": ClassificationRecord,
}
FORMAT_OF_SHAPE = {
    "text": "text",
    "chat": "chat",
    "prompt_completion": "chat",
    "preference": "preference",
    "openai_preference": "preference",
    "prompt": "prompt",
    "messages_prompt": "prompt",
    "classification": "classification",
}
_UNKNOWN = (
    "cannot tell the format: expected a 'text', 'messages', 'prompt' or 'chosen'/'rejected' "
    "field, or OpenAI's 'input'/'preferred_output'"
)


def detect_format(record: Any) -> str:
    """ "text", "chat", "preference" or "prompt"; raises `InputError` when it is none of them.

    `messages` without any assistant turn is a prompt (for RL), with one a chat (for SFT).
    """
    return FORMAT_OF_SHAPE[_detect_shape(record)]


def _detect_shape(record: Any) -> str:
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object; got {type_name(record)}")
    keys = record.keys()
    if "labels" in keys and keys & {"text", "messages"}:
        return "classification"
    if keys & {"input", "preferred_output", "non_preferred_output"}:
        return "openai_preference"
    if keys & {"chosen", "rejected"}:
        return "preference"
    if "messages" in keys:
        messages = record["messages"]
        has_assistant = isinstance(messages, list) and any(
            isinstance(m, dict) and m.get("role") == "assistant" for m in messages
        )
        return "chat" if has_assistant else "messages_prompt"
    if "prompt" in keys:
        return "prompt_completion" if "completion" in keys else "prompt"
    if "text" in keys:
        return "text"
    present = ", ".join(sorted(map(str, keys))) or "none"
    raise InputError(f"{_UNKNOWN}; got fields: {present}")


def _shape_for(record: dict[str, Any], expected_format: str) -> str:
    """The shape to validate against when the caller says which format it needs."""
    keys = record.keys()
    if expected_format == "chat":
        return "prompt_completion" if "messages" not in keys and "prompt" in keys else "chat"
    if expected_format == "preference":
        return "openai_preference" if keys & {"input", "preferred_output"} else "preference"
    if expected_format == "prompt":
        return "messages_prompt" if "messages" in keys and "prompt" not in keys else "prompt"
    if expected_format == "classification":
        return "classification"
    return "text"


def check_format_name(expected_format: str | None) -> None:
    if expected_format is not None and expected_format not in FORMATS:
        raise InputError(
            f"expected one of {', '.join(FORMATS)}; got {expected_format!r}",
            field="expected_format",
        )


def check_record(
    record: Any, expected_format: str | None = None
) -> tuple[str | None, dict[str, Any] | None, list[Problem]]:
    """(format, canonical record, problems). The canonical record is None if problems exist.

    With `expected_format`, the record is checked as that format, so the errors say what
    that format needs rather than "this looks like another format".
    """
    check_format_name(expected_format)
    if not isinstance(record, dict):
        return None, None, [Problem(None, f"expected a JSON object; got {type_name(record)}")]
    if expected_format is None:
        try:
            shape = _detect_shape(record)
        except InputError as error:
            return None, None, [Problem(None, error.detail)]
    else:
        shape = _shape_for(record, expected_format)
    model = SHAPES[shape]
    try:
        parsed = model.model_validate(record)
    except ValidationError as error:
        return FORMAT_OF_SHAPE[shape], None, problems_from(error, model)
    canonical, problems = _CANONICAL[shape](parsed)
    return FORMAT_OF_SHAPE[shape], (None if problems else canonical), problems


def normalize_record(record: Any, expected_format: str | None = None) -> dict[str, Any]:
    """The canonical dict for one record; raises `InputError` listing what is wrong."""
    _, canonical, problems = check_record(record, expected_format)
    if canonical is None:
        first = problems[0]
        rest = "".join(f"\n{problem}" for problem in problems[1:])
        raise InputError(first.message + rest, field=first.field)
    return canonical


# -- canonical shapes -----------------------------------------------------------------


def message_dict(message: Message, *, weighted: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role in ("system", "user", "tool") and out["content"] is None:
        out["content"] = ""
    if message.reasoning_content is not None:
        out["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    if weighted and message.role == "assistant":
        out["weight"] = 1 if message.weight is None else message.weight
    return out


def _turns(messages: list[Message], path: str) -> list[Turn]:
    return [(f"{path}[{index}]", message) for index, message in enumerate(messages)]


def _with_tools(canonical: dict[str, Any], tools: list[Tool] | None) -> dict[str, Any]:
    if tools:
        canonical["tools"] = [tool.model_dump(exclude_none=True) for tool in tools]
    return canonical


def _text(record: TextRecord) -> tuple[dict[str, Any], list[Problem]]:
    return {"format": "text", "text": record.text}, []


def _chat_from(
    turns: list[Turn], tools: list[Tool] | None, field: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems = check_trainable_chat(turns, field) + check_conversation(turns, tools)
    messages = [message_dict(message, weighted=True) for _, message in turns]
    return _with_tools({"format": "chat", "messages": messages}, tools), problems


def _chat(record: ChatRecord) -> tuple[dict[str, Any], list[Problem]]:
    return _chat_from(_turns(record.messages, "messages"), record.tools, "messages")


def _prompt_completion(record: PromptCompletionRecord) -> tuple[dict[str, Any], list[Problem]]:
    prompt = _turns(record.prompt, "prompt")
    completion = _turns(record.completion, "completion")
    problems = check_prompt_end(prompt, "prompt") + check_response_start(completion, "completion")
    canonical, more = _chat_from(prompt + completion, record.tools, "completion")
    return canonical, problems + more


def _preference_from(
    prompt: list[Turn],
    chosen: list[Turn],
    rejected: list[Turn],
    tools: list[Tool] | None,
    fields: tuple[str, str, str],
) -> tuple[dict[str, Any], list[Problem]]:
    prompt_field, chosen_field, rejected_field = fields
    problems = []
    if not prompt:
        problems.append(Problem(prompt_field, "the prompt is empty"))
    problems += check_prompt_end(prompt, prompt_field)
    for turns, field in ((chosen, chosen_field), (rejected, rejected_field)):
        problems += check_response_start(turns, field)
        problems += check_conversation(prompt + turns, tools)
    chosen_dicts = [message_dict(m) for _, m in chosen]
    rejected_dicts = [message_dict(m) for _, m in rejected]
    if chosen_dicts == rejected_dicts:
        problems.append(Problem(rejected_field, "identical to the chosen answer: nothing to learn"))
    # A conversation checked twice (prompt + chosen, prompt + rejected) repeats prompt errors.
    problems = list(dict.fromkeys(problems))
    canonical = {
        "format": "preference",
        "prompt": [message_dict(m) for _, m in prompt],
        "chosen": chosen_dicts,
        "rejected": rejected_dicts,
    }
    return _with_tools(canonical, tools), problems


def _preference(record: PreferenceRecord) -> tuple[dict[str, Any], list[Problem]]:
    chosen = _turns(record.chosen, "chosen")
    rejected = _turns(record.rejected, "rejected")
    if record.prompt is not None:
        prompt = _turns(record.prompt, "prompt")
    else:  # implicit prompt: the messages chosen and rejected share from the start
        shared = 0
        while (
            shared < min(len(chosen), len(rejected)) - 1
            and chosen[shared][1] == rejected[shared][1]
        ):
            shared += 1
        if shared == 0:
            no_prompt = "no prompt: give one, or start chosen and rejected with the same messages"
            return {}, [Problem(None, no_prompt)]
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    fields = ("prompt", "chosen", "rejected")
    return _preference_from(prompt, chosen, rejected, record.tools, fields)


def _openai_preference(record: OpenAIPreferenceRecord) -> tuple[dict[str, Any], list[Problem]]:
    return _preference_from(
        _turns(record.input.messages, "input.messages"),
        _turns(record.preferred_output, "preferred_output"),
        _turns(record.non_preferred_output, "non_preferred_output"),
        record.input.tools,
        ("input.messages", "preferred_output", "non_preferred_output"),
    )


def _prompt_from(
    turns: list[Turn], tools: list[Tool] | None, extra: dict[str, Any] | None, field: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems = check_prompt_end(turns, field) + check_conversation(turns, tools)
    canonical = {"format": "prompt", "prompt": [message_dict(m) for _, m in turns]}
    _with_tools(canonical, tools)
    canonical["extra"] = dict(extra or {})
    return canonical, problems


def _prompt(record: PromptRecord) -> tuple[dict[str, Any], list[Problem]]:
    return _prompt_from(_turns(record.prompt, "prompt"), record.tools, record.model_extra, "prompt")


def _messages_prompt(record: MessagesPromptRecord) -> tuple[dict[str, Any], list[Problem]]:
    turns = _turns(record.messages, "messages")
    return _prompt_from(turns, record.tools, record.model_extra, "messages")


def _classification(record: ClassificationRecord) -> tuple[dict[str, Any], list[Problem]]:
    labels = record.labels
    problems = [
        Problem(f"labels.{name}", found)
        for name, value in labels.items()
        if (found := label_problem(value)) is not None
    ]
    if problems:
        return {}, problems
    canonical: dict[str, Any] = {
        "format": "classification",
        "labels": {k: sorted(set(v if isinstance(v, list) else [v])) for k, v in labels.items()},
        "multi_label": sorted(k for k, v in labels.items() if isinstance(v, list)),
    }
    if record.messages is not None:
        turns = _turns(record.messages, "messages")
        canonical["messages"] = [message_dict(m) for _, m in turns]
        return canonical, check_conversation(turns, None)
    canonical["text"] = record.text
    return canonical, []


_CANONICAL: dict[str, Any] = {
    "text": _text,
    "chat": _chat,
    "prompt_completion": _prompt_completion,
    "preference": _preference,
    "openai_preference": _openai_preference,
    "prompt": _prompt,
    "messages_prompt": _messages_prompt,
    "classification": _classification,
}
