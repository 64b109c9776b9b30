"""Pre-rendered stream events are byte for byte the events `sse` renders."""

from __future__ import annotations

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
