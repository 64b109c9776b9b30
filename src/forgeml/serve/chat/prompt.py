"""From a chat request to what the engine needs: prompt ids, sampling, output spec.

Every check that can fail is done here, before any generation starts, so a bad
request costs nothing and gets a 400 that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgeml.core.errors import InputError
from forgeml.models import chat_template as ct
from forgeml.models.image_inputs import VISION_TOKENS
from forgeml.serve.chat.images import request_images
from forgeml.serve.chat.protocol import ChatCompletionRequest, NamedToolChoice
from forgeml.serve.constrained.guide import OutputSpec
from forgeml.serve.constrained.json_schema import ANY_OBJECT, check_schema, json_grammar
from forgeml.serve.constrained.tools import tool_call_grammar, tool_parameters
from forgeml.serve.engine.base import SamplingParams
from forgeml.serve.errors import APIError
from forgeml.serve.served_models import ServedModel
from forgeml.serve.settings import ServeSettings

# OpenAI's and Mistral's efforts onto our template's two settings (reasoning off or on)
# and a cap on reasoning tokens, after which [/THINK] is forced (README, "The API").
REASONING_EFFORTS = {
    "none": "none",
    "minimal": "none",
    "low": "high",
    "medium": "high",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
REASONING_BUDGETS = {"low": 512, "medium": 2048}  # high, xhigh, max: the server's default
MAX_STOP_STRINGS = 16
_CONTROL_TOKENS = (*ct.SPECIAL_TOKENS, *VISION_TOKENS)  # `[IMG]` in text would fake an image


@dataclass
class PreparedChat:
    prompt_ids: list[int]
    sampling: list[SamplingParams]  # one per choice (seeds differ)
    spec: OutputSpec
    reasoning_effort: str
    messages: list[dict[str, Any]]  # as rendered (for the request log; images as hashes)
    images: list[Any] = field(default_factory=list)  # pixels, one per image (chat/images.py)


def prepare(
    body: ChatCompletionRequest, served: ServedModel, settings: ServeSettings
) -> PreparedChat:
    _refuse_unsupported(body)
    messages = [request_message(message.model_dump(exclude_none=True)) for message in body.messages]
    if messages[-1]["role"] not in ("user", "tool"):
        raise InputError(
            "the last message must be from the user or a tool",
            field=f"messages[{len(messages) - 1}].role",
        )
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    refuse_control_tokens(messages, tools)
    effort = _reasoning_effort(body)
    spec = _output_spec(body, served, tools, effort, settings)
    images = request_images(messages, served, settings)
    text = ct.render(messages, tools or None, effort)
    prompt_ids = images.expand(served.tokenizer(text, add_special_tokens=False)["input_ids"])
    max_tokens = completion_budget(
        len(prompt_ids),
        body.max_completion_tokens or body.max_tokens,
        served.max_context,
        settings,
    )
    seed = body.seed if body.seed is not None else body.random_seed
    sampling = [
        SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=None if seed is None else seed + index,
            stop=stop_strings(body.stop),
        )
        for index in range(body.n)
    ]
    return PreparedChat(
        prompt_ids, sampling, spec, effort, images.redacted(messages), images.pixels
    )


def completion_budget(
    prompt_tokens: int, requested: int | None, context: int, settings: ServeSettings
) -> int:
    """Tokens the completion may have; a 400 if the prompt leaves no room for them."""
    room = context - prompt_tokens
    max_tokens = requested or min(room, settings.default_max_tokens or room)
    if max_tokens > room or room <= 0:
        raise APIError(
            400,
            f"this model's context is {context} tokens; the prompt has {prompt_tokens} and "
            f"{max_tokens} more were asked for. Shorten the messages or lower max_tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    return max_tokens


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise InputError(f"at most {MAX_STOP_STRINGS} stop strings", field="stop")
    if any(not s for s in stops):
        raise InputError("stop strings must not be empty", field="stop")
    return tuple(stops)


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise InputError("not supported by this server yet; leave it unset or 0", field=name)
    if body.logprobs:
        raise InputError("log probabilities are not supported yet", field="logprobs")
    if any(message.prefix for message in body.messages):
        raise InputError(
            "prefix (continuing an assistant message) is not supported", field="messages"
        )


def refuse_control_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """Refuse text holding a control token such as `[INST]`.

    The rendered prompt is tokenized as a whole, so such text would become chat
    structure, not text: a user could forge a system prompt or a tool result. (Encoding
    each message's text apart, as mistral-common does, would let it through as text;
    that needs the chat template to render in pieces.)
    """
    for index, message in enumerate(messages):
        _check_text(message, f"messages[{index}]")
    for index, tool in enumerate(tools):
        _check_text(tool, f"tools[{index}]")


def _check_text(value: Any, field: str) -> None:
    if isinstance(value, str):
        found = next((token for token in _CONTROL_TOKENS if token in value), None)
        if found is not None:
            raise InputError(
                f"the text holds the control token {found!r}, which the model reads as chat "
                "structure; remove or alter it",
                field=field,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(item, f"{field}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _check_text(item, f"{field}[{position}]")


def request_message(message: dict[str, Any]) -> dict[str, Any]:
    message.pop("prefix", None)
    if message["role"] == "developer":  # OpenAI's newer name for the system role
        message["role"] = "system"
    return message


def _reasoning_effort(body: ChatCompletionRequest) -> str:
    if body.reasoning_effort is not None:
        return REASONING_EFFORTS[body.reasoning_effort]
    return "high" if body.prompt_mode == "reasoning" else "none"


def reasoning_budget(body: ChatCompletionRequest, settings: ServeSettings) -> int | None:
    """Reasoning tokens before [/THINK] is forced: the request's `max_reasoning_tokens`,
    else its effort's cap, never more than the server's `default_reasoning_budget`."""
    if body.max_reasoning_tokens is not None:
        return body.max_reasoning_tokens
    caps = [REASONING_BUDGETS.get(body.reasoning_effort or ""), settings.default_reasoning_budget]
    return min((cap for cap in caps if cap is not None), default=None)


def _output_spec(
    body: ChatCompletionRequest,
    served: ServedModel,
    tools: list[dict[str, Any]],
    effort: str,
    settings: ServeSettings,
) -> OutputSpec:
    vocabulary = served.vocabulary
    reasoning = effort == "high"
    if reasoning and not vocabulary.has(ct.THINK, ct.END_THINK):
        raise InputError("this model's tokenizer has no reasoning tokens", field="reasoning_effort")
    budget = reasoning_budget(body, settings)
    choice = body.tool_choice or ("auto" if tools else "none")
    if choice != "none" and not tools:
        raise InputError("tool_choice needs tools", field="tool_choice")
    if tools and not vocabulary.has(ct.TOOL_CALLS, ct.ARGS):
        raise InputError("this model's tokenizer has no tool-call tokens", field="tools")
    json_schema, strict = _json_answer(body)
    parameters = tool_parameters(tools) if tools else {}
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in parameters:
            raise InputError(f"no tool named {name!r} in tools", field="tool_choice")
        parameters = {name: parameters[name]}

    def calls(json_answer: dict[str, Any] | None = None) -> str:
        return tool_call_grammar(
            parameters,
            vocabulary.id(ct.TOOL_CALLS),
            vocabulary.id(ct.ARGS),
            parallel=body.parallel_tool_calls is not False,
            json_answer=json_answer,
        )

    if choice in ("required", "any") or isinstance(choice, NamedToolChoice):
        return OutputSpec(reasoning, budget, grammar=calls(), field="tool_choice")
    if choice == "auto" and json_schema is not None:
        return OutputSpec(reasoning, budget, grammar=calls(json_schema), field="response_format")
    if json_schema is not None:
        grammar = json_grammar(json_schema, "response_format.json_schema.schema", strict)
        return OutputSpec(reasoning, budget, grammar=grammar, field="response_format")
    return OutputSpec(reasoning, budget, tool_grammar=calls() if choice == "auto" else None)


def _json_answer(body: ChatCompletionRequest) -> tuple[dict[str, Any] | None, bool]:
    """The schema the answer must follow (None: free text) and whether it is strict."""
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None, False
    if response_format.type == "json_object":
        return ANY_OBJECT, False
    json_schema = response_format.json_schema
    assert json_schema is not None and json_schema.schema_ is not None  # protocol checks it
    schema = check_schema(json_schema.schema_, "response_format.json_schema.schema")
    return schema, bool(json_schema.strict)
