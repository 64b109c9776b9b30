"""A dataset's profile, accumulated one batch at a time: the body of `report.json`.

    profile = Profile(thresholds, samples=5)
    for batch, findings in scan(...):
        profile.add(batch, findings, tokens_per_document)
    profile.add_kept_excerpts(iter_batches(dataset_dir))
    profile.to_dict()  # documents, characters, by_source, duplicates, pii, languages, ...

Memory is flat in the number of documents but for a count per duplicate cluster: the
samples keep only their first copies, and the excerpts of the kept documents they show
are read back from the dataset at the end rather than kept for every document in case
it is copied later (~375 bytes a document).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from forgeml.core.errors import InputError
from forgeml.data.formats import detect_format
from forgeml.data.pii import PII_TYPES, PLACEHOLDERS, PiiMatch, find_pii
from forgeml.data.quality import QualityThresholds, failed_filters
from forgeml.data.scan import SIGNAL_FIELDS, Batch, Finding

EXCERPT_CHARS = 160
PII_CONTEXT_CHARS = 40
LOW_LANGUAGE_CONFIDENCE = 0.5
# Top-level fields of a structured record (chat, preference, prompt) that readers copy
# into metadata when asked to; a plain-text record has none of them.
STRUCTURED_FIELDS = (
    "prompt", "completion", "chosen", "rejected", "input", "preferred_output",
    "non_preferred_output", "tools",
)  # fmt: skip
STRUCTURES = ("text", "chat", "preference", "prompt")


def redacted_excerpt(text: str, matches: list[PiiMatch], start: int, end: int) -> str:
    """text[start:end] with every PII match in it replaced by its placeholder.

    The window grows to cover any match it cuts, so no fragment of PII is ever shown.
    """
    for match in matches:
        if match.start < end and match.end > start:
            start, end = min(start, match.start), max(end, match.end)
    pieces, position = [], start
    for match in matches:
        if match.start >= start and match.end <= end:
            pieces += [text[position : match.start], PLACEHOLDERS[match.type]]
            position = match.end
    pieces.append(text[position:end])
    excerpt = " ".join("".join(pieces).split())
    return ("…" if start > 0 else "") + excerpt + ("…" if end < len(text) else "")


def structure_of(metadata: str, messages: str | None) -> str:
    """ "text", "chat", "preference" or "prompt", by `detect_format` on structured records.

    Plain records (no messages, no structured metadata) skip JSON decoding altogether.
    """
    if messages is None and not any(f'"{name}"' in metadata for name in STRUCTURED_FIELDS):
        return "text"
    decoded = json.loads(metadata)
    record = {key: value for key, value in decoded.items() if key in STRUCTURED_FIELDS}
    if messages is not None:
        record["messages"] = json.loads(messages)
    if not record.keys() - {"tools"}:
        return "text"
    try:
        return detect_format(record)
    except InputError:
        return "text"


def _length_bin(tokens: int) -> int:
    """Histogram bin of a document length: 0 for < 2 tokens, k for [2^k, 2^(k+1))."""
    return max(0, tokens.bit_length() - 1)


class ImageProfile:
    """The images chat records carry (ingest's `images` metadata): counts, bytes, formats,
    the largest, and images that repeat (by sha256: the same scan in two records)."""

    def __init__(self) -> None:
        self.documents = self.count = self.bytes = self.repeated = 0
        self.formats: Counter[str] = Counter()
        self.largest = {"width": 0, "height": 0}
        self._seen: set[bytes] = set()  # 8 bytes of each sha256: ~40 MB per million images

    def add(self, images: list[dict[str, Any]]) -> None:
        if not images:
            return
        self.documents += 1
        for image in images:
            self.count += 1
            self.bytes += int(image.get("bytes") or 0)
            self.formats[str(image.get("format"))] += 1
            if image.get("width", 0) * image.get("height", 0) > (
                self.largest["width"] * self.largest["height"]
            ):
                self.largest = {"width": image["width"], "height": image["height"]}
            key = bytes.fromhex(str(image.get("sha256", ""))[:16] or "00")
            if key in self._seen:
                self.repeated += 1
            self._seen.add(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "images": self.count,
            "bytes": self.bytes,
            "formats": dict(self.formats.most_common()),
            "largest": self.largest,
            "repeated": self.repeated,
        }


class Profile:
    """Counts and samples over every document; `to_dict()` is the report's content."""

    def __init__(self, thresholds: QualityThresholds, samples: int = 5) -> None:
        self.thresholds = thresholds
        self.samples = samples
        self.documents = self.characters = self.tokens = self.words = 0
        self.files: dict[str, list] = {}  # path -> [documents, characters, format]
        self.formats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.lengths: Counter[int] = Counter()
        self.structure: Counter[str] = Counter({name: 0 for name in STRUCTURES})
        self.languages: Counter[str] = Counter()
        self.language_chars: Counter[str] = Counter()
        self.low_confidence = 0
        self.pii: Counter[str] = Counter()
        self.pii_documents = 0
        self.pii_examples: dict[str, list[dict]] = defaultdict(list)
        self.duplicates: Counter[str] = Counter()
        # kind -> kept id -> how many copies of that kind it has
        self.copies: dict[str, Counter[str]] = {"exact": Counter(), "near": Counter()}
        # kind -> kept id -> its first 3 copies, for the first `samples` clusters of each kind
        self.sampled: dict[str, dict[str, list[dict]]] = {"exact": {}, "near": {}}
        self.excerpts: dict[str, str] = {}  # sampled kept id -> short redacted excerpt
        self.failures: Counter[str] = Counter()
        self.failing_documents = 0
        self.signal_sums = dict.fromkeys(SIGNAL_FIELDS, 0.0)
        self.signal_min = dict.fromkeys(SIGNAL_FIELDS, float("inf"))
        self.signal_max = dict.fromkeys(SIGNAL_FIELDS, float("-inf"))
        self.images = ImageProfile()

    def add(self, batch: Batch, findings: list[Finding], tokens: list[int]) -> list[list[str]]:
        """Count one batch; returns each document's failed quality filters."""
        failed_per_document = []
        for index, finding in enumerate(findings):
            failed = failed_filters(finding.signals, self.thresholds)
            failed_per_document.append(failed)
            self._add_one(batch, index, finding, tokens[index], failed)
        return failed_per_document

    def _add_one(
        self, batch: Batch, index: int, finding: Finding, tokens: int, failed: list[str]
    ) -> None:
        text, doc_id = batch.texts[index], batch.ids[index]
        self.documents += 1
        self.characters += len(text)
        self.tokens += tokens
        self.words += finding.signals.word_count
        self.lengths[_length_bin(tokens)] += 1
        source = self.files.get(batch.sources[index])
        if source is None:
            metadata = json.loads(batch.metadata[index])
            source = self.files[batch.sources[index]] = [0, 0, metadata.get("format", "?")]
        source[0] += 1
        source[1] += len(text)
        self.formats[source[2]][0] += 1
        self.formats[source[2]][1] += len(text)
        self.structure[structure_of(batch.metadata[index], batch.messages[index])] += 1
        if '"images"' in batch.metadata[index]:
            self.images.add(json.loads(batch.metadata[index]).get("images") or [])

        language = finding.language
        self.languages[language] += 1
        self.language_chars[language] += len(text)
        self.low_confidence += finding.language_confidence < LOW_LANGUAGE_CONFIDENCE

        if finding.pii:
            self.pii_documents += 1
            for match in finding.pii:
                self.pii[match.type] += 1
                examples = self.pii_examples[match.type]
                if len(examples) < self.samples:
                    start = max(0, match.start - PII_CONTEXT_CHARS)
                    excerpt = redacted_excerpt(
                        text, finding.pii, start, match.end + PII_CONTEXT_CHARS
                    )
                    examples.append({"id": doc_id, "excerpt": excerpt})

        duplicate = finding.duplicate
        if duplicate is not None:
            kind, kept = duplicate.kind, str(duplicate.original_id)
            self.duplicates[kind] += 1
            self.copies[kind][kept] += 1
            sampled = self.sampled[kind]
            if kept not in sampled and len(sampled) < self.samples:
                sampled[kept] = []
            shown = sampled.get(kept)
            if shown is not None and len(shown) < 3:  # the first copies of each sample
                copy = {"id": doc_id, "kind": kind, "similarity": duplicate.similarity}
                copy["excerpt"] = redacted_excerpt(text, finding.pii, 0, EXCERPT_CHARS)
                shown.append(copy)

        if failed:
            self.failing_documents += 1
            self.failures.update(failed)
        signals = finding.signals
        for name in SIGNAL_FIELDS:
            value = float(getattr(signals, name))
            self.signal_sums[name] += value
            if value < self.signal_min[name]:
                self.signal_min[name] = value
            if value > self.signal_max[name]:
                self.signal_max[name] = value

    # --- the report ------------------------------------------------------------------------

    def add_kept_excerpts(self, batches: Iterable[Batch]) -> None:
        """Read the excerpts of the sampled clusters' kept documents from the dataset.

        At most 2 x `samples` documents; kept documents come before their copies, so the
        first batches usually hold them all and reading stops there.
        """
        wanted = {kept for sampled in self.sampled.values() for kept in sampled}
        wanted -= self.excerpts.keys()
        for batch in batches:
            if not wanted:
                break
            for doc_id, text in zip(batch.ids, batch.texts, strict=True):
                if doc_id in wanted:
                    wanted.discard(doc_id)
                    self.excerpts[doc_id] = redacted_excerpt(text, find_pii(text), 0, EXCERPT_CHARS)

    def _duplicates(self, kind: str) -> dict[str, Any]:
        copies = self.copies[kind]
        sizes = Counter(count + 1 for count in copies.values())
        samples = [
            {
                "kept": {"id": kept, "excerpt": self.excerpts.get(kept, "")},
                "copies": shown,
                "size": copies[kept] + 1,
            }
            for kept, shown in self.sampled[kind].items()
        ]
        return {
            "documents": self.duplicates[kind],
            "clusters": len(copies),
            "cluster_sizes": {str(size): count for size, count in sorted(sizes.items())},
            "samples": samples,
        }

    def to_dict(self) -> dict[str, Any]:
        documents = max(self.documents, 1)
        top_bin = max(self.lengths, default=0)
        return {
            "documents": self.documents,
            "characters": self.characters,
            "words": self.words,
            "length_histogram": [
                {
                    "min_tokens": 0 if k == 0 else 2**k,
                    "max_tokens": 2 ** (k + 1) - 1,
                    "documents": self.lengths.get(k, 0),
                }
                for k in range(top_bin + 1)
            ],
            "by_source": {
                "files": {
                    path: {"documents": d, "characters": c, "format": f}
                    for path, (d, c, f) in sorted(self.files.items())
                },
                "formats": {
                    name: {"documents": d, "characters": c}
                    for name, (d, c) in sorted(self.formats.items())
                },
            },
            "images": self.images.to_dict(),
            "exact_duplicates": self._duplicates("exact"),
            "near_duplicates": self._duplicates("near"),
            "pii": {
                "matches": sum(self.pii.values()),
                "documents": self.pii_documents,
                "by_type": {name: self.pii.get(name, 0) for name in PII_TYPES},
                "examples": dict(self.pii_examples),
            },
            "languages": {
                "documents": dict(self.languages.most_common()),
                "characters": dict(self.language_chars.most_common()),
                "low_confidence": self.low_confidence,
                "low_confidence_below": LOW_LANGUAGE_CONFIDENCE,
            },
            "quality": {
                "thresholds": self.thresholds.model_dump(),
                "documents_failing": self.failing_documents,
                "failures": dict(self.failures.most_common()),
                "signals": {
                    name: {
                        "mean": self.signal_sums[name] / documents,
                        "min": self.signal_min[name] if self.documents else 0.0,
                        "max": self.signal_max[name] if self.documents else 0.0,
                    }
                    for name in SIGNAL_FIELDS
                },
            },
            "structure": dict(self.structure),
        }
