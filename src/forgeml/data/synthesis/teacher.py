"""The teacher generator: a model behind an OpenAI-compatible endpoint writes examples.

The endpoint is one the organisation is allowed to send its documents to: its own
`forgeml serve`, a vLLM next to it, or a vendor under contract. Each passage is sent
with a prompt template per task; the reply is JSON:

    qa        {"pairs": [{"question": "...", "answer": "..."}, ...]}
    summary   {"summary": "..."}
    extract   {"items": [{"name": "...", "description": "..."}, ...]}

A template is plain text with `{passage}`, `{title}`, `{heading}` and `{count}` in it
(replaced as they are, so JSON braces in a template need no escaping). Replies are kept
in the run's checkpoint folder as they arrive, so a run stopped half way asks the
teacher only for the passages it has not heard about yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from forgeml.core.atomic import append_durable
from forgeml.core.hashing import sha256_json
from forgeml.data.synthesis.passages import Passage
from forgeml.data.synthesis.rules import Candidate
from forgeml.eval.suite import ChatRequest

TEACHER_TASKS = ("qa", "summary", "extract")
PLACEHOLDERS = ("{passage}", "{title}", "{heading}", "{count}")
SUMMARY_QUESTION = "Summarise this passage in one or two sentences.\n\n"
EXTRACT_QUESTION = (
    'List every item this passage describes, as JSON: [{"name": ..., "description": ...}].\n\n'
)
SYSTEM = (
    "You write training data for an assistant from an organisation's documents. Use only "
    "facts stated in the passage you are given. Reply with JSON only."
)
PROMPTS = {
    "qa": (
        "Write up to {count} questions that a customer or colleague might ask, in their own "
        "words, which this passage answers, each with a short answer taken from the passage. "
        'Reply with JSON: {"pairs": [{"question": "...", "answer": "..."}]}\n\n'
        "Passage from {title} ({heading}):\n{passage}"
    ),
    "summary": (
        "Summarise this passage in one or two sentences, using its own facts only. "
        'Reply with JSON: {"summary": "..."}\n\nPassage from {title} ({heading}):\n{passage}'
    ),
    "extract": (
        "List the named things this passage defines or describes (terms, options, products, "
        "settings, rules), each with its description from the passage. "
        'Reply with JSON: {"items": [{"name": "...", "description": "..."}]}\n\n'
        "Passage from {title} ({heading}):\n{passage}"
    ),
}


def render(template: str, passage: Passage, count: int) -> str:
    values = {
        "{passage}": passage.text,
        "{title}": passage.title,
        "{heading}": passage.heading or passage.title,
        "{count}": str(count),
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def request_for(task: str, passage: Passage, template: str, count: int) -> ChatRequest:
    return ChatRequest(
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": render(template, passage, count)},
        ]
    )


def _json_object(content: str) -> dict[str, Any]:
    """The JSON object in a reply, with or without a ```json fence around it."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the reply has no JSON object")
    value = json.loads(content[start : end + 1])
    if not isinstance(value, dict):
        raise ValueError("the reply is not a JSON object")
    return value


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def parse_reply(task: str, passage: Passage, content: str, count: int) -> list[Candidate]:
    """The examples in a teacher's reply; ValueError says why a reply is unusable."""
    try:
        reply = _json_object(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg})") from exc
    if task == "qa":
        pairs = reply.get("pairs")
        if not isinstance(pairs, list):
            raise ValueError('the reply has no "pairs" list')
        found = [
            Candidate(
                "qa", "teacher", _text(pair.get("question")), _text(pair.get("answer")), passage
            )
            for pair in pairs[:count]
            if isinstance(pair, dict) and _text(pair.get("question")) and _text(pair.get("answer"))
        ]
        return found
    if task == "summary":
        summary = _text(reply.get("summary"))
        if not summary:
            raise ValueError('the reply has no "summary" text')
        return [Candidate("summary", "teacher", SUMMARY_QUESTION + passage.text, summary, passage)]
    items = reply.get("items")
    if not isinstance(items, list):
        raise ValueError('the reply has no "items" list')
    kept = [
        {"name": _text(item.get("name")), "description": _text(item.get("description"))}
        for item in items
        if isinstance(item, dict) and _text(item.get("name")) and _text(item.get("description"))
    ]
    if not kept:
        return []
    answer = json.dumps(kept, ensure_ascii=False)
    question = EXTRACT_QUESTION + passage.text
    return [Candidate("extract", "teacher", question, answer, passage, evidence=passage.text)]


class ReplyCache:
    """Replies by request hash, appended to a jsonl as they arrive (fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.replies: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: asked again
                self.replies[entry["key"]] = entry["content"]

    def add(self, entries: Iterable[tuple[str, str]]) -> None:
        lines = []
        for key, content in entries:
            self.replies[key] = content
            lines.append(json.dumps({"key": key, "content": content}, ensure_ascii=False))
        if lines:
            append_durable(self.path, "\n".join(lines) + "\n")


class Teacher:
    """Asks the endpoint for each (task, passage), in chunks, reusing cached replies."""

    def __init__(
        self,
        model: Any,
        cache: ReplyCache,
        templates: dict[str, str],
        count: int,
        chunk: int = 16,
    ) -> None:
        self.model = model
        self.cache = cache
        self.templates = templates
        self.count = count
        self.chunk = chunk
        self.asked = 0
        self.reused = 0
        self.unusable: list[str] = []

    def _key(self, request: ChatRequest) -> str:
        return sha256_json({"model": self.model.model, "messages": request.messages})

    def candidates(self, jobs: list[tuple[str, Passage]]) -> Iterator[Candidate]:
        """Examples for (task, passage) jobs in order; replies asked chunk by chunk."""
        for first in range(0, len(jobs), self.chunk):
            part = jobs[first : first + self.chunk]
            requests = [request_for(t, p, self.templates[t], self.count) for t, p in part]
            keys = [self._key(request) for request in requests]
            missing = [i for i, key in enumerate(keys) if key not in self.cache.replies]
            self.reused += len(part) - len(missing)
            if missing:
                completions = self.model.complete([requests[i] for i in missing])
                self.asked += len(missing)
                self.cache.add(
                    (keys[i], c.content) for i, c in zip(missing, completions, strict=True)
                )
            for (task, passage), key in zip(part, keys, strict=True):
                try:
                    yield from parse_reply(task, passage, self.cache.replies[key], self.count)
                except ValueError as exc:
                    self.unusable.append(f"{passage.document_id}@{passage.start}: {exc}")


def api_key(variable: str | None) -> str | None:
    return os.environ.get(variable) if variable else None
