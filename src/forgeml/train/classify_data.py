"""Classifier data: Mistral's classifier format, read from a dataset and checked whole.

    {"text": "My parcel never came", "labels": {"category": "shipping", "urgency": "high"}}
    {"messages": [{"role": "user", "content": "..."}], "labels": {"category": "returns"}}
    {"text": "...", "labels": {"topics": ["billing", "refund"]}}      # multi-label

Each key of `labels` is a label set; a set given as a list anywhere is multi-label (any
number of its labels apply), otherwise exactly one label applies. A record may leave a
set out (it then teaches nothing about it). The chat variant is classified on the
conversation as the chat template renders it, so the server classifies
`/v1/chat/classifications` input the same way.

    records = load_classification(dataset_dir)            # InputError names file:line
    sets = label_sets(records)                            # sorted, deterministic
    check_labels_known(validation, sets, "validation")    # a label training never saw
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.dataset import iter_records
from forgeml.data.formats import check_record
from forgeml.models.chat_template import render

MAX_LABELS_PER_SET = 1_000
MAX_ERRORS_SHOWN = 5
HINT = (
    'each record: {"text": "...", "labels": {"category": "returns"}} or '
    '{"messages": [...], "labels": {...}}; a list of labels makes a set multi-label'
)


@dataclass(frozen=True)
class ClassifyRecord:
    text: str | None
    messages: list[dict[str, Any]] | None
    labels: dict[str, list[str]]
    multi: frozenset[str]  # the sets this record gave as lists
    where: str

    def input_text(self) -> str:
        """What the classifier reads: the text, or the conversation as rendered."""
        if self.messages is not None:
            return classification_input(self.messages)
        assert self.text is not None
        return self.text


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    multi_label: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "multi_label": self.multi_label}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> LabelSet:
        return LabelSet(data["name"], tuple(data["labels"]), bool(data["multi_label"]))


def classification_input(messages: list[dict[str, Any]]) -> str:
    """A conversation as the classifier reads it: the chat template, no generation prompt."""
    return render(messages, reasoning_effort="none")


def load_classification(directory: Path) -> list[ClassifyRecord]:
    """Every record of a dataset in classifier form, or an `InputError` listing the first
    problems by source file and line (checked by forgeml.data.formats, as uploads are)."""
    records: list[ClassifyRecord] = []
    problems: list[str] = []
    for row in iter_records(directory):
        metadata = row.get("metadata") or {}
        line = metadata.get("line")
        where = f"{row.get('source') or row['id']}{f':{line}' if line else ''}"
        labels = (metadata.get("fields") or {}).get("labels", metadata.get("labels"))
        if labels is None:
            problems.append(f"{where}: no 'labels' field")
            continue
        given = {"messages": row["messages"]} if row.get("messages") else {"text": row["text"]}
        _, canonical, found = check_record({**given, "labels": labels}, "classification")
        if canonical is None:
            problems += [f"{where}: {problem}" for problem in found]
            continue
        records.append(
            ClassifyRecord(
                text=canonical.get("text"),
                messages=canonical.get("messages"),
                labels=canonical["labels"],
                multi=frozenset(canonical["multi_label"]),
                where=where,
            )
        )
    if problems:
        shown = "\n".join(problems[:MAX_ERRORS_SHOWN])
        more = len(problems) - MAX_ERRORS_SHOWN
        raise InputError(
            f"the dataset is not classifier data:\n{shown}"
            + (f"\n... and {more} more" if more > 0 else ""),
            hint=HINT,
        )
    if not records:
        raise InputError("the dataset has no records", path=directory)
    return records


def label_sets(records: list[ClassifyRecord]) -> list[LabelSet]:
    """The label sets of the training records, by name, each with its sorted labels."""
    names: dict[str, set[str]] = {}
    multi: set[str] = set()
    for record in records:
        for name, values in record.labels.items():
            names.setdefault(name, set()).update(values)
        multi |= record.multi
    sets = []
    for name in sorted(names):
        labels = tuple(sorted(names[name]))
        if len(labels) > MAX_LABELS_PER_SET:
            raise InputError(
                f"label set {name!r} has {len(labels):,} labels; at most {MAX_LABELS_PER_SET:,}",
                field=f"labels.{name}",
            )
        if len(labels) < 2 and name not in multi:
            raise InputError(
                f"label set {name!r} has one label ({labels[0]!r}): nothing to tell apart",
                field=f"labels.{name}",
                hint="give examples of at least two labels, or make the set multi-label",
            )
        sets.append(LabelSet(name, labels, name in multi))
    return sets


def check_labels_known(records: list[ClassifyRecord], sets: list[LabelSet], what: str) -> None:
    """Labels or sets the model was not trained on: an error naming the first records."""
    known = {s.name: set(s.labels) for s in sets}
    problems = []
    for record in records:
        for name, values in record.labels.items():
            if name not in known:
                problems.append(f"{record.where}: label set {name!r} is not one the model has")
            for value in values:
                if name in known and value not in known[name]:
                    problems.append(f"{record.where}: labels.{name}: {value!r} is not a label")
    if problems:
        shown = "\n".join(problems[:MAX_ERRORS_SHOWN])
        trained = "; ".join(f"{s.name}: {', '.join(s.labels)}" for s in sets)[:1000]
        raise InputError(
            f"the {what} data has labels the training data does not:\n{shown}",
            hint=f"the trained label sets are {trained}",
        )
