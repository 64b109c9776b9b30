"""The one chat layout used by training, evaluation and the server.

It is Mistral's v15 instruct format (Mistral Small 4; mistral-common's
`InstructTokenizerV15`), written as plain text with control tokens that our tokenizer
reserves as single ids:

    <s>
    [SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT]             each system message, in place
    [AVAILABLE_TOOLS]{json list of tools}[/AVAILABLE_TOOLS]      } once, just before the
    [MODEL_SETTINGS]{"reasoning_effort": "none"|"high"}[/MODEL_SETTINGS]  } first user turn
    [INST]{user}[/INST]
    [THINK]{reasoning}[/THINK]{answer}[TOOL_CALLS]{name}[ARGS]{json args}...</s>
    [TOOL_RESULTS]{result}[/TOOL_RESULTS]               one per tool message
    {answer after the tool results}</s>
    [INST]{next user turn}[/INST]

For example (system, tools, reasoning on, two tool calls, their results, an answer):

    <s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{"type": "function", ...}]
    [/AVAILABLE_TOOLS][MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]
    [INST]U1[/INST][THINK]R[/THINK]A1[TOOL_CALLS]F1[ARGS]{}[TOOL_CALLS]F2[ARGS]{}</s>
    [TOOL_RESULTS]R1[/TOOL_RESULTS][TOOL_RESULTS]R2[/TOOL_RESULTS]A2</s>[INST]U2[/INST]

(one line in reality). As in v13+, tool-call ids are not rendered (results follow the
calls in order), tools are declared once at the start, and the model settings are
always present (`reasoning_effort=None` renders "none"). JSON is `json.dumps` with
`", "`/`": "` separators and `ensure_ascii=False`, like mistral-common.

There is no generation prompt: a prompt already ends with `[/INST]` or
`[/TOOL_RESULTS]`, where the model starts its turn (with `[THINK]` when reasoning
is on). `add_generation_prompt` is accepted for transformers' API and changes nothing.
Consecutive messages of one role are not merged (Mistral's template joins them).

Messages are OpenAI/Mistral chat dicts. `content` is a string or a list of
`{"type": "text", "text"}` chunks; an assistant may also have `{"type": "thinking",
"thinking", "closed"}` chunks, a `reasoning_content` (or `thinking` / `reasoning`)
string rendered as a leading `[THINK]` block, `tool_calls` (`arguments` a JSON string
or a dict) and OpenAI's fine-tuning `weight` (0 = do not train on this turn).

`CHAT_TEMPLATE` (chat_template.jinja) renders the same text through
`tokenizer.apply_chat_template`; the tests hold the two in agreement.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgeml.core.errors import ForgeError, InputError

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
INST, END_INST = "[INST]", "[/INST]"
SYSTEM, END_SYSTEM = "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"
TOOLS, END_TOOLS = "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"
SETTINGS, END_SETTINGS = "[MODEL_SETTINGS]", "[/MODEL_SETTINGS]"
TOOL_CALLS, ARGS = "[TOOL_CALLS]", "[ARGS]"
TOOL_RESULTS, END_TOOL_RESULTS = "[TOOL_RESULTS]", "[/TOOL_RESULTS]"
THINK, END_THINK = "[THINK]", "[/THINK]"

# Order matters: the tokenizer gives these ids 0, 1, 2, ... (see sizes.BOS_ID etc.).
SPECIAL_TOKENS: list[str] = [
    UNK, BOS, EOS, PAD,
    INST, END_INST, SYSTEM, END_SYSTEM, TOOLS, END_TOOLS, SETTINGS, END_SETTINGS,
    TOOL_CALLS, ARGS, TOOL_RESULTS, END_TOOL_RESULTS, THINK, END_THINK,
]  # fmt: skip
CONTROL_TOKENS: list[str] = SPECIAL_TOKENS[4:]
# A vision-language model's tokenizer adds these after its vocabulary (models/vision.py);
# a user message's image chunk renders as one IMG, expanded to the image's grid later.
IMG = "[IMG]"
IMAGE_CHUNK_TYPES = ("image_url", "image")

CHAT_TEMPLATE: str = Path(__file__).with_name("chat_template.jinja").read_text(encoding="utf-8")

REASONING_EFFORTS = ("none", "high")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' order
# v15's ordering rules: which roles may follow which.
_ALLOWED_NEXT = {
    None: {"system", "user"},
    "system": {"system", "user", "assistant"},
    "user": {"system", "user", "assistant"},
    "assistant": {"assistant", "user", "tool"},
    "tool": {"assistant", "tool", "user"},
}
_ROLES = ("system", "user", "assistant", "tool")
Message = dict[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content(message: Message, index: int, allow_thinking: bool, allow_images: bool = False) -> str:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InputError(
            "content must be a string or a list of chunks", field=f"messages[{index}].content"
        )
    parts = []
    for chunk in content:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind == "text":
            parts.append(chunk["text"])
        elif kind == "thinking" and allow_thinking:
            closed = END_THINK if chunk.get("closed", True) else ""
            parts.append(THINK + chunk["thinking"] + closed)
        elif kind in IMAGE_CHUNK_TYPES and allow_images:
            parts.append(IMG)  # expanded to the image's grid of tokens (image_inputs.py)
        else:
            raise InputError(
                f"unsupported content chunk type {kind!r}",
                field=f"messages[{index}].content",
                hint="use text chunks (thinking chunks in assistant messages, images in "
                "user messages)",
            )
    return "".join(parts)


def _reasoning(message: Message) -> str | None:
    return next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)


def _assistant(message: Message, index: int) -> str:
    reasoning = _reasoning(message)
    content = _content(message, index, allow_thinking=True)
    calls = message.get("tool_calls") or []
    if not (reasoning or content or calls):
        raise InputError(
            "an assistant message needs content, reasoning or tool calls",
            field=f"messages[{index}]",
        )
    if reasoning and THINK in content:
        raise InputError(
            "message has both a reasoning field and thinking chunks",
            field=f"messages[{index}]",
        )
    parts = [THINK + reasoning + END_THINK] if reasoning else []
    parts.append(content)
    for call_index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InputError(
                "a tool call needs a function with a name",
                field=f"messages[{index}].tool_calls[{call_index}]",
            )
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = _dumps(arguments)
        parts.append(TOOL_CALLS + function["name"] + ARGS + (arguments or "{}"))
    parts.append(EOS)
    return "".join(parts)


def _check_roles(messages: Sequence[Message]) -> None:
    previous = None
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise InputError(
                f"unsupported role {role!r}",
                field=f"messages[{index}].role",
                hint="roles are system, user, assistant and tool",
            )
        if role not in _ALLOWED_NEXT[previous]:
            raise InputError(
                f"a {role} message cannot follow {previous or 'the start'}",
                field=f"messages[{index}].role",
            )
        previous = role


def render_with_assistant_mask(
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    reasoning_effort: str | None = None,
    add_generation_prompt: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans to train on.

    A span covers one assistant turn: its thinking, answer, tool calls and the
    closing `</s>` - everything the model generates. Turns with `weight: 0` have none.
    """
    del add_generation_prompt  # the layout has no generation prompt (see module doc)
    effort = "none" if reasoning_effort is None else reasoning_effort
    if effort not in REASONING_EFFORTS:
        raise InputError(
            f"reasoning_effort must be 'none' or 'high', got {reasoning_effort!r}",
            field="reasoning_effort",
        )
    _check_roles(messages)
    pieces: list[tuple[str, bool]] = [(BOS, False)]
    settings_done = False
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            pieces.append((SYSTEM + _content(message, index, False) + END_SYSTEM, False))
        elif role == "user":
            if not settings_done:
                if tools:
                    pieces.append((TOOLS + _dumps(list(tools)) + END_TOOLS, False))
                settings = _dumps({"reasoning_effort": effort})
                pieces.append((SETTINGS + settings + END_SETTINGS, False))
                settings_done = True
            pieces.append((INST + _content(message, index, False, True) + END_INST, False))
        elif role == "assistant":
            weight = message.get("weight", 1)
            if weight not in (0, 1):
                raise InputError(
                    f"weight must be 0 or 1, got {weight!r}", field=f"messages[{index}].weight"
                )
            pieces.append((_assistant(message, index), weight != 0))
        else:  # tool
            pieces.append(
                (TOOL_RESULTS + _content(message, index, False) + END_TOOL_RESULTS, False)
            )

    spans: list[tuple[int, int]] = []
    position = 0
    for text, trainable in pieces:
        if trainable:
            spans.append((position, position + len(text)))
        position += len(text)
    return "".join(text for text, _ in pieces), spans


