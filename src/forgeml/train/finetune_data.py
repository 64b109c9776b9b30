"""Fine-tuning data: dataset records in, what the trainers read out.

    records = load_records(dataset_dir, "chat")           # canonical dicts (formats package)
    examples = [sft_example(tokenizer, r, "auto", 1024) for r in records]
    pairs = [preference_strings(r, "auto") for r in records]
    prompts = [prompt_row(r, "auto") for r in records]

One renderer for everything: `chat_template.render`. SFT examples are tokenized by
`tokenize_for_training` (labels -100 outside assistant turns) and handed to TRL
pre-tokenized; preference pairs and RL prompts are handed over as text already
rendered, so TRL never applies a chat template of its own and every stage, the
evaluator and the server see byte-identical conversations. (TRL's conversational path
would store messages in Arrow columns, which pads every message and tool schema with
the union of all keys as nulls, and would decode RL completions without the control
tokens that tool calls are parsed from.)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.dataset import iter_records
from forgeml.data.formats import check_record
from forgeml.models.chat_template import render, render_with_assistant_mask, tokenize_for_training
from forgeml.models.image_inputs import ImageShape, message_image_urls
from forgeml.train.vision_data import with_image_tokens

MAX_ERRORS_SHOWN = 5
# Metadata the readers add about where a record came from; not fields of the record.
READER_KEYS = {"format", "line", "row", "encoding", "encoding_fallback", "page", "pages", "title"}
_HINTS = {
    "chat": 'each record: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}',
    "preference": 'each record: {"prompt", "chosen", "rejected"} or OpenAI\'s {"input", '
    '"preferred_output", "non_preferred_output"}, ingested from a jsonl as it is',
    "prompt": 'each record: {"messages": [..., {"role": "user", ...}], "reference"?: ...}',
}


def original_record(row: dict[str, Any]) -> dict[str, Any]:
    """The training record a dataset row was ingested from, as far as it was kept.

    Chat lines keep their `messages` (and `tools` in metadata), the jsonl reader keeps
    a line's other fields under `metadata["fields"]` (preference and prompt lines
    whole), and `metadata_fields` chosen at ingest are read too. A line ingested with
    `text_field` naming one of its fields has that text as its `prompt` here.
    """
    metadata = row.get("metadata") or {}
    record = dict(metadata.get("fields") or {})
    record.update({k: v for k, v in metadata.items() if k not in READER_KEYS | {"fields"}})
    if row.get("messages") is not None:
        record["messages"] = row["messages"]
    elif "fields" not in metadata and not record.keys() & {"prompt", "input", "messages"}:
        record["prompt"] = row["text"]  # (a line kept whole may have an implicit prompt)
    return record


def load_records(directory: Path, expected_format: str) -> list[dict[str, Any]]:
    """Every record of a dataset in its canonical form (see forgeml.data.formats), or an
    `InputError` listing the first problems by source file and line."""
    records, problems, count = [], [], 0
    for row in iter_records(directory):
        count += 1
        _, canonical, found = check_record(original_record(row), expected_format)
        if canonical is not None:
            records.append(canonical)
            continue
        where = row.get("source", "") or row["id"]
        line = (row.get("metadata") or {}).get("line")
        for problem in found:
            problems.append(f"{where}{f':{line}' if line else ''}: {problem}")
    if problems:
        shown = "\n".join(problems[:MAX_ERRORS_SHOWN])
        more = len(problems) - MAX_ERRORS_SHOWN
        tail = f"\n... and {more} more" if more > 0 else ""
        raise InputError(
            f"the dataset is not {expected_format} data:\n{shown}{tail}",
            hint=_HINTS[expected_format],
        )
    if count == 0:
        raise InputError("the dataset has no records", path=directory)
    return records


def effort(messages: list[dict[str, Any]], setting: str) -> str:
    """`auto`: reasoning on ("high") when an assistant turn carries a reasoning trace."""
    if setting != "auto":
        return setting
    return "high" if any(m.get("reasoning_content") for m in messages) else "none"


@dataclass(frozen=True)
class SFTExample:
    input_ids: list[int]
    labels: list[int]
    images: list[str] = field(default_factory=list)  # data URLs, in token order


def sft_example(
    tokenizer: Any,
    record: dict[str, Any],
    reasoning_effort: str,
    seq_len: int,
    image_shape: ImageShape | None = None,
) -> SFTExample:
    """Token ids and labels (-100 outside assistant turns), cut to `seq_len` tokens.

    A conversation with images needs the model's `image_shape` (vision.py): each image
    becomes its grid of image tokens (vision_data.py)."""
    messages = record["messages"]
    input_ids, labels = tokenize_for_training(
        tokenizer, messages, record.get("tools"), effort(messages, reasoning_effort)
    )
    urls = message_image_urls(messages)
    if urls:
        input_ids, labels, urls = with_image_tokens(
            tokenizer, input_ids, labels, urls, image_shape, seq_len
        )
    return SFTExample(input_ids[:seq_len], labels[:seq_len], urls)


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


@dataclass(frozen=True)
class Preview:
    segments: list[Segment]
    tokens: int
    trained_tokens: int


def preview_example(tokenizer: Any, example: SFTExample) -> Preview:
    """The example as runs of trained and masked tokens, decoded (for `--preview`)."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != -100
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    return Preview(
        [
            Segment(tokenizer.decode(ids, skip_special_tokens=False), trained)
            for trained, ids in runs
        ],
        tokens=len(example.input_ids),
        trained_tokens=sum(label != -100 for label in example.labels),
    )


def assistant_text(record: dict[str, Any], reasoning_effort: str) -> list[str]:
    """The rendered assistant turns that training should see (what `segments` must mark)."""
    messages = record["messages"]
    text, spans = render_with_assistant_mask(
        messages, record.get("tools"), effort(messages, reasoning_effort)
    )
    return [text[start:end] for start, end in spans]


def preference_strings(record: dict[str, Any], reasoning_effort: str) -> dict[str, str]:
    """`prompt` rendered up to the model's turn, `chosen`/`rejected` as the text that
    follows it, ending with `</s>`: TRL's standard (not conversational) preference row."""
    prompt, tools = record["prompt"], record.get("tools")
    setting = effort(prompt + record["chosen"] + record["rejected"], reasoning_effort)
    head = render(prompt, tools, setting)
    row = {"prompt": head}
    for side in ("chosen", "rejected"):
        full = render(prompt + record[side], tools, setting)
        if not full.startswith(head):  # cannot happen with our layout; guard the invariant
            raise InputError(f"the rendered {side} answer does not extend its prompt")
        row[side] = full[len(head) :]
    return row


def prompt_row(record: dict[str, Any], reasoning_effort: str) -> dict[str, str]:
    """An RL prompt rendered up to the model's turn, with what the rewards need as JSON
    text (`item`: the record's other fields; `tools`: its declared tools)."""
    prompt = record["prompt"]
    return {
        "prompt": render(prompt, record.get("tools"), effort(prompt, reasoning_effort)),
        "item": json.dumps(record.get("extra") or {}, ensure_ascii=False, sort_keys=True),
        "tools": json.dumps(record.get("tools") or [], ensure_ascii=False),
    }


def split_held_out(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held out): a seeded choice of `fraction` of the items, at least one when
    there are two or more and `fraction` > 0."""
    if fraction <= 0 or len(items) < 2:
        return items, []
    count = max(1, round(len(items) * fraction))
    held = set(random.Random(seed).sample(range(len(items)), count))
    return (
        [item for i, item in enumerate(items) if i not in held],
        [item for i, item in enumerate(items) if i in held],
    )
