"""Drift signals of one prompt: numbers and labels that describe it without its text.

The server computes them for every request and stores only them (the prompt itself is
logged only with `--log-prompts`); `monitor.reference` computes the same ones over the
model's training data, and `monitor drift` compares the two.

- `user_chars`: characters the user (and tools) wrote, the system prompt excluded
- `turns`: messages in the conversation
- `chars_per_token`: how well the model's own tokenizer compresses the user's text. Text
  from the domain it was trained on compresses well; another domain, language or
  alphabet, garbage or base64 compresses worse. Measured on the first 4,000 characters.
- `language`: the language of the user's first 1,000 characters (py3langid), `und` when
  too short to tell
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from forgeml.data.language import detect_language

NUMERIC = ("user_chars", "turns", "chars_per_token")
CATEGORICAL = ("language",)
SAMPLE_CHARS = 4000  # chars_per_token reads this much: bounded cost for any prompt
LANGUAGE_CHARS = 1000  # decides the language as well as more does, at a quarter the cost
MIN_LANGUAGE_CHARS = 20  # below this a language guess is noise


def user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of user and tool turns: what comes from outside, not the operator's prompt."""
    parts = []
    for message in messages:
        if message.get("role") not in ("user", "tool"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # OpenAI content parts
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return "\n".join(part for part in parts if part)


def prompt_signals(text: str, turns: int, count_tokens: Callable[[str], int]) -> dict[str, Any]:
    sample = text[:SAMPLE_CHARS]
    tokens = count_tokens(sample) if sample else 0
    language = "und"
    if len(sample.strip()) >= MIN_LANGUAGE_CHARS:
        language = detect_language(sample, max_chars=LANGUAGE_CHARS)[0]
    return {
        "user_chars": len(text),
        "turns": turns,
        "chars_per_token": round(len(sample) / tokens, 3) if tokens else 0.0,
        "language": language,
    }


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Counts a text's tokens with a Hugging Face tokenizer, no special tokens added."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def warm_up() -> None:
    """Load the language model now (~1 s) rather than on the first request's signals."""
    detect_language("warm up the language identifier")
