"""`data.mix`: weighted data mixtures with a held-out validation split.

    forgeml data mix support-docs=0.7 python-docs=0.3 --tokens 2000000

Each source is split into train and validation *by document* (a seeded hash of the
document id, so a document never straddles the split). Train documents are then up- or
down-sampled to the source's share of the token budget: whole passes first, then a
seeded subset for the fractional pass. The composition (weights, tokens, epochs per
source) is recorded in `mixture.json` for lineage. Documents stay grouped by source,
and a document's copies go in separate passes over it (never side by side); training
shuffles packed sequences with its own seed.

    mixture.json
    train/         a dataset (see forgeml.data.dataset)
    validation/    a dataset
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def _split_source(path: Path, seed: int, fraction: float) -> tuple[list[tuple[str, int]], set[str]]:
    """Train document ids with their sizes in chars, and the held-out document ids.

    A source of two or more documents always holds out at least one when `fraction` > 0,
    so a small source still has a validation signal.
    """
    scored = [
        (_unit(seed, row["id"], "validation"), row["id"], len(row["text"]))
        for row in iter_records(path, columns=["id", "text"])
    ]
    held_out = {doc_id for unit, doc_id, _ in scored if unit < fraction}
    if fraction > 0 and not held_out and len(scored) >= 2:
        held_out = {min(scored)[1]}
    train = [(doc_id, size) for _, doc_id, size in scored if doc_id not in held_out]
    return train, held_out


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
    pool_tokens = [sum(size for _, size in train) / cpt for train, _ in splits]
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
    for source, (train_ids, held_out), tokens, portion in zip(
        sources, splits, pool_tokens, share, strict=True
    ):
        target = budget * portion
        epochs = target / tokens if tokens else 0.0
        # Salted by content-derived ids only, not the artifact hash (which covers source
        # paths): the same files ingested from another folder give the same mixture.
        chosen = _choose(train_ids, target * cpt, ctx.seed, "sample")
        path = ctx.artifact_path(source)
        # One pass over the source per copy: a document's copies sit a whole pass apart,
        # never side by side in a packed block (where a model learns to repeat the text
        # it just read instead of the text).
        for copy in range(max(chosen.values(), default=0) or 1):
            for row in iter_records(path):
                if row["id"] in held_out:
                    if copy == 0:
                        valid_out.add(row)
                elif chosen.get(row["id"], 0) > copy:
                    train_out.add({**row, "id": row["id"] if copy == 0 else f"{row['id']}#{copy}"})
        summary = read_summary(path)
        components.append(
            {
                "dataset": source.ref,
                "sha256": source.sha256,
                "weight": portion,
                "documents": summary["documents"],
                "train_documents_sampled": sum(chosen.values()),
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


def _choose(
    train: list[tuple[str, int]], target_chars: float, seed: int, salt: str
) -> dict[str, int]:
    """How many copies of each train document reach `target_chars`: whole passes, then a
    seeded subset of documents for the remainder."""
    total = sum(size for _, size in train)
    if total == 0:
        return {}
    passes, remainder = divmod(target_chars, total)
    copies = {doc_id: int(passes) for doc_id, _ in train}
    for doc_id, size in sorted(train, key=lambda item: _unit(seed, item[0], salt)):
        if remainder <= 0:
            break
        copies[doc_id] += 1
        remainder -= size
    return copies
