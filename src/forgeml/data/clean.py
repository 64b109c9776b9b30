"""`data.clean`: remove duplicates and poor documents, redact PII; keep every decision.

    forgeml data clean support-docs [--report docs-report] [--no-dedup] [--no-pii] \
        [--min-words 20] [--language en] --name support-clean

Each document, in dataset order, is checked in one pass:

1. duplicates: an exact copy (case and whitespace folded) or a near copy (Jaccard
   of 5-word shingle sets >= near_threshold) of an earlier document is removed and
   the earlier one kept. Duplicates are found over the whole input, before the filters,
   so what is removed is exactly what `data.assess` reported.
2. quality: Gopher's rules (`QualityThresholds`, every limit a parameter).
3. language: with `languages`, documents in other languages, or identified with less
   than `min_language_confidence`, are removed.
4. PII in the documents that stay is replaced by typed placeholders (`<EMAIL>`,
   `<PHONE>`, ...), in the text, in every chat message and in a fine-tuning line's own
   fields (`metadata["fields"]`).

Outputs: `dataset` (the cleaned records, ids and order unchanged) and `rejects` (every
removed or redacted document with its reasons and original record; see rejects.py).
Given the dataset's `report` from `data.assess`, its saved findings are used instead of
running the detectors again; the output is the same either way.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import Field, field_validator

from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import stage
from forgeml.data.assess import FINDINGS_FILE, REPORT_FILE
from forgeml.data.dataset import DatasetWriter
from forgeml.data.pii import PII_TYPES, PLACEHOLDERS, PiiMatch, find_pii, redact
from forgeml.data.quality import QualityThresholds, failed_filters
from forgeml.data.rejects import RejectsWriter
from forgeml.data.scan import Batch, ExecutorParams, Finding, detector_fingerprint, scan


class CleanParams(ExecutorParams):
    dedup: bool = Field(
        default=True, description="Remove exact and near duplicates (the first copy stays)."
    )
    near_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Jaccard similarity of 5-word shingle sets from which a document is a near duplicate.",
    )
    pii: bool = Field(
        default=True, description="Redact PII with typed placeholders such as <EMAIL>."
    )
    pii_types: list[str] | None = Field(
        default=None, description=f"PII types to redact (default: all of {', '.join(PII_TYPES)})."
    )
    quality: QualityThresholds | None = Field(
        default_factory=QualityThresholds,
        description="Quality filter thresholds (Gopher's by default); null keeps every document.",
    )
    languages: list[str] | None = Field(
        default=None, description="Keep only documents in these languages (ISO 639-1, e.g. en)."
    )
    min_language_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="With `languages`: documents identified less surely than this are removed.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Processes for the detectors (default: one per core, up to 4); the output is the same.",
    )
    name: str | None = Field(
        default=None, description="Name the cleaned dataset; its rejects are named NAME-rejects."
    )

    @field_validator("pii_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"unknown PII type(s) {unknown}; choose from {', '.join(PII_TYPES)}")
        return value


def _redact_with(text: str, matches: list[PiiMatch]) -> str:
    """`pii.redact` for matches already found (saved findings or this scan's)."""
    pieces, position = [], 0
    for match in matches:
        pieces += [text[position : match.start], PLACEHOLDERS[match.type]]
        position = match.end
    pieces.append(text[position:])
    return "".join(pieces)


def _redactions(field: str, matches: list[PiiMatch]) -> list[dict[str, Any]]:
    return [
        {
            "field": field,
            "type": m.type,
            "start": m.start,
            "end": m.end,
            "value": m.value,
            "placeholder": PLACEHOLDERS[m.type],
        }
        for m in matches
    ]


class Cleaner:
    """The decisions for one document at a time, and their counts."""

    def __init__(self, params: CleanParams) -> None:
        self.params = params
        self.languages = set(params.languages or ())
        self.removed: Counter[str] = Counter()
        self.redactions: Counter[str] = Counter()
        self.removed_documents = self.redacted_documents = 0

    def reasons(self, finding: Finding) -> list[str]:
        params = self.params
        reasons = []
        if finding.duplicate is not None:
            reasons.append(f"{finding.duplicate.kind}_duplicate")
        if params.quality is not None:
            reasons += [
                f"quality:{name}" for name in failed_filters(finding.signals, params.quality)
            ]
        if self.languages:
            if finding.language not in self.languages:
                reasons.append(f"language:{finding.language}")
            elif finding.language_confidence < params.min_language_confidence:
                reasons.append(f"low_language_confidence:{finding.language}")
        return reasons

    def redact(
        self, record: dict[str, Any], finding: Finding
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The record with its PII replaced, and the redactions (empty: unchanged)."""
        types = self.params.pii_types
        text = record["text"]
        matches = finding.pii if types is None else find_pii(text, types)
        redactions = _redactions("text", matches)
        if matches:
            record = {**record, "text": _redact_with(text, matches)}
        if record.get("messages"):
            messages = []
            for index, message in enumerate(record["messages"]):
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str):
                    redacted, found = redact(content, types)
                    if found:
                        redactions += _redactions(f"messages[{index}].content", found)
                        message = {**message, "content": redacted}
                messages.append(message)
            record = {**record, "messages": messages}
        fields = record["metadata"].get("fields")
        if fields:  # a fine-tuning line kept whole: training reads these, not `text`
            fields = _redact_values(fields, types, "metadata.fields", redactions)
            record = {**record, "metadata": {**record["metadata"], "fields": fields}}
        for match in matches:  # counted once per match in the text, which holds the messages
            self.redactions[match.type] += 1
        return record, redactions


def _redact_values(
    value: Any, types: list[str] | None, path: str, redactions: list[dict[str, Any]]
) -> Any:
    """`value` with PII replaced in every string it holds; appends to `redactions`."""
    if isinstance(value, str):
        redacted, found = redact(value, types)
        redactions += _redactions(path, found)
        return redacted
    if isinstance(value, list):
        return [
            _redact_values(item, types, f"{path}[{i}]", redactions) for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {k: _redact_values(v, types, f"{path}.{k}", redactions) for k, v in value.items()}
    return value


def _record(batch: Batch, index: int) -> dict[str, Any]:
    messages = batch.messages[index]
    return {
        "id": batch.ids[index],
        "text": batch.texts[index],
        "source": batch.sources[index],
        "source_sha256": batch.source_sha256s[index],
        "metadata": json.loads(batch.metadata[index]),
        "messages": None if messages is None else json.loads(messages),
    }


def _reject_row(batch: Batch, index: int, finding: Finding, action: str, reasons: list[str]):
    duplicate = finding.duplicate if action == "removed" else None
    return {
        "id": batch.ids[index],
        "action": action,
        "reasons": reasons,
        "duplicate_of": None if duplicate is None else str(duplicate.original_id),
        "similarity": None if duplicate is None else duplicate.similarity,
        "text": batch.texts[index],
        "source": batch.sources[index],
        "source_sha256": batch.source_sha256s[index],
        "metadata": batch.metadata[index],
        "messages": batch.messages[index],
        "redactions": [],
    }


def _saved_findings(ctx: StageContext, params: CleanParams) -> tuple[Any, bool]:
    """(findings file, whether its duplicates apply) from the `report` input, if usable."""
    if "report" not in ctx.inputs:
        return None, False
    directory = ctx.input_path("report")
    report = json.loads((directory / REPORT_FILE).read_text())
    dataset = ctx.inputs["dataset"]
    if report["dataset"]["sha256"] != dataset.sha256:
        raise InputError(
            f"report {ctx.inputs['report'].ref} assesses {report['dataset']['ref']}, "
            f"not {dataset.ref}",
            hint="assess this dataset first, or clean without --report",
        )
    if report["findings"]["detectors"] != detector_fingerprint():
        ctx.warn("the report was made by other detector code; running the detectors again")
        return None, False
    return directory / FINDINGS_FILE, report["findings"]["near_threshold"] == params.near_threshold


@stage(
    "data.clean",
    params=CleanParams,
    inputs={"dataset": "dataset", "report": "report?"},
    outputs={"dataset": "dataset", "rejects": "rejects"},
)
def clean(ctx: StageContext, params: CleanParams):
    """Remove duplicates, poor and off-language documents; redact PII; record every change."""
    source = ctx.inputs["dataset"]
    saved, saved_dedup = _saved_findings(ctx, params)
    output = ctx.new_artifact("dataset")
    rejected = ctx.new_artifact("rejects")
    dataset = DatasetWriter(output.path)
    rejects = RejectsWriter(rejected.path)
    cleaner = Cleaner(params)
    documents = characters = 0
    for batch, findings in scan(
        ctx.input_path("dataset"),
        workers=params.workers,
        dedup_threshold=params.near_threshold if params.dedup else None,
        saved=saved,
        saved_dedup=saved_dedup and params.dedup,
        executor=params.executor,
        ray_address=params.ray_address,
    ):
        for index, finding in enumerate(findings):
            documents += 1
            characters += len(batch.texts[index])
            reasons = cleaner.reasons(finding)
            if reasons:
                cleaner.removed.update(reasons)
                cleaner.removed_documents += 1
                rejects.add(_reject_row(batch, index, finding, "removed", reasons))
                continue
            record = _record(batch, index)
            if params.pii:
                record, redactions = cleaner.redact(record, finding)
                if redactions:
                    cleaner.redacted_documents += 1
                    row = _reject_row(batch, index, finding, "redacted", ["pii"])
                    rejects.add({**row, "redactions": redactions})
            dataset.add(record)
        ctx.raise_if_cancelled()

    summary = dataset.close(cleaned_from=source.sha256)
    if summary["documents"] == 0:
        ctx.warn("every document was removed: the cleaned dataset is empty")
    counts = {
        "removed": cleaner.removed_documents,
        "redacted": cleaner.redacted_documents,
        "reasons": dict(sorted(cleaner.removed.items())),
        "redactions": dict(sorted(cleaner.redactions.items())),
    }
    rejects.close(dataset={"ref": source.ref, "sha256": source.sha256}, **counts)
    output.meta.update(documents=summary["documents"], characters=summary["characters"])
    rejected.meta.update(dataset=source.ref, removed=counts["removed"], redacted=counts["redacted"])
    ctx.set_metrics(
        documents_in=documents,
        documents_out=summary["documents"],
        characters_in=characters,
        characters_out=summary["characters"],
        removed_documents=counts["removed"],
        removed_by_reason=counts["reasons"],
        redacted_documents=counts["redacted"],
        redactions_by_type=counts["redactions"],
        reused_findings=saved is not None,
    )
    cleaned = ctx.commit(output)
    ctx.name(cleaned, params.name)
    rejects_artifact = ctx.commit(rejected)
    ctx.name(rejects_artifact, params.name and f"{params.name}-rejects")
    return {"dataset": cleaned, "rejects": rejects_artifact}
