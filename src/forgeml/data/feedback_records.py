"""Production feedback in, fine-tuning records out: what `data.from_feedback` writes.

Ratings are on the stored 1..5 scale (forgeml.core.feedback): at least `min_rating` is a
good answer, 2 or less a bad one, 3 neutral. A correction is `corrected_output` (what
the answer should have been), else `preferred_output`.

preference  {"prompt", "chosen", "rejected"}: the correction over the model's answer,
            when the answer was not rated good; and, per prompt, the good answers over
            the bad ones, paired round-robin so a prompt asked often adds
            max(good, bad) pairs, not good x bad.
sft         {"messages"}: the conversation with the correction, or with the model's
            answer when it was rated good. Earlier assistant turns of the conversation
            get weight 0: nobody rated them.
prompts     {"messages", "reference"?} per distinct prompt, for train.rl; the reference
            is the latest correction of it, and is what `exact_match` or an OpenAI
            grader's `{{item.reference}}` compares with.

Each record is checked as its format before it is kept (a model's answer can hold a
malformed tool call); the ones that fail are returned in `skipped` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forgeml.core.feedback import BAD_UP_TO, FeedbackEntry
from forgeml.core.hashing import sha256_json
from forgeml.data.formats import check_record

FORMAT_OF = {"preference": "preference", "sft": "chat", "prompts": "prompt"}  # per output


@dataclass
class FeedbackRecords:
    """Dataset rows (forgeml.data.dataset) per output, and what was left out."""

    preference: list[dict[str, Any]] = field(default_factory=list)
    sft: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def build_records(
    entries: list[FeedbackEntry], min_rating: int, reference_only: bool = False
) -> FeedbackRecords:
    out = FeedbackRecords()
    by_prompt: dict[str, list[FeedbackEntry]] = {}
    for entry in entries:
        by_prompt.setdefault(_prompt_key(entry), []).append(entry)
    seen_sft: set[str] = set()
    for entry in entries:
        good = entry.rating is not None and entry.rating >= min_rating
        correction = entry.corrected_output or entry.preferred_output
        if correction and not good:
            record = {"prompt": entry.messages, "chosen": [_answer(correction)]}
            record["rejected"] = [entry.output]
            _keep(out, "preference", _with_tools(record, entry), [entry])
        answer = _answer(correction) if correction else entry.output if good else None
        if answer is not None:
            record = _with_tools({"messages": [*_unrated(entry.messages), answer]}, entry)
            if (key := sha256_json(record)) not in seen_sft:
                seen_sft.add(key)
                _keep(out, "sft", record, [entry])
    for group in by_prompt.values():
        for chosen, rejected in _rated_pairs(group, min_rating):
            record = {"prompt": chosen.messages, "chosen": [chosen.output]}
            record["rejected"] = [rejected.output]
            _keep(out, "preference", _with_tools(record, chosen), [chosen, rejected])
        corrected = [e for e in group if e.corrected_output]
        if reference_only and not corrected:
            continue
        record = _with_tools({"messages": group[0].messages}, group[0])
        if corrected:
            record["reference"] = corrected[-1].corrected_output
        _keep(out, "prompts", record, group)
    return out


def _rated_pairs(
    group: list[FeedbackEntry], min_rating: int
) -> Iterator[tuple[FeedbackEntry, FeedbackEntry]]:
    good = _distinct(e for e in group if e.rating is not None and e.rating >= min_rating)
    bad = _distinct(e for e in group if e.rating is not None and e.rating <= BAD_UP_TO)
    if good and bad:
        for index in range(max(len(good), len(bad))):
            chosen, rejected = good[index % len(good)], bad[index % len(bad)]
            if chosen.output != rejected.output:
                yield chosen, rejected


def _distinct(entries: Iterator[FeedbackEntry]) -> list[FeedbackEntry]:
    """One entry per distinct answer (the first that gave it)."""
    seen: dict[str, FeedbackEntry] = {}
    for entry in entries:
        seen.setdefault(sha256_json(entry.output), entry)
    return list(seen.values())


def _keep(
    out: FeedbackRecords, dataset: str, record: dict[str, Any], sources: list[FeedbackEntry]
) -> None:
    ids = [entry.id for entry in sources]
    _, canonical, problems = check_record(record, FORMAT_OF[dataset])
    if canonical is None:
        reason = "; ".join(str(problem) for problem in problems[:3])
        out.skipped.append({"dataset": dataset, "feedback_ids": ids, "reason": reason})
        return
    getattr(out, dataset).append(_row(dataset, record, ids))


def _row(dataset: str, record: dict[str, Any], ids: list[int | None]) -> dict[str, Any]:
    """A dataset row the way data.ingest stores such a jsonl line, so the training
    stages read it back with `finetune_data.original_record`."""
    named = "-".join(map(str, ids)) if len(ids) <= 2 else sha256_json(ids)[:16]
    metadata: dict[str, Any] = {"format": "feedback", "feedback_ids": ids}
    if "messages" in record:  # sft and prompts: structured messages, other fields aside
        fields = {k: v for k, v in record.items() if k not in ("messages", "tools")}
        if "tools" in record:
            metadata["tools"] = record["tools"]
        if fields:
            metadata["fields"] = fields
        messages = record["messages"]
    else:  # preference: the record whole
        metadata["fields"] = record
        messages = None
    text = "\n\n".join(_contents(record))
    return {
        "id": f"feedback-{dataset}-{named}",
        "text": text,
        "metadata": metadata,
        "messages": messages,
    }


def _contents(record: dict[str, Any]) -> Iterator[str]:
    for name in ("messages", "prompt", "chosen", "rejected"):
        for message in record.get(name) or []:
            if isinstance(message.get("content"), str) and message["content"].strip():
                yield message["content"]


def _prompt_key(entry: FeedbackEntry) -> str:
    return sha256_json({"messages": entry.messages, "tools": entry.tools})


def _answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _unrated(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier assistant turns are context, not answers anyone rated: weight 0."""
    return [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in messages]


def _with_tools(record: dict[str, Any], entry: FeedbackEntry) -> dict[str, Any]:
    return {**record, "tools": entry.tools} if entry.tools else record
