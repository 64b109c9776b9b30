"""A scan (scan.py) with `executor: ray`: the detectors as Ray tasks, duplicate
detection's MinHash and shuffle in Ray Data (ray_dedup.py), the same findings as the
local executor's.

With duplicate detection, two passes over the dataset. The first sends each batch to a
Ray task that computes its documents' dedup keys, left in Ray's object store (this
process holds only their references), and Ray Data shuffles them into a duplicate plan.
The second sends each batch to the detectors, a few at a time, takes their findings
back in order and decides the batch's duplicates from the plan. Findings are not kept
in the object store between the passes: at a million documents they would be ~1 GB
there, mapped into this process as it reads them.
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


def _numbered(directory: Path, threshold: float) -> Iterator[tuple[None, tuple]]:
    first = 0
    for batch in iter_batches(directory):
        yield None, (batch.texts, first, threshold)
        first += len(batch)


def scan_on_ray(
    directory: Path, *, cpus: int, address: str | None, dedup_threshold: float | None
) -> Iterator[tuple[Batch, list[Finding]]]:
    with ray_session(address, cpus) as ray:
        index = None
        if dedup_threshold is not None:
            started = time.perf_counter()
            work = _numbered(directory, dedup_threshold)
            keys = [ref for _, ref in ordered_map_in(ray, document_keys, work, cpus=cpus,
                                                     fetch=False)]  # fmt: skip
            if keys:
                # Enough partitions that each shuffle task's share is small, few enough
                # that a small corpus does not pay for hundreds of tasks.
                partitions = max(2, min(4 * cluster_cpus(ray, cpus), len(keys)))
                plan = duplicate_plan(ray, keys, partitions=partitions).materialize()
                del keys  # the plan holds what it needs
                log.debug("%s", plan.stats())
                log.info("duplicate plan (Ray Data): %d rows in %.1f s", plan.count(),
                         time.perf_counter() - started)  # fmt: skip
                index = PlannedDuplicateIndex(plan_by_document(plan), threshold=dedup_threshold)
        batches = ((batch, batch.texts) for batch in iter_batches(directory))
        for batch, findings in ordered_map_in(ray, _inspect_batch, batches, cpus=cpus):
            if index is not None:
                for doc_id, text, finding in zip(batch.ids, batch.texts, findings, strict=True):
                    finding.duplicate = index.add(doc_id, text)
            yield batch, findings
