"""A scan (scan.py) with `executor: ray`: the detectors as Ray tasks, duplicate
detection's MinHash and shuffle in Ray Data (ray_dedup.py), the same findings as the
local executor's.

Two passes over the dataset. The first sends each batch to a Ray task that runs the
per-document detectors and computes the documents' dedup keys; both results stay in
Ray's object store (this process holds only their references, a few at a time being
computed). Ray Data then shuffles the keys into a duplicate plan. The second pass reads
the batches again, in order, takes each batch's findings from the object store and
decides its duplicates from the plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from forgeml.data.ray_dedup import (
    PlannedDuplicateIndex,
    document_keys,
    duplicate_plan,
    plan_by_document,
)
from forgeml.data.ray_executor import cluster_cpus, ordered_map_in, ray_session
from forgeml.data.scan import Batch, Finding, _inspect_batch, iter_batches

log = logging.getLogger("forgeml.data")


def _inspect_and_key(work: tuple[list[str], int, float | None]) -> tuple:
    """One batch's findings and (without dedup: None) its documents' dedup keys."""
    texts, first_doc, threshold = work
    keys = document_keys(texts, first_doc, threshold) if threshold is not None else None
    return _inspect_batch(texts), keys


def _numbered(directory: Path, threshold: float | None) -> Iterator[tuple[int, tuple]]:
    first = 0
    for batch in iter_batches(directory):
        yield len(batch), (batch.texts, first, threshold)
        first += len(batch)


def scan_on_ray(
    directory: Path, *, cpus: int, address: str | None, dedup_threshold: float | None
) -> Iterator[tuple[Batch, list[Finding]]]:
    with ray_session(address, cpus) as ray:
        started = time.perf_counter()
        done = ordered_map_in(ray, _inspect_and_key, _numbered(directory, dedup_threshold),
                              cpus=cpus, num_returns=2)  # fmt: skip
        refs = [(findings, keys) for _, (findings, keys) in done]
        log.info("detectors and keys: %.1f s", time.perf_counter() - started)
        index = None
        if dedup_threshold is not None and refs:
            # Enough partitions that each shuffle task's share is small, few enough that
            # a small corpus does not pay for hundreds of tasks.
            partitions = max(2, min(4 * cluster_cpus(ray, cpus), len(refs)))
            plan = duplicate_plan(ray, [keys for _, keys in refs], partitions=partitions)
            started = time.perf_counter()
            plan = plan.materialize()
            log.debug("%s", plan.stats())
            log.info("duplicate plan (Ray Data): %d rows in %.1f s", plan.count(),
                     time.perf_counter() - started)  # fmt: skip
            index = PlannedDuplicateIndex(plan_by_document(plan), threshold=dedup_threshold)
        for batch, (findings_ref, _) in zip(iter_batches(directory), refs, strict=True):
            findings = ray.get(findings_ref)
            if index is not None:
                for doc_id, text, finding in zip(batch.ids, batch.texts, findings, strict=True):
                    finding.duplicate = index.add(doc_id, text)
            yield batch, findings
