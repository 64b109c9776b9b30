"""Duplicate detection planned by Ray Data (data/ray_dedup.py) decides every document as
the local index does: exact copies (case and spacing folded), near copies, copies of
near copies, texts without words, and band keys shared by too many documents to pair
(resolved here, as `HOT` rows). The CLI path is in test_ray_executor.py."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow as pa
import pytest

from forgeml.data.dedup import NearDuplicateIndex
from forgeml.data.ray_dedup import (
    EXACT,
    HOT,
    NEEDED,
    PAIR,
    PlannedDuplicateIndex,
    document_keys,
    duplicate_plan,
    plan_by_document,
)
from forgeml.data.ray_executor import ray_session

pytestmark = pytest.mark.slow
WORDS = [
    "claim",
    "policy",
    "refund",
    "invoice",
    "approval",
    "customer",
    "ticket",
    "region",
    "account",
    "parcel",
]


def corpus(count: int = 3000) -> list[str]:
    rng = random.Random(3)
    texts: list[str] = []
    for index in range(count):
        draw = rng.random()
        if texts and draw < 0.05:
            texts.append("  " + rng.choice(texts).upper())  # an exact copy, folded
        elif texts and draw < 0.25:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)  # a near copy
            texts.append(" ".join(words))
        elif draw < 0.27:
            texts.append("!!! ...")  # no words: no bands
        elif draw < 0.45:  # one template: a few band keys shared by hundreds
            texts.append("the standard notice for a parcel " + " ".join(rng.choices(WORDS, k=3)))
        else:
            texts.append(" ".join(rng.choices(WORDS, k=30)) + f" case {index}")
    return texts


def test_a_ray_plan_decides_as_the_local_index():
    texts = corpus()
    ids = [f"doc-{index}" for index in range(len(texts))]
    local = NearDuplicateIndex()
    expected = [local.add(doc_id, text) for doc_id, text in zip(ids, texts, strict=True)]
    with ray_session(None, 2) as ray:
        keys = [ray.put(document_keys(texts[s : s + 500], s, 0.8)) for s in range(0, 3000, 500)]
        # Bands shared by more than 5 documents are HOT: both ways are taken.
        plan = duplicate_plan(ray, keys, partitions=3, hot_group=5).materialize()
        rows = pa.concat_tables(list(plan.iter_batches(batch_format="pyarrow")))
        planned = PlannedDuplicateIndex(plan_by_document(plan))
        got = [planned.add(doc_id, text) for doc_id, text in zip(ids, texts, strict=True)]

    assert got == expected
    assert planned.clusters() == local.clusters()
    kinds = Counter(match.kind for match in expected if match)
    assert kinds["exact"] > 100 and kinds["near"] > 50
    planned_kinds = Counter(rows["kind"].to_pylist())
    assert all(planned_kinds[kind] > 0 for kind in (EXACT, PAIR, HOT, NEEDED))
    assert rows["doc"].to_pylist() == sorted(rows["doc"].to_pylist())
