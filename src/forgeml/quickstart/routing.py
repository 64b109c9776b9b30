"""The quickstart's fine-tuning task: route a support ticket, answered as JSON.

A closed label set a small model can learn in minutes on 2 cores (see FACTS.md: copying
free text into JSON is not learnable at this scale, choosing among labels is):

    {"category": "billing" | "shipping" | "returns" | "account" | "technical",
     "priority": "high" | "normal"}

Files written into `routing/` (OpenAI fine-tuning JSONL shapes, as a user would bring):

    sft.jsonl            chat examples: most answer in JSON, some think first
                         (`reasoning_content`), some call the `route_ticket` tool
    preferences.jsonl    OpenAI DPO pairs: the right routing vs a plausible wrong one
    prompts.jsonl        prompts with a reference answer, for GRPO
    eval-routing.jsonl   held-out tickets (task suite, scored by exact JSON match)
    eval-tools.jsonl     held-out tickets with the tool offered (scored as tool calls)
    eval-routing-unseen.jsonl  80 hand-written tickets in phrasings the generator never
                         writes (unseen.py): does the model route, or recall phrasings?
    schema.json          the answer's JSON schema (GRPO's validity reward)

Held-out tickets never appear verbatim in any training file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forgeml.core.atomic import write_text_if_changed
from forgeml.quickstart.phrasing import ticket
from forgeml.quickstart.unseen import FRESH_TICKETS, UNSEEN_TICKETS
from forgeml.quickstart.vocabulary import CATEGORIES

SYSTEM_PROMPT = (
    "You route customer support tickets. Answer with JSON only: "
    '{"category": "billing|shipping|returns|account|technical", "priority": "high|normal"}.'
)
LABELS = sorted(CATEGORIES)
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": LABELS},
        "priority": {"type": "string", "enum": ["high", "normal"]},
    },
    "required": ["category", "priority"],
    "additionalProperties": False,
}
ROUTE_TOOL = {
    "type": "function",
    "function": {
        "name": "route_ticket",
        "description": "Send a support ticket to the right team's queue.",
        "parameters": SCHEMA,
    },
}
# What a ticket of each category is about, for the reasoning traces.
GIST = {
    "billing": "a charge, an invoice or a refund",
    "shipping": "a delivery that is late or lost",
    "returns": "sending an item back or replacing it",
    "account": "logging in or account settings",
    "technical": "a device or app that does not work",
}


def _ticket_text(rng: random.Random) -> tuple[str, dict[str, str]]:
    return ticket(rng)


def _tickets(count: int, rng: random.Random, exclude: set[str]) -> Iterator[tuple[str, dict]]:
    made = 0
    while made < count:
        text, label = _ticket_text(rng)
        if text in exclude:
            continue
        exclude.add(text)
        made += 1
        yield text, label


def answer(label: dict[str, str]) -> str:
    return json.dumps(label)


def _prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def _reasoning(label: dict[str, str]) -> str:
    urgency = "says it is urgent" if label["priority"] == "high" else "is not in a hurry"
    return (
        f"The ticket is about {GIST[label['category']]}, so the category is "
        f"{label['category']}. The customer {urgency}, so the priority is {label['priority']}."
    )


def sft_example(text: str, label: dict[str, str], style: str) -> dict[str, Any]:
    """One chat example: `json` answers directly, `reasoning` thinks first, `tool` calls."""
    if style == "tool":
        call = {
            "id": "call_0",
            "type": "function",
            "function": {"name": "route_ticket", "arguments": answer(label)},
        }
        return {
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "", "tool_calls": [call]},
            ],
            "tools": [ROUTE_TOOL],
        }
    assistant: dict[str, Any] = {"role": "assistant", "content": answer(label)}
    if style == "reasoning":
        assistant["reasoning_content"] = _reasoning(label)
    return {"messages": [*_prompt(text), assistant]}


def _wrong(label: dict[str, str], rng: random.Random) -> dict[str, str]:
    """A plausible mistake: the wrong category, or the wrong priority."""
    if rng.random() < 0.7:
        others = [c for c in LABELS if c != label["category"]]
        return {**label, "category": rng.choice(others)}
    return {**label, "priority": "normal" if label["priority"] == "high" else "high"}


def write_routing_task(
    directory: Path,
    seed: int = 0,
    sft_count: int = 2000,
    preference_count: int = 400,
    prompt_count: int = 200,
    eval_count: int = 100,
    tool_eval_count: int = 40,
) -> dict[str, int]:
    """Write the task's files (idempotent: unchanged files are left alone)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    held_out = list(_tickets(eval_count + tool_eval_count, rng, seen))
    evaluation, tool_evaluation = held_out[:eval_count], held_out[eval_count:]
    files = {
        "eval-routing.jsonl": [
            {
                "id": f"route-{i:03d}",
                "messages": _prompt(text),
                "reference": label,
                "schema": SCHEMA,
                "metric": "json_match",
            }
            for i, (text, label) in enumerate(evaluation)
        ],
        "eval-routing-unseen.jsonl": [
            {
                "id": f"unseen-{i:03d}",
                "messages": _prompt(text),
                "reference": {"category": category, "priority": priority},
                "schema": SCHEMA,
                "metric": "json_match",
            }
            for i, (text, category, priority) in enumerate(UNSEEN_TICKETS)
        ]
        + [
            {
                "id": f"fresh-{i:03d}",
                "messages": _prompt(text),
                "reference": {"category": category, "priority": priority},
                "schema": SCHEMA,
                "metric": "json_match",
            }
            for i, (text, category, priority) in enumerate(FRESH_TICKETS)
        ],
        "eval-tools.jsonl": [
            {
                "id": f"tool-{i:03d}",
                "messages": [{"role": "user", "content": text}],
                "tools": [ROUTE_TOOL],
                "reference": {"name": "route_ticket", "arguments": label},
                "metric": "tool_call",
            }
            for i, (text, label) in enumerate(tool_evaluation)
        ],
    }
    # Training tickets may repeat among themselves (real data does); never a held-out one.
    held_texts = set(seen)

    def training(count: int) -> Iterator[tuple[str, dict]]:
        while count:
            text, label = _ticket_text(rng)
            if text not in held_texts:
                count -= 1
                yield text, label

    styles = rng.choices(["json", "reasoning", "tool"], weights=[70, 15, 15], k=sft_count)
    files["sft.jsonl"] = [
        sft_example(text, label, style)
        for (text, label), style in zip(training(sft_count), styles, strict=True)
    ]
    files["preferences.jsonl"] = [
        {
            "input": {"messages": _prompt(text)},
            "preferred_output": [{"role": "assistant", "content": answer(label)}],
            "non_preferred_output": [{"role": "assistant", "content": answer(_wrong(label, rng))}],
        }
        for text, label in training(preference_count)
    ]
    files["prompts.jsonl"] = [
        {"messages": _prompt(text), "reference": answer(label)}
        for text, label in training(prompt_count)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    write_text_if_changed(directory / "schema.json", json.dumps(SCHEMA, indent=2) + "\n")
    for name, records in files.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_text_if_changed(directory / name, lines)
    return {name: len(records) for name, records in files.items()}
