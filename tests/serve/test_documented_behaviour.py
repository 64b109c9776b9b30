"""What the README promises about the API, through the real openai client: a
`json_schema` answer validates unless `max_tokens` cuts it (then finish_reason is
"length"), and each accepted `reasoning_effort` behaves as documented."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from forgeml.serve.chat.prompt import REASONING_BUDGETS

MODEL = "tiny-chat"
ASK = [{"role": "user", "content": "Route this ticket."}]
SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["billing", "shipping"]}, "summary": {"type": "string"}},
    "required": ["category", "summary"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}


def test_json_schema_cut_by_max_tokens_says_length(openai_client):
    cut = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=RESPONSE_FORMAT, max_tokens=3, seed=1
    )
    choice = cut.choices[0]
    assert choice.finish_reason == "length", choice
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)

    room = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=RESPONSE_FORMAT, max_tokens=80, seed=1
    )
    assert room.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(room.choices[0].message.content), SCHEMA)


def reasoning_tokens(openai_client, effort: str, max_tokens: int) -> int:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=max_tokens, reasoning_effort=effort, seed=3
    )
    details = response.usage.completion_tokens_details
    reasoning = (response.choices[0].message.model_extra or {}).get("reasoning_content")
    assert bool(reasoning) == bool(details and details.reasoning_tokens), response
    return details.reasoning_tokens if details and details.reasoning_tokens else 0


def test_each_reasoning_effort_behaves_as_documented(openai_client):
    # The untrained model thinks until the budget or max_tokens stops it. Sent at once:
    # the server decodes them in one batch.
    room = REASONING_BUDGETS["low"] + 200
    efforts = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
    with ThreadPoolExecutor(len(efforts)) as pool:
        counts = pool.map(lambda effort: reasoning_tokens(openai_client, effort, room), efforts)
        used = dict(zip(efforts, counts, strict=True))
    assert used["none"] == used["minimal"] == 0, used
    assert used["low"] == REASONING_BUDGETS["low"], used
    for effort in ("medium", "high", "xhigh", "max"):  # medium's cap is beyond this room
        assert used[effort] > REASONING_BUDGETS["low"], used
