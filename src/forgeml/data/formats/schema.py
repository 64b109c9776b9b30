"""Pydantic models of the training-data records, one per shape a file may use.

The models mirror the files field by field (like an API protocol module), so a validation
error names the field as the user wrote it: `input.messages[2].role`, not an internal name.
`normalize.py` turns a validated record into the one canonical shape the stages read.

Messages follow OpenAI's chat fine-tuning format, which Mistral's fine-tuning JSONL shares
(tool-call `arguments` as a JSON string, tool results with `tool_call_id`, `weight` 0/1 on
assistant turns). Accepted on top, because real exports contain them: content as a list of
text parts, `arguments` as an object (serialised to a string), reasoning as
`reasoning_content`, `thinking`, or Mistral "thinking" content chunks.

Unknown fields inside a message or tool call are errors — a misspelt `tool_call` would
otherwise silently drop the call from training. Unknown top-level fields (ids, sources,
reward references) are allowed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from forgeml.core.errors import InputError
from forgeml.models.chat_template import IMAGE_CHUNK_TYPES

ROLES = ("system", "user", "assistant", "tool")
Role = Literal["system", "user", "assistant", "tool"]


def type_name(value: Any) -> str:
    """How a JSON value's type reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Closed):
    name: str = Field(min_length=1)
    arguments: str

    @field_validator("arguments", mode="before")
    @classmethod
    def _object_to_json(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return value

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"not valid JSON ({error.msg} at column {error.colno}); "
                "expected a JSON object as a string"
            ) from None
        if not isinstance(parsed, dict):
            raise ValueError(f"expected a JSON object; got {type_name(parsed)}")
        return value


