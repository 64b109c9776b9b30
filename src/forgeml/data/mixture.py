"""`data.mix`: weighted data mixtures with a held-out validation split.

    forgeml data mix support-docs=0.7 python-docs=0.3 --tokens 2000000

Each source is split into train and validation *by document* (a seeded hash of the
document id, so a document never straddles the split). Train documents are then up- or
down-sampled to the source's share of the token budget: whole passes first, then a
seeded subset for the fractional pass. The composition (weights, tokens, epochs per
source) is recorded in `mixture.json` for lineage. Documents stay grouped by source,
and a document's copies go in separate passes over it (never side by side); training
shuffles packed sequences with its own seed.

Memory is flat in the number of documents: every decision is a function of the
document's id (seeded hashes), and the fractional pass's subset is found with a
histogram of the sampling order plus one bucket's documents (`_Source`), so a source is
read a few times, never held. The work per document is two SHA-256 of its id, so mixing
is bound by reading and writing Parquet and runs in one process with any executor.

    mixture.json
    train/         a dataset (see forgeml.data.dataset)
    validation/    a dataset
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.errors import InputError
from forgeml.core.stages import StageParams, stage
from forgeml.data.dataset import DatasetWriter, iter_records, read_summary

FORMAT = "forgeml.mixture/1"
MANIFEST = "mixture.json"


class MixParams(StageParams):
    weights: list[float] | None = Field(
        default=None, description="One weight per input dataset, in order; default: equal."
    )
    tokens: int | None = Field(
        default=None, gt=0, description="Train token budget; default: the sources' total."
    )
    validation_fraction: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Share of each source's documents held out."
    )
    chars_per_token: float = Field(
        default=4.0,
        gt=0,
        description="Token estimate before a tokenizer exists (≈4 for English BPE).",
    )
    name: str | None = Field(default=None, description="Name the mixture.")


def _unit(seed: int, doc_id: str, salt: str) -> float:
    """A reproducible number in [0, 1) for a document: the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{salt}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


BUCKETS = 1 << 16  # of the sampling unit: the fractional pass's cut is found in one


@dataclass
class _Source:
    """One source's split and sampling plan, gathered in streaming passes, so a mix of a
    billion documents holds no per-document state.

    Held out: a document whose validation unit is below `fraction`, or, when that holds
    out none of two or more documents, the one with the lowest unit (`first_out`): a
    small source still has a validation signal. Train documents are copied `passes`
    times, and once more for a seeded subset reaching the fractional pass's characters:
    the documents first in order of their sampling unit (ties: in stored order) until
    those characters are reached. That subset is every document whose unit falls in a
    bucket below `cut`, and the ids `taken` from the bucket `cut` itself.
    """

    fraction: float
    seed: int
    train_chars: int = 0
    train_documents: int = 0
    first_out: str | None = None
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))
    passes: int = 0
    cut: int = -1  # no fractional pass
    taken: set[str] = field(default_factory=set)

    def held_out(self, doc_id: str) -> bool:
        return _unit(self.seed, doc_id, "validation") < self.fraction or doc_id == self.first_out

    def copies(self, doc_id: str) -> int:
        if self.cut < 0:
            return self.passes
        bucket = _bucket(_unit(self.seed, doc_id, "sample"))
        return self.passes + (bucket < self.cut or (bucket == self.cut and doc_id in self.taken))


def _bucket(unit: float) -> int:
    return min(int(unit * BUCKETS), BUCKETS - 1)


def _split_source(path: Path, seed: int, fraction: float) -> _Source:
    source = _Source(fraction, seed)
    lowest: tuple[float, str, int] | None = None
    documents = 0
    for row in iter_records(path, columns=["id", "text"]):
        documents += 1
        unit, size = _unit(seed, row["id"], "validation"), len(row["text"])
        if lowest is None or (unit, row["id"], size) < lowest:
            lowest = (unit, row["id"], size)
        if unit >= fraction:
            source.train_chars += size
            source.train_documents += 1
            source.sizes[_bucket(_unit(seed, row["id"], "sample"))] += size
    if fraction > 0 and source.train_documents == documents >= 2 and lowest is not None:
        _, source.first_out, size = lowest
        source.train_chars -= size
        source.train_documents -= 1
        source.sizes[_bucket(_unit(seed, source.first_out, "sample"))] -= size
    return source


