"""`data.assess`: one pass over a dataset into a report of what it holds and what it is good for.

    forgeml data assess support-docs [--tokenizer docs-tok] [--size small] --name docs-report

The report artifact:

    report.json       documents, characters, tokens (and how they were counted), by_source,
                      exact_duplicates, near_duplicates, pii, languages, quality, structure,
                      readiness, next_steps (see assessment.py and readiness.py)
    report.html       the same for people: one self-contained page with inline SVG charts
    documents.parquet one row per document: every finding (see scan.FindingsWriter);
                      `data.clean --report` reuses it instead of running the detectors again

Tokens are counted with the `tokenizer` input when one is given, else estimated as
ceil(characters / chars_per_token) per document.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from forgeml import __version__
from forgeml.core.atomic import write_json_atomic, write_text_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.data.assessment import Profile
from forgeml.data.quality import QualityThresholds
from forgeml.data.readiness import readiness
from forgeml.data.report_html import render
from forgeml.data.scan import (
    ExecutorParams,
    FindingsWriter,
    detector_fingerprint,
    iter_batches,
    scan,
)
from forgeml.models.size_table import check_size_name

FORMAT = "forgeml.report/1"
REPORT_FILE = "report.json"
HTML_FILE = "report.html"
FINDINGS_FILE = "documents.parquet"


class AssessParams(ExecutorParams):
    size: str = Field(default="small", description="Model size the pre-training verdict is for.")
    vocab_size: int | None = Field(
        default=None,
        ge=1,
        description="Vocabulary for the parameter count; default: the tokenizer's, else the size's usual one.",
    )
    chars_per_token: float = Field(
        default=4.0,
        gt=0,
        description="Token estimate without a tokenizer (≈4 characters per token for English BPE).",
    )
    near_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Jaccard similarity of 5-word shingle sets from which a document is a near duplicate.",
    )
    quality: QualityThresholds = Field(
        default_factory=QualityThresholds,
        description="Quality filter thresholds (Gopher's by default) to count failures against.",
    )
    samples: int = Field(
        default=5, ge=0, le=100, description="Duplicate clusters and PII examples shown per kind."
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Processes for the detectors (default: one per core, up to 4); the report is the same.",
    )
    name: str | None = Field(default=None, description="Name the report.")

    @field_validator("size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        return check_size_name(value)


def token_counter(ctx: StageContext, params: AssessParams) -> tuple[Callable, dict[str, Any]]:
    """A function texts -> token counts, and how the counting is described in the report."""
    if "tokenizer" not in ctx.inputs:
        per_token = params.chars_per_token

        def estimate(texts: list[str]) -> list[int]:
            return [math.ceil(len(text) / per_token) for text in texts]

        return estimate, {
            "method": "estimate",
            "rule": f"ceil(characters / {per_token:g}) per document",
            "tokenizer": None,
            "vocab_size": None,
        }
    from tokenizers import Tokenizer

    path = ctx.input_path("tokenizer") / "tokenizer.json"
    if not path.is_file():
        raise InputError("the tokenizer artifact has no tokenizer.json", path=path.parent)
    tokenizer = Tokenizer.from_file(str(path))

    def count(texts: list[str]) -> list[int]:
        # encode_batch runs in Rust threads; special tokens are not added, as for raw text.
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

    return count, {
        "method": "tokenizer",
        "rule": "tokens of each document's text, no special tokens added",
        "tokenizer": ctx.inputs["tokenizer"].ref,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
    }


@stage(
    "data.assess",
    params=AssessParams,
    inputs={"dataset": "dataset", "tokenizer": "tokenizer?"},
    outputs={"report": "report"},
)
def assess(ctx: StageContext, params: AssessParams):
    """Report a dataset's size, sources, duplicates, PII, languages, quality and readiness."""
    dataset = ctx.inputs["dataset"]
    count_tokens, tokens = token_counter(ctx, params)
    writer = ctx.new_artifact("report")
    profile = Profile(params.quality, params.samples)
    findings = FindingsWriter(writer.path / FINDINGS_FILE)
    for batch, found in scan(
        ctx.input_path("dataset"),
        workers=params.workers,
        dedup_threshold=params.near_threshold,
        executor=params.executor,
        ray_address=params.ray_address,
    ):
        counts = count_tokens(batch.texts)
        failed = profile.add(batch, found, counts)
        findings.add(batch, found, counts, failed)
        ctx.raise_if_cancelled()
    findings.close()
    profile.add_kept_excerpts(iter_batches(ctx.input_path("dataset")))

    body = profile.to_dict()
    total = profile.tokens
    tokens.update(
        total=total, characters_per_token=round(body["characters"] / total, 3) if total else None
    )
    structure = body["structure"]
    report = {
        "format": FORMAT,
        "forgeml_version": __version__,
        "dataset": {"ref": dataset.ref, "sha256": dataset.sha256},
        "tokens": tokens,
        **body,
        "readiness": readiness(
            total,
            structure["chat"],
            structure["preference"],
            params.size,
            params.vocab_size or tokens["vocab_size"],
        ),
        "findings": {
            "file": FINDINGS_FILE,
            "detectors": detector_fingerprint(),
            "near_threshold": params.near_threshold,
        },
    }
    report["next_steps"] = next_steps(report, params.name or "REPORT")
    write_json_atomic(writer.path / REPORT_FILE, report)
    write_text_atomic(writer.path / HTML_FILE, render(report))

    verdicts = {key: value["verdict"] for key, value in report["readiness"].items()}
    writer.meta.update(dataset=dataset.ref, documents=profile.documents, tokens=total)
    ctx.set_metrics(
        documents=profile.documents,
        characters=profile.characters,
        tokens=total,
        tokens_method=tokens["method"],
        exact_duplicates=body["exact_duplicates"]["documents"],
        near_duplicates=body["near_duplicates"]["documents"],
        pii_matches=body["pii"]["matches"],
        pii_by_type=body["pii"]["by_type"],
        documents_failing_quality=body["quality"]["documents_failing"],
        languages=dict(list(body["languages"]["documents"].items())[:5]),
        structure=structure,
        images=body["images"]["images"],
        readiness=verdicts,
        next_steps=report["next_steps"],
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    return {"report": artifact}


def next_steps(report: dict[str, Any], report_ref: str) -> list[str]:
    """What a person should do with this dataset, most useful first; commands in backticks."""
    dataset = report["dataset"]["ref"]
    documents = max(report["documents"], 1)
    steps = []
    duplicates = report["exact_duplicates"]["documents"] + report["near_duplicates"]["documents"]
    failing = report["quality"]["documents_failing"]
    pii = report["pii"]["matches"]
    if duplicates or failing or pii:
        steps.append(
            f"Clean it: `forgeml data clean {dataset} --report {report_ref}` removes "
            f"{duplicates:,} duplicates and {failing:,} documents failing quality filters and "
            f"redacts {pii:,} PII matches; every change is kept in a rejects artifact."
        )
    failures = report["quality"]["failures"]
    if failures:
        name, count = next(iter(failures.items()))
        if count / documents > 0.2:
            steps.append(
                f"The {name} filter fails {count / documents:.0%} of documents: look at some in "
                f"documents.parquet; if they are fine, loosen it in clean's `quality` parameters."
            )
    languages = report["languages"]["documents"]
    if languages:
        top, count = next(iter(languages.items()))
        if count / documents < 0.95:
            steps.append(
                f"{documents - count:,} documents are not in {top!r}: keep one language with "
                f"`forgeml data clean {dataset} --language {top}`."
            )
    verdicts = report["readiness"]
    if verdicts["pretrain"]["verdict"] == "insufficient":
        size = verdicts["pretrain"].get("largest_supported_size")
        steps.append(
            "Too little text to pre-train this size from scratch: "
            + (f"assess with `--size {size}`, " if size else "")
            + "collect more, or continue pre-training an existing base model."
        )
    if verdicts["fine_tuning"]["verdict"] != "ready":
        steps.append(
            "To fine-tune, add chat examples (10k-50k for a pilot) and check them with "
            "`forgeml data validate FILE --format chat`"
            + (
                f", or make them from these documents: `forgeml data synthesize {dataset}`."
                if report["structure"].get("text")
                else "."
            )
        )
    steps.append(
        "Then mix the cleaned dataset and train a tokenizer: `forgeml data mix CLEANED` and "
        "`forgeml tokenizer train MIXTURE`."
    )
    return steps
