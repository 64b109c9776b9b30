"""Chat conversations that exercise every part of the template: system prompts in place,
tools, tool calls and results, reasoning chunks and fields, content chunks, weight 0.
Shared by the template tests and benchmarks/gguf_parity.py."""

from __future__ import annotations

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city — métropole included.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {}}},
}


def call(name: str, arguments: object) -> dict:
    return {
        "id": "abcdefghi",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


CONVERSATIONS: dict[str, tuple[list[dict], list[dict] | None]] = {
    "user only": ([{"role": "user", "content": "Hello"}], None),
    "system multi-turn": (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
        ],
        None,
    ),
    "tools, several calls, results": (
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    call("get_weather", {"city": "Paris"}),
                    call("get_weather", '{"city": "Lyon"}'),
                    call("search", ""),
                ],
            },
            {"role": "tool", "tool_call_id": "abcdefghi", "content": "21°C"},
            {"role": "tool", "tool_call_id": "abcdefghi", "content": "19°C"},
            {"role": "tool", "tool_call_id": "abcdefghi", "content": ""},
            {"role": "assistant", "content": "Paris 21°C, Lyon 19°C."},
            {"role": "user", "content": "Thanks!"},
        ],
        [WEATHER_TOOL, SEARCH_TOOL],
    ),
    "thinking": (
        [
            {"role": "user", "content": "Is 91 prime?"},
            {"role": "assistant", "reasoning_content": "91 = 7 × 13.", "content": "No: 7 × 13."},
            {"role": "user", "content": "And 97?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "No divisor up to 9."},
                    {"type": "text", "text": "Yes."},
                ],
            },
            {"role": "user", "content": "101?"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "cut", "closed": False}],
            },
        ],
        None,
    ),
    "openai reasoning alias and tool call only": (
        [
            {"role": "user", "content": "Find it"},
            {"role": "assistant", "reasoning": "Search first.", "tool_calls": [call("search", {})]},
            {"role": "tool", "tool_call_id": "abcdefghi", "content": "found"},
            {"role": "assistant", "content": "Found it."},
        ],
        [SEARCH_TOOL],
    ),
    "chunks, systems in place, weight 0, consecutive turns": (
        [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Part one. "},
                    {"type": "text", "text": "Two."},
                ],
            },
            {"role": "system", "content": "Second system."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "bad answer", "weight": 0},
            {"role": "user", "content": "Again, in French?"},
            {"role": "assistant", "content": "Bonjour, ça va ? 🙂"},
            {"role": "assistant", "content": "Encore."},
            {"role": "user", "content": "Ok"},
            {"role": "system", "content": "Late system note."},
        ],
        None,
    ),
    "system only": ([{"role": "system", "content": "Nothing else."}], [SEARCH_TOOL]),
}