def render(
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    reasoning_effort: str | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """The conversation as the model sees it (see the module docstring for the layout)."""
    text, _ = render_with_assistant_mask(messages, tools, reasoning_effort, add_generation_prompt)
    return text


def tokenize_for_training(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels -100 outside the assistant turns.

    The mask is computed on characters and mapped to tokens through the tokenizer's
    offsets, so it is exact for byte-level BPE. Every assistant span starts right after
    a control token and ends with `</s>`, so no token straddles a span edge; if one
    ever did (a tokenizer without our control tokens) we fail rather than guess.
    Labels are not shifted: transformers' causal-LM loss shifts them itself.
    """
    missing = [
        t
        for t in SPECIAL_TOKENS[1:]
        if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)
    ]
    if missing:
        raise InputError(
            f"the tokenizer lacks the chat control tokens {', '.join(missing)}",
            hint="train it with forgeml.models.tokenizer.train_tokenizer",
        )
    text, spans = render_with_assistant_mask(messages, tools, reasoning_effort)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    labels = [-100] * len(input_ids)
    span_index = 0
    for token_index, (start, end) in enumerate(encoding["offset_mapping"]):
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index == len(spans) or end <= spans[span_index][0]:
            continue
        span_start, span_end = spans[span_index]
        if start < span_start or end > span_end:
            raise ForgeError(f"token {token_index} straddles the edge of an assistant turn")
        labels[token_index] = input_ids[token_index]
    return input_ids, labels


def _call_id() -> str:
    # Mistral's API wants 9 alphanumeric characters; OpenAI accepts any string.
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(9))


def parse_assistant_output(text: str) -> tuple[str, str | None, list[dict[str, Any]]]:
    """Split a generated assistant turn into (content, reasoning, tool_calls).

    Decode the completion with `skip_special_tokens=False` so the control tokens are
    there to split on. Text after `</s>` is ignored; an unclosed `[THINK]` (a
    completion cut by max_tokens) makes the rest reasoning. Tool calls come back in
    OpenAI's shape with fresh ids and `arguments` as the JSON string the model wrote
    (the server decides what to do with arguments that are not valid JSON).
    """
    text = text.removeprefix(BOS).split(EOS, 1)[0]
    head, *raw_calls = text.split(TOOL_CALLS)
    content_parts, reasoning_parts = [], []
    rest = head
    while THINK in rest:
        before, _, after = rest.partition(THINK)
        content_parts.append(before)
        thought, closed, rest = after.partition(END_THINK)
        reasoning_parts.append(thought)
        if not closed:
            rest = ""
    content_parts.append(rest)
    tool_calls = []
    for raw in raw_calls:
        name, _, arguments = raw.partition(ARGS)
        tool_calls.append(
            {
                "id": _call_id(),
                "type": "function",
                "function": {"name": name.strip(), "arguments": arguments.strip() or "{}"},
            }
        )
    reasoning = "".join(reasoning_parts) if reasoning_parts else None
    return "".join(content_parts), reasoning, tool_calls
