"""`data.synthesize`: a dataset of documents in, a chat dataset of training examples out.

    forgeml data synthesize help-centre --name help-centre-qa
    forgeml data synthesize help-centre --generator teacher \\
        --teacher-url http://gpu-box:8000/v1 --teacher-model our-large --name help-centre-qa

Each document is cut into passages (passages.py); each passage gives examples for the
chosen tasks, from rules (rules.py, offline) or a teacher model (teacher.py); each
example passes the filters (filters.py) and becomes one chat record whose metadata
names the document, the passage's character range and the sha256 of its bytes. The
output is a normal dataset artifact: `data assess` reads it, `train sft` trains on it,
and forgetting the documents forgets it (lineage).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator, model_validator

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.hashing import sha256_json
from forgeml.core.stages import StageParams, stage
from forgeml.data.dataset import DatasetWriter, iter_records
from forgeml.data.synthesis.filters import ExampleFilter
from forgeml.data.synthesis.passages import Passage, passages
from forgeml.data.synthesis.rules import TASKS, Candidate, candidates
from forgeml.data.synthesis.teacher import (
    PLACEHOLDERS,
    PROMPTS,
    TEACHER_TASKS,
    ReplyCache,
    Teacher,
    api_key,
)
from forgeml.eval.params import EndpointParams

Task = Literal["qa", "summary", "extract", "cloze"]
MAX_WARNINGS = 20


class TeacherParams(EndpointParams):
    api_key_env: str | None = Field(
        default="FORGEML_TEACHER_API_KEY",
        description="Environment variable holding the teacher's API key (never stored).",
    )
    max_tokens: int = Field(default=768, ge=16, le=32768, description="Tokens per reply.")
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="Prompt template per task (qa, summary, extract) replacing the built-in "
        "one; {passage} is required, {title}, {heading} and {count} are optional.",
    )

    @field_validator("prompts")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for task, template in value.items():
            if task not in TEACHER_TASKS:
                raise ValueError(f"no teacher task {task!r}; teacher tasks: {TEACHER_TASKS}")
            if "{passage}" not in template:
                raise ValueError(
                    f"the {task} template must contain {{passage}} (and may use "
                    f"{', '.join(PLACEHOLDERS[1:])})"
                )
        return value


class SynthesizeParams(StageParams):
    generator: Literal["rules", "teacher"] = Field(
        default="rules",
        description="rules: offline, from the documents' own shapes (definitions, lists, "
        "headings, cloze); teacher: a model behind an OpenAI-compatible endpoint.",
    )
    tasks: list[Task] = Field(
        default_factory=lambda: list(TASKS),
        min_length=1,
        description="Kinds of example: qa, summary, extract (JSON items), cloze (always "
        "rule-based).",
    )
    teacher: TeacherParams | None = Field(
        default=None, description="The teacher endpoint (generator: teacher)."
    )
    per_passage: int = Field(
        default=3, ge=1, le=50, description="At most this many examples per task per passage."
    )
    passage_chars: int = Field(
        default=1500, ge=200, le=20000, description="Longest passage, in characters."
    )
    max_examples: int = Field(
        default=20000, ge=1, le=1_000_000, description="Stop after this many examples."
    )
    min_grounding: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Share of an answer's content words that must appear in its passage.",
    )
    max_answer_chars: int = Field(default=2000, ge=1, le=100_000)
    pii: Literal["drop", "keep"] = Field(
        default="drop", description="drop: leave out examples whose question or answer has PII."
    )
    system_prompt: str | None = Field(
        default=None,
        max_length=20_000,
        description="A system message put first in every example (the one you will serve with).",
    )
    name: str | None = Field(default=None, description="Name the output dataset.")

    @model_validator(mode="after")
    def _teacher_given(self) -> SynthesizeParams:
        if self.generator == "teacher" and self.teacher is None:
            raise ValueError(
                "generator 'teacher' needs a teacher endpoint (--teacher-url and --teacher-model)"
            )
        if self.generator == "rules" and self.teacher is not None:
            raise ValueError("a teacher endpoint is given but the generator is 'rules'")
        return self


def _pick(found: list[Candidate], limit: int, seed: int, passage: Passage) -> list[Candidate]:
    """Up to `limit` of one task's candidates, chosen by a seed and the passage's bytes
    (so the choice does not depend on what else is in the dataset), in their order."""
    if len(found) <= limit:
        return found
    rng = random.Random(sha256_json([seed, passage.sha256, found[0].task]))
    chosen = sorted(rng.sample(range(len(found)), limit))
    return [found[index] for index in chosen]


def _rule_candidates(passage: Passage, tasks: set[str], limit: int, seed: int) -> list[Candidate]:
    by_task: dict[str, list[Candidate]] = {}
    for candidate in candidates(passage, tasks):
        by_task.setdefault(candidate.task, []).append(candidate)
    return [c for task in sorted(by_task) for c in _pick(by_task[task], limit, seed, passage)]


def _documents(ctx: StageContext, params: SynthesizeParams) -> Iterator[tuple[dict, Passage]]:
    for row in iter_records(ctx.input_path("dataset")):
        title = str((row.get("metadata") or {}).get("title") or "")
        for passage in passages(row["id"], row["text"] or "", params.passage_chars, title):
            yield row, passage


def _row(
    document: dict, candidate: Candidate, params: SynthesizeParams, teacher_model: str | None
) -> dict:
    messages = [{"role": "user", "content": candidate.question}]
    if params.system_prompt:
        messages.insert(0, {"role": "system", "content": params.system_prompt})
    messages.append({"role": "assistant", "content": candidate.answer})
    origin = {
        "task": candidate.task,
        "generator": "teacher" if candidate.rule == "teacher" else "rules",
        "rule": candidate.rule,
        "passage": candidate.passage.lineage(),
    }
    if candidate.rule == "teacher":
        origin["teacher_model"] = teacher_model
    key = sha256_json([candidate.task, candidate.question, candidate.answer, origin["passage"]])
    return {
        "id": f"synth-{key[:20]}",
        "text": f"{candidate.question}\n\n{candidate.answer}",
        "source": document.get("source", ""),
        "source_sha256": document.get("source_sha256", ""),
        "metadata": {"format": "synthetic", "synthetic": origin},
        "messages": messages,
    }


@stage(
    "data.synthesize",
    params=SynthesizeParams,
    inputs={"dataset": "dataset"},
    outputs={"dataset": "dataset"},
)
def synthesize(ctx: StageContext, params: SynthesizeParams):
    """Make training examples (questions and answers, summaries, extraction, cloze) from
    documents, each traced to the passage it came from."""
    tasks = set(params.tasks)
    teacher = _teacher(ctx, params) if params.generator == "teacher" else None
    rule_tasks = tasks - set(TEACHER_TASKS) if teacher else tasks
    keep = ExampleFilter(
        min_grounding=params.min_grounding,
        max_answer_chars=params.max_answer_chars,
        drop_pii=params.pii == "drop",
    )
    writer = ctx.new_artifact("dataset")
    dataset = DatasetWriter(writer.path)
    counts: Counter = Counter()
    documents: set[str] = set()
    passages_seen = candidates_seen = 0
    teacher_jobs: list[tuple[dict, Passage]] = []

    def emit(document: dict, found: list[Candidate]) -> bool:
        """Keep what passes; False once max_examples is reached."""
        nonlocal candidates_seen
        for candidate in found:
            candidates_seen += 1
            if keep.keep(candidate):
                dataset.add(_row(document, candidate, params, teacher and teacher.model.model))
                counts[candidate.task] += 1
                if sum(counts.values()) >= params.max_examples:
                    return False
        return True

    def ask_teacher() -> bool:
        jobs = [
            (task, passage)
            for _, passage in teacher_jobs
            for task in sorted(tasks)
            if task in TEACHER_TASKS
        ]
        by_passage = {id(passage): document for document, passage in teacher_jobs}
        teacher_jobs.clear()
        for candidate in teacher.candidates(jobs):
            if not emit(by_passage[id(candidate.passage)], [candidate]):
                return False
        ctx.raise_if_cancelled()
        return True

    going = True
    for document, passage in _documents(ctx, params):
        documents.add(document["id"])
        passages_seen += 1
        going = emit(document, _rule_candidates(passage, rule_tasks, params.per_passage, ctx.seed))
        if going and teacher:
            teacher_jobs.append((document, passage))
            if len(teacher_jobs) >= teacher.chunk:
                going = ask_teacher()
        if not going:
            ctx.warn(f"stopped at max_examples ({params.max_examples}); later passages unused")
            break
        if passages_seen % 500 == 0:
            ctx.raise_if_cancelled()
            ctx.log(f"{passages_seen} passages, {sum(counts.values())} examples")
    if going and teacher and teacher_jobs:
        ask_teacher()
    if teacher:
        for problem in teacher.unusable[:MAX_WARNINGS]:
            ctx.warn(f"teacher reply left out: {problem}")
    examples = sum(counts.values())
    if examples == 0:
        ctx.discard(writer)
        raise InputError(
            f"no examples came out of {len(documents)} documents ({passages_seen} passages, "
            f"{candidates_seen} candidates; dropped: {dict(keep.dropped) or 'none'})",
            hint="Rules need prose with definitions, lists, headings or sentences of 8+ "
            "words; a teacher's answers must use the passage's words (lower "
            "--min-grounding to accept looser ones).",
        )
    summary = dataset.close()
    writer.meta.update(
        documents=summary["documents"],
        characters=summary["characters"],
        format="chat",
        synthetic={"generator": params.generator, "tasks": dict(sorted(counts.items()))},
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    ctx.set_metrics(
        documents=len(documents),
        passages=passages_seen,
        candidates=candidates_seen,
        examples=examples,
        **{f"examples_{task}": counts[task] for task in sorted(tasks)},
        **{f"dropped_{reason}": count for reason, count in sorted(keep.dropped.items())},
        **(
            {
                "teacher_requests": teacher.asked,
                "teacher_replies_reused": teacher.reused,
                "teacher_replies_unusable": len(teacher.unusable),
            }
            if teacher
            else {}
        ),
    )
    return {"dataset": artifact}


def _teacher(ctx: StageContext, params: SynthesizeParams) -> Teacher:
    from forgeml.eval.endpoint import EndpointChatModel

    options = params.teacher
    assert options is not None  # the validator saw to it
    model = EndpointChatModel(
        options.url,
        options.model,
        api_key(options.api_key_env),
        max_new_tokens=options.max_tokens,
        concurrency=options.concurrency,
        timeout=options.timeout,
    )
    cache = ReplyCache(ctx.checkpoint_dir / "teacher-replies.jsonl")
    return Teacher(model, cache, {**PROMPTS, **options.prompts}, params.per_passage)