class ToolCall(_Closed):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Closed):
    role: Role
    # A string; a list of parts only when a user message holds images (image_parts).
    content: str | list[dict[str, Any]] | None = Field(None, validate_default=True)
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(None, validate_default=True)
    name: str | None = None
    weight: Literal[0, 1] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accepted_variants(cls, data: Any) -> Any:
        """Fold `thinking` and list-of-parts content into the canonical fields."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        reasoning: list[str] = []
        if "thinking" in data:
            if data.get("reasoning_content") is not None:
                raise ValueError("give reasoning_content or thinking, not both")
            thinking = data.pop("thinking")
            if thinking is not None:
                reasoning.append(_text_of(thinking, "thinking"))
        content = data.get("content")
        if isinstance(content, list) and any(_is_image(part) for part in content):
            if data.get("role") != "user":
                raise ValueError("only user messages may hold images")
            data["content"] = image_parts(content)
        elif isinstance(content, list):
            texts = []
            for index, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(_text_of(part.get("text"), f"content[{index}].text"))
                elif kind == "thinking":  # Mistral reasoning chunk
                    inner = part.get("thinking")
                    reasoning.append(_text_of(inner, f"content[{index}].thinking"))
                else:
                    got = repr(kind) if kind is not None else type_name(part)
                    raise ValueError(
                        f"content[{index}]: only text and image parts are supported; got {got}"
                    )
            data["content"] = "".join(texts)
        if reasoning:
            if data.get("reasoning_content") is not None:
                raise ValueError("give reasoning_content or thinking chunks, not both")
            data["reasoning_content"] = "\n".join(reasoning)
        if data.get("tool_calls") == []:  # exports often carry an empty list
            data["tool_calls"] = None
        return data

    @field_validator("content")
    @classmethod
    def _content_for_role(cls, value: str | None, info: ValidationInfo) -> str | None:
        role = info.data.get("role")
        if isinstance(value, list):  # image parts (checked by image_parts)
            return value
        if role in ("system", "user"):
            if value is None:
                raise ValueError(f"required for a {role} message")
            if not value.strip():
                raise ValueError("empty text")
        if role == "tool" and value is None:
            raise ValueError('required for a tool message (use "" for no output)')
        return value

    @field_validator("reasoning_content", "tool_calls", "weight")
    @classmethod
    def _assistant_only(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is not None and role is not None and role != "assistant":
            raise ValueError(f"only assistant messages have {info.field_name}; this is {role}")
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _tool_call_id_for_tool(cls, value: str | None, info: ValidationInfo) -> str | None:
        role = info.data.get("role")
        if role == "tool" and not value:
            raise ValueError("required for a tool message: the id of the call it answers")
        if role not in ("tool", None) and value is not None:
            raise ValueError(f"only tool messages have a tool_call_id; this is {role}")
        return value

    @model_validator(mode="after")
    def _assistant_says_something(self) -> Message:
        silent = self.content is None or (
            isinstance(self.content, str) and not self.content.strip()
        )
        if self.role == "assistant" and not self.tool_calls and silent:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in IMAGE_CHUNK_TYPES


def image_parts(content: list[Any]) -> list[dict[str, Any]]:
    """A user message's text and image parts in canonical form: `{"type": "text",
    "text"}` and OpenAI's `{"type": "image_url", "image_url": {"url": DATA_URL}}`, each
    image decoded once here so a bad one is named by its part (ingest has already
    turned local file references into data URLs)."""
    from forgeml.models.image_inputs import decode_image, image_bytes, image_url_of

    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"content[{index}]"
        if kind == "text":
            parts.append({"type": "text", "text": _text_of(part.get("text"), f"{where}.text")})
            continue
        url = image_url_of(part) if kind == "image_url" else None
        if not url:
            got = repr(kind) if kind is not None else type_name(part)
            raise ValueError(
                f"{where}: expected a text part or an image_url part with a data URL; got {got}"
            )
        try:
            decode_image(image_bytes(url, where), where)
        except InputError as error:
            raise ValueError(f"{where}: {error.detail}") from None
        parts.append({"type": "image_url", "image_url": {"url": url}})
    if not any(part["type"] == "text" and part["text"].strip() for part in parts) and not any(
        part["type"] == "image_url" for part in parts
    ):
        raise ValueError("empty content")
    return parts


def _text_of(value: Any, where: str) -> str:
    """A string, or Mistral's list of {"type": "text", "text": ...} chunks, as one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
        for c in value
    ):
        return "".join(c["text"] for c in value)
    raise ValueError(f"{where}: expected a string or a list of text chunks; got {type_name(value)}")


class FunctionDefinition(_Closed):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from jsonschema import SchemaError  # lazy: only records with tools need it
        from jsonschema.validators import validator_for

        try:
            validator_for(value).check_schema(value)
        except SchemaError as error:
            raise ValueError(f"not a valid JSON schema: {error.message}") from None
        return value


class Tool(_Closed):
    type: Literal["function"] = "function"
    function: FunctionDefinition


def _turns(role: str) -> Any:
    """A list of messages, where a plain string stands for one message from `role`."""

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        if not isinstance(value, list):
            raise ValueError(f"expected a string or a list of messages; got {type_name(value)}")
        return value

    return BeforeValidator(expand)


UserTurns = Annotated[list[Message], _turns("user")]
AssistantTurns = Annotated[list[Message], _turns("assistant")]
Tools = list[Tool] | None


# Pre-training text ------------------------------------------------------------------


class TextRecord(_Open):
    text: str

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty text")
        return value


# Chat (SFT) ---------------------------------------------------------------------------


class ChatRecord(_Open):
    """OpenAI / Mistral chat fine-tuning line: `{"messages": [...], "tools": [...]}`."""

    messages: list[Message] = Field(min_length=1)
    tools: Tools = None
    parallel_tool_calls: bool | None = None


class PromptCompletionRecord(_Open):
    """TRL's prompt-completion SFT shape; the completion is what is trained on."""

    prompt: UserTurns = Field(min_length=1)
    completion: AssistantTurns = Field(min_length=1)
    tools: Tools = None


# Preference (DPO / ORPO) ----------------------------------------------------------------


class PreferenceRecord(_Open):
    """TRL's shape; without `prompt`, the shared leading messages of chosen and rejected are
    the prompt (TRL's "implicit prompt")."""

    prompt: UserTurns | None = None
    chosen: AssistantTurns = Field(min_length=1)
    rejected: AssistantTurns = Field(min_length=1)
    tools: Tools = None


class PreferenceInput(_Closed):
    messages: list[Message] = Field(min_length=1)
    tools: Tools = None
    parallel_tool_calls: bool | None = None


class OpenAIPreferenceRecord(_Open):
    """OpenAI's DPO fine-tuning line."""

    input: PreferenceInput
    preferred_output: list[Message] = Field(min_length=1)
    non_preferred_output: list[Message] = Field(min_length=1)


# Prompt-only (RL) -------------------------------------------------------------------------


class PromptRecord(_Open):
    """`{"prompt": ..., "answer": ...}`: extra fields are kept for the reward functions."""

    prompt: UserTurns = Field(min_length=1)
    tools: Tools = None


# Classifier -------------------------------------------------------------------------


MAX_LABEL_SETS = 16
MAX_LABEL_CHARS = 200


def label_problem(labels: Any) -> str | None:
    """What is wrong with one label set's value (a label, or a list of them), if anything."""
    for label in labels if isinstance(labels, list) else [labels]:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            shown = f"{label!r}"[:60] if isinstance(label, str) else type_name(label)
            return (
                f"expected a label (1 to {MAX_LABEL_CHARS} characters) or a list of labels; "
                f"got {shown}"
            )
    return None


class ClassificationRecord(_Open):
    """Mistral's classifier line: `{"text"}` or `{"messages"}`, with `labels` per label set
    (one label, or a list for a multi-label set)."""

    text: str | None = None
    messages: list[Message] | None = None
    labels: dict[str, Any]

    @field_validator("labels")
    @classmethod
    def _label_sets(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value or len(value) > MAX_LABEL_SETS:
            raise ValueError(f"give 1 to {MAX_LABEL_SETS} label sets; got {len(value)}")
        return value  # each set's labels: label_problems, which names the set

    @model_validator(mode="after")
    def _one_input(self) -> ClassificationRecord:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give the input as 'text' or as 'messages' (one of them)")
        if self.text is not None and not self.text.strip():
            raise ValueError("empty text")
        return self


class MessagesPromptRecord(_Open):
    """A prompt given as a conversation that ends with the turn to answer."""

    messages: list[Message] = Field(min_length=1)
    tools: Tools = None
