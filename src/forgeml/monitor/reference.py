"""The drift reference of a model: the signals of the data it was trained on.

    forgeml monitor drift support-bot@prod --since 1h    # runs this stage once per model

Found through lineage: every dataset or mixture that a training run in the model's
ancestry read. Fine-tuning data (conversations) comes first: its prompts are what
production prompts should look like. A model trained only on text (pre-training,
continued pre-training) gets a text reference, whose lengths say nothing about prompts:
only the length-free signals (chars per token, language, sketch) are compared then.

Conversations also give the two signals that need the model or the answers:
`prompt_logprob` (each sampled prompt rendered with the chat template the server uses
and scored by the model at the positions the engine scores, serve/engine/prompt_score.py)
and the answers' labels: the top-level string fields of JSON answers with few distinct
values (`label:category`), compared with the enum fields production answers carry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    LABEL_PREFIX,
    MAX_LABEL_CHARS,
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
    scored_records: int = Field(
        400,
        ge=0,
        le=100_000,
        description="Of those, prompts scored by the model for prompt_logprob (a forward each).",
    )


MAX_LABEL_VALUES = 50  # a field with more distinct values is free text, not a label set
MAX_SCORED_TOKENS = 2048  # a longer training prompt is scored on its first tokens


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


@dataclass
class TrainingPrompt:
    text: str  # what the user (and tools) wrote
    turns: int
    messages: list[dict[str, Any]] | None = None  # a conversation's prompt; None for text
    answer: str | None = None  # the assistant's reply to it


def _prompt_of(record: dict[str, Any]) -> TrainingPrompt | None:
    """A training record's prompt (and answer, for a conversation)."""
    messages = record.get("messages")  # iter_records decodes the JSON column
    if messages:
        last_user = max(
            (i for i, m in enumerate(messages) if m.get("role") == "user"), default=None
        )
        if last_user is None:
            return None
        prompt = messages[: last_user + 1]
        replies = [m for m in messages[last_user + 1 :] if m.get("role") == "assistant"]
        answer = replies[0].get("content") if replies else None
        return TrainingPrompt(
            user_text(prompt), len(prompt), prompt, answer if isinstance(answer, str) else None
        )
    text = record.get("text") or ""
    return TrainingPrompt(text, 1) if text.strip() else None


def _score_prompts(
    model_path: Path, tokenizer: Any, prompts: list[TrainingPrompt], budget: int
) -> list[float | None]:
    """prompt_logprob of an even sample of `budget` prompts (None for the rest)."""
    import torch

    from forgeml.models import chat_template
    from forgeml.models.sizes import load_model
    from forgeml.serve.engine.prompt_score import scored_positions

    scores: list[float | None] = [None] * len(prompts)
    if budget == 0 or not prompts:
        return scores
    model = load_model(model_path).eval()
    stride = max(1, len(prompts) // budget)
    with torch.inference_mode():
        for index in range(0, len(prompts), stride)[:budget]:
            text = chat_template.render(prompts[index].messages or [], None, "none")
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_SCORED_TOKENS]
            positions = scored_positions(len(ids))
            if not positions:
                continue
            logits = model(input_ids=torch.tensor([ids])).logits[0, positions].float()
            targets = torch.tensor([ids[i + 1] for i in positions])
            picked = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])
            scores[index] = round(float(picked.mean()), 4)
    return scores


def _answer_labels(prompts: list[TrainingPrompt]) -> dict[str, list[str]]:
    """Per top-level string field of the JSON answers, its values, where they form a
    small closed set (see the module docstring)."""
    values: dict[str, list[str]] = {}
    for prompt in prompts:
        try:
            parsed = json.loads(prompt.answer or "")
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        for field, value in parsed.items():
            if isinstance(value, str) and len(value) <= MAX_LABEL_CHARS:
                values.setdefault(str(field), []).append(value)
    return {
        LABEL_PREFIX + field: found
        for field, found in values.items()
        if len(set(found)) <= MAX_LABEL_VALUES and len(found) >= len(prompts) // 2
    }


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
    tokenizer = AutoTokenizer.from_pretrained(ctx.input_path("model"), local_files_only=True)
    conversations: list[TrainingPrompt] = []
    texts: list[TrainingPrompt] = []
    used = []
    for source in sources:
        artifact = ctx.workspace.registry.resolve(source["ref"], purpose="build a drift reference")
        before = len(conversations) + len(texts)
        for record in _records(ctx.artifact_path(artifact), source["kind"], params.max_records):
            prompt = _prompt_of(record)
            if prompt is None:
                continue
            (conversations if prompt.messages is not None else texts).append(prompt)
            if len(conversations) >= params.max_records:
                break
        if len(conversations) + len(texts) > before:
            used.append(source["ref"])
        if len(conversations) >= params.max_records:
            break
    prompts, kind = (conversations, "conversations") if conversations else (texts, "text")
    prompts = prompts[: params.max_records]
    count = token_counter(tokenizer)
    rows = [prompt_signals(prompt.text, prompt.turns, count) for prompt in prompts]
    signals: dict[str, list[Any]] = {}
    if kind == "conversations":
        compared = [name for name in (*NUMERIC, *CATEGORICAL, *VECTORS) if name != "prompt_logprob"]
        scores = _score_prompts(ctx.input_path("model"), tokenizer, prompts, params.scored_records)
        signals["prompt_logprob"] = [score for score in scores if score is not None]
        signals.update(_answer_labels(prompts))
    else:
        compared = list(LENGTH_FREE)
    signals = {**{name: [row[name] for row in rows] for name in compared}, **signals}
    compared = [name for name in signals if signals[name]]
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
            "signals": {name: signals[name] for name in compared},
        },
    )
    writer.meta.update(report="drift-reference", records=len(rows), kind=kind)
    ctx.set_metrics(records=len(rows), kind=kind, datasets=used)
    ctx.log(f"drift reference: {len(rows)} {kind} records from {', '.join(used)}")
    return {"reference": ctx.commit(writer)}


def load_reference(path: Path) -> dict[str, Any]:
    return json.loads((path / REFERENCE_FILE).read_text())
