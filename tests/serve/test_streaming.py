"""Pre-rendered stream events are byte for byte the events `sse` renders."""

from __future__ import annotations

import json

import pytest

from forgeml.serve.chat import protocol as p
from forgeml.serve.streaming import HOLE, EventTemplate, sse

TEXTS = [
    "plain",
    "",
    'quotes " and \\ backslash',
    "new\nline\ttab",
    "é ü 日本 🙂",
    "\x00\x1f",
    HOLE,
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_template_renders_what_sse_renders(text):
    def chunk(content: str) -> p.ChatCompletionChunk:
        delta = p.DeltaMessage(content=content)
        return p.ChatCompletionChunk(
            id="chatcmpl-1", created=7, model="m", choices=[p.ChunkChoice(index=2, delta=delta)]
        )

    assert EventTemplate(chunk(HOLE)).render(text) == sse(chunk(text))
    envelope = {"id": "cmpl-1", "choices": [{"index": 0, "text": HOLE, "logprobs": None}]}
    expected = sse({"id": "cmpl-1", "choices": [{"index": 0, "text": text, "logprobs": None}]})
    assert EventTemplate(envelope).render(text) == expected


@pytest.mark.parametrize(
    "text", ["a\u2028b", "a\u2029b", "a\x85b", "line\nbreak\r", "tab\x0bff\x0c\x1c"]
)
def test_an_event_stays_one_line_for_every_line_reader(text):
    # Found by the soak test: a token decoding to U+2028 went out raw, and httpx's
    # aiter_lines (str.splitlines rules) cut the event in two mid-JSON.
    from httpx._decoders import LineDecoder

    event = sse({"choices": [{"index": 0, "text": text}]})
    lines = LineDecoder().decode(event)
    assert [line for line in lines if line] == [event.strip()]
    assert json.loads(lines[0][len("data: ") :])["choices"][0]["text"] == text
