"""The drift reference of a model: the signals of the data it was trained on.

    forgeml monitor drift support-bot@prod --since 1h    # runs this stage once per model

Found through lineage: every dataset or mixture that a training run in the model's
ancestry read. Fine-tuning data (conversations) comes first: its prompts are what
production prompts should look like. A model trained only on text (pre-training,
continued pre-training) gets a text reference, whose lengths say nothing about prompts:
only the length-free signals (chars per token, language, sketch) are compared then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.lineage import upstream
from forgeml.core.stages import StageParams, stage
from forgeml.data.dataset import iter_records, read_summary
from forgeml.monitor.signals import (
    CATEGORICAL,
    NUMERIC,
    VECTORS,
    prompt_signals,
    token_counter,
    user_text,
)

FORMAT = "forgeml.drift-reference/1"
REFERENCE_FILE = "reference.json"
LENGTH_FREE = ("chars_per_token", "language", *VECTORS)


class ReferenceParams(StageParams):
    max_records: int = Field(
        2000, ge=50, le=100_000, description="Training records sampled (evenly) for the reference."
    )


def training_data(workspace: Any, model: Any) -> list[dict[str, Any]]:
    """Datasets and mixtures read by training runs in the model's lineage, nearest first."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    frontier = [upstream(workspace, model)]
    while frontier:
        node = frontier.pop(0)
        run = node.get("run") or {}
        trained = run.get("stage", "").startswith("train.")
        for parent in node.get("inputs", []):
            data = parent["kind"] in ("dataset", "mixture")
            if trained and data and parent["ref"] not in seen:
                seen.add(parent["ref"])
                found.append(parent)
            frontier.append(parent)
    return found


def require_training_data(workspace: Any, model: Any) -> list[dict[str, Any]]:
    """`training_data`, or an InputError saying there is nothing to compare with."""
    sources = training_data(workspace, model)
    if not sources:
        raise InputError(
            f"{model.ref} has no training data in its lineage, so there is nothing to compare "
            "production traffic with",
            hint="Drift is measured against the data a model was trained or fine-tuned on "
            "in this workspace; a model imported from a directory has none.",
        )
    return sources


def _records(path: Path, kind: str, budget: int):
    folder = path / "train" if kind == "mixture" else path
    stride = max(1, read_summary(folder).get("documents", 0) // budget)
    for index, record in enumerate(iter_records(folder, columns=["text", "messages"])):
        if index % stride == 0:
            yield record


def _prompt_of(record: dict[str, Any]) -> tuple[str, int, bool] | None:
    """(user text, turns, is a conversation) of a training record's prompt."""
    messages = record.get("messages")  # iter_records decodes the JSON column
    if messages:
        last_user = max(
            (i for i, m in enumerate(messages) if m.get("role") == "user"), default=None
        )
        if last_user is None:
            return None
        prompt = messages[: last_user + 1]
        return user_text(prompt), len(prompt), True
    text = record.get("text") or ""
    return (text, 1, False) if text.strip() else None


@stage(
    "monitor.reference",
    params=ReferenceParams,
    inputs={"model": "model"},
    outputs={"reference": "report"},
)
def reference(ctx: StageContext, params: ReferenceParams):
    """The drift signals of a model's training data (see the module docstring)."""
    from transformers import AutoTokenizer

    model = ctx.inputs["model"]
    sources = require_training_data(ctx.workspace, model)
    count = token_counter(
        AutoTokenizer.from_pretrained(ctx.input_path("model"), local_files_only=True)
    )
    conversations: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    used = []
    for source in sources:
        artifact = ctx.workspace.registry.resolve(source["ref"], purpose="build a drift reference")
        before = len(conversations) + len(texts)
        for record in _records(ctx.artifact_path(artifact), source["kind"], params.max_records):
            prompt = _prompt_of(record)
            if prompt is None:
                continue
            text, turns, is_chat = prompt
            (conversations if is_chat else texts).append(prompt_signals(text, turns, count))
            if len(conversations) >= params.max_records:
                break
        if len(conversations) + len(texts) > before:
            used.append(source["ref"])
        if len(conversations) >= params.max_records:
            break
    rows, kind = (conversations, "conversations") if conversations else (texts, "text")
    rows = rows[: params.max_records]
    compared = [*NUMERIC, *CATEGORICAL, *VECTORS] if kind == "conversations" else list(LENGTH_FREE)
    writer = ctx.new_artifact("report")
    write_json_atomic(
        writer.path / REFERENCE_FILE,
        {
            "format": FORMAT,
            "model": {"ref": model.ref, "sha256": model.sha256},
            "datasets": used,
            "kind": kind,
            "records": len(rows),
            "compared": compared,
            "signals": {name: [row[name] for row in rows] for name in compared},
        },
    )
    writer.meta.update(report="drift-reference", records=len(rows), kind=kind)
    ctx.set_metrics(records=len(rows), kind=kind, datasets=used)
    ctx.log(f"drift reference: {len(rows)} {kind} records from {', '.join(used)}")
    return {"reference": ctx.commit(writer)}


def load_reference(path: Path) -> dict[str, Any]:
    return json.loads((path / REFERENCE_FILE).read_text())