@stage(
    "data.mix", params=MixParams, inputs={"datasets": "dataset[]"}, outputs={"mixture": "mixture"}
)
def mix(ctx: StageContext, params: MixParams):
    """Mix datasets by weight into train and validation splits."""
    sources = ctx.inputs["datasets"]
    weights = params.weights or [1.0] * len(sources)
    if len(weights) != len(sources) or any(w <= 0 for w in weights):
        raise InputError(
            f"weights: expected {len(sources)} positive numbers (one per dataset), got {weights}"
        )
    cpt = params.chars_per_token
    splits = [
        _split_source(ctx.artifact_path(s), ctx.seed, params.validation_fraction) for s in sources
    ]
    pool_tokens = [split.train_chars / cpt for split in splits]
    if not any(pool_tokens):
        raise InputError("the datasets have no training text after the validation split")
    budget = params.tokens or sum(pool_tokens)
    share = [w / sum(weights) for w in weights]

    writer = ctx.new_artifact("mixture")
    (writer.path / "train").mkdir()
    (writer.path / "validation").mkdir()
    train_out = DatasetWriter(writer.path / "train")
    valid_out = DatasetWriter(writer.path / "validation")
    components = []
    for source, split, tokens, portion in zip(sources, splits, pool_tokens, share, strict=True):
        target = budget * portion
        epochs = target / tokens if tokens else 0.0
        path = ctx.artifact_path(source)
        # Salted by content-derived ids only, not the artifact hash (which covers source
        # paths): the same files ingested from another folder give the same mixture.
        _choose(split, path, target * cpt)
        most = split.passes + (split.cut >= 0)
        # One pass over the source per copy: a document's copies sit a whole pass apart,
        # never side by side in a packed block (where a model learns to repeat the text
        # it just read instead of the text).
        sampled = 0
        for copy in range(most or 1):
            for row in iter_records(path):
                if split.held_out(row["id"]):
                    if copy == 0:
                        valid_out.add(row)
                elif split.copies(row["id"]) > copy:
                    train_out.add({**row, "id": row["id"] if copy == 0 else f"{row['id']}#{copy}"})
                    sampled += 1
        summary = read_summary(path)
        components.append(
            {
                "dataset": source.ref,
                "sha256": source.sha256,
                "weight": portion,
                "documents": summary["documents"],
                "train_documents_sampled": sampled,
                "source_tokens_est": round(tokens),
                "target_tokens_est": round(target),
                "epochs": round(epochs, 4),
            }
        )
    train_summary = train_out.close()
    valid_summary = valid_out.close()
    manifest = {
        "format": FORMAT,
        "seed": ctx.seed,
        "chars_per_token": cpt,
        "validation_fraction": params.validation_fraction,
        "components": components,
        "train": {k: train_summary[k] for k in ("documents", "characters")},
        "validation": {k: valid_summary[k] for k in ("documents", "characters")},
    }
    write_json_atomic(writer.path / MANIFEST, manifest)
    writer.meta.update(
        train_documents=train_summary["documents"], validation_documents=valid_summary["documents"]
    )
    ctx.set_metrics(
        components=components, train=manifest["train"], validation=manifest["validation"]
    )
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    return {"mixture": artifact}


def _choose(source: _Source, path: Path, target_chars: float) -> None:
    """How many copies of each train document reach `target_chars`: whole passes, then
    the documents first in sampling order for the remainder (set on `source`)."""
    if source.train_chars == 0:
        return
    passes, remainder = divmod(target_chars, source.train_chars)
    source.passes = int(passes)
    if remainder <= 0:
        return
    # The bucket where the characters before it stay under the remainder and those up
    # to its end reach it: documents below it are all taken, those above none.
    ends = np.cumsum(source.sizes)
    source.cut = int(np.searchsorted(ends, remainder, side="left"))
    before = int(ends[source.cut - 1]) if source.cut else 0
    in_cut = []
    for position, row in enumerate(iter_records(path, columns=["id", "text"])):
        doc_id = row["id"]
        unit = _unit(source.seed, doc_id, "sample")
        if _bucket(unit) == source.cut and not source.held_out(doc_id):
            in_cut.append((unit, position, doc_id, len(row["text"])))
    for _, _, doc_id, size in sorted(in_cut):
        if before >= remainder:
            break
        source.taken.add(doc_id)
        before += size
