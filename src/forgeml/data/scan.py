"""One pass over a dataset with every detector: what `data.assess` reports and `data.clean` acts on.

    for batch, findings in scan(dataset_dir, workers=2, dedup_threshold=0.8):
        for index, finding in enumerate(findings):
            batch.texts[index], finding.language, finding.pii, finding.duplicate, ...

Each document is read once and passed through all detectors: quality signals, language,
PII and (in document order) exact and near-duplicate detection. The per-document
detectors are pure functions of the text, so they run in worker processes on batches,
with at most a few batches in flight (memory stays flat) and results taken back in
order (the output never depends on the number of workers). Duplicate detection is
order-dependent, so it runs in this process as each batch comes back (with `executor:
ray`, its MinHash and shuffle run in Ray first: ray_scan.py).

`data.assess` saves the findings next to its report (`FindingsWriter`); `data.clean`
given that report reads them back (`scan(saved=...)`) instead of computing them again,
when they were made from the same dataset by the same detector code.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.stages import StageParams
from forgeml.data import dedup, keytable, language, pii, quality, shingle_store
from forgeml.data.dataset import read_summary
from forgeml.data.dedup import DuplicateMatch, NearDuplicateIndex
from forgeml.data.language import detect_language
from forgeml.data.pii import PiiMatch, find_pii
from forgeml.data.quality import QualitySignals, quality_signals

BATCH_ROWS = 1024
# Below this many documents, starting worker processes costs more than it saves.
PARALLEL_MIN_DOCUMENTS = 2048
SIGNAL_FIELDS = tuple(field.name for field in fields(QualitySignals))


@dataclass(slots=True)
class Finding:
    """What the detectors found in one document."""

    language: str
    language_confidence: float
    signals: QualitySignals
    pii: list[PiiMatch]
    duplicate: DuplicateMatch | None = None  # set when it copies an earlier document


@dataclass(slots=True)
class Batch:
    """Consecutive records of a dataset, column by column; JSON columns left undecoded."""

    ids: list[str]
    texts: list[str]
    sources: list[str]
    source_sha256s: list[str]
    metadata: list[str]  # JSON strings, as stored
    messages: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


@cache
def detector_fingerprint() -> str:
    """Hash of the detector code and models: saved findings are reusable only if it matches."""
    digest = hashlib.sha256()
    for module in (pii, quality, language, dedup, keytable, shingle_store):
        digest.update(inspect.getsource(module).encode("utf-8"))
    for package in ("py3langid", "datasketch", "numpy"):
        digest.update(f"{package}={version(package)}".encode())
    return digest.hexdigest()


def inspect_text(text: str) -> Finding:
    """Run the per-document detectors (everything but duplicate detection) on one text."""
    code, confidence = detect_language(text)
    return Finding(code, confidence, quality_signals(text), find_pii(text))


def _inspect_batch(texts: list[str]) -> list[Finding]:
    return [inspect_text(text) for text in texts]


def iter_batches(directory: Path, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """A dataset's records in stored order, a column at a time (no per-row dicts)."""
    for shard in read_summary(directory)["shards"]:
        parquet = pq.ParquetFile(directory / shard)
        for table in parquet.iter_batches(batch_size=batch_rows):
            columns = table.to_pydict()
            yield Batch(
                ids=columns["id"],
                texts=columns["text"],
                sources=columns["source"],
                source_sha256s=columns["source_sha256"],
                metadata=columns["metadata"],
                messages=columns["messages"],
            )


class ExecutorParams(StageParams):
    """Where a stage's scan runs its detectors: the parameters `data.assess` and
    `data.clean` share."""

    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where the per-document detectors run: `local` (processes here) or `ray` "
        "(Ray tasks on `ray_address`, or on a local Ray with `workers` CPUs); the output is "
        "byte-identical.",
    )
    ray_address: str | None = Field(
        default=None,
        max_length=500,
        description="With executor ray: the cluster's head (`host:port`, `ray://host:port` "
        "or `auto`); default RAY_ADDRESS, else a local Ray started for the run.",
    )


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def scan(
    directory: Path,
    *,
    workers: int | None = None,
    dedup_threshold: float | None = 0.8,
    saved: Path | None = None,
    saved_dedup: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
) -> Iterator[tuple[Batch, list[Finding]]]:
    """Every batch of the dataset with one `Finding` per record, in order.

    `dedup_threshold` None skips duplicate detection. `saved` reads the per-document
    findings from a findings file instead of computing them (the caller has checked that
    they belong to this dataset); `saved_dedup` takes the duplicates from it too.
    `executor` "ray" runs the detectors as Ray tasks and duplicate detection's shuffle in
    Ray Data (ray_scan.py); same findings.
    """
    batches = iter_batches(directory)
    if saved is not None:
        results = _with_saved(batches, saved, keep_duplicates=saved_dedup)
    elif executor == "ray":
        from forgeml.data.ray_scan import scan_on_ray  # late: Ray only when asked for

        yield from scan_on_ray(directory, cpus=workers or default_workers(),
                               address=ray_address, dedup_threshold=dedup_threshold)  # fmt: skip
        return
    elif (workers or default_workers()) > 1 and _documents(directory) >= PARALLEL_MIN_DOCUMENTS:
        results = _in_workers(batches, workers or default_workers())
    else:
        results = ((batch, _inspect_batch(batch.texts)) for batch in batches)
    index = None
    if dedup_threshold is not None and not (saved is not None and saved_dedup):
        index = NearDuplicateIndex(threshold=dedup_threshold)
    for batch, findings in results:
        if index is not None:
            for doc_id, text, finding in zip(batch.ids, batch.texts, findings, strict=True):
                finding.duplicate = index.add(doc_id, text)
        yield batch, findings


def _documents(directory: Path) -> int:
    return int(read_summary(directory)["documents"])


def _in_workers(batches: Iterator[Batch], workers: int) -> Iterator[tuple[Batch, list[Finding]]]:
    """Batches inspected by a process pool, at most 2 per worker in flight, in order. A
    worker that dies (killed for memory, a crash) is an error: `multiprocessing.Pool`
    would replace it and wait for its batch for ever."""
    detect_language("warm up")  # load the model once here; forked workers inherit it
    # fork: workers start in milliseconds with the model already in memory. Elsewhere
    # (macOS, Windows) spawn is the only safe choice.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # A garbage collection writes to every object it scans, which after a fork copies
    # the shared pages (imported libraries, the language model) into each process:
    # measured +120 MB per process on a 10k-document scan. Frozen objects are never
    # scanned, as the `gc.freeze` documentation recommends before forking.
    gc.freeze()
    try:
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(workers, context, _worker_setup, (os.getpid(),)) as pool:
            pending: deque = deque()
            try:
                for batch in batches:
                    pending.append((batch, pool.submit(_inspect_batch, batch.texts)))
                    if len(pending) >= 2 * workers:
                        batch, result = pending.popleft()
                        yield batch, result.result()
                while pending:
                    batch, result = pending.popleft()
                    yield batch, result.result()
            except BrokenProcessPool:
                raise ForgeError(
                    "a worker process inspecting documents died (killed or crashed; the "
                    "system ends one that runs out of memory); nothing was written",
                    hint="run it again, with fewer `--workers` if memory is short",
                ) from None
    finally:
        gc.unfreeze()


def _worker_setup(parent: int) -> None:
    """A worker dies on SIGTERM (the pool's way to end its workers when one has died; the
    CLI's handler a fork inherits would raise SystemExit instead, which a worker blocked
    on the dead one's queue lock never gets to act on), leaves Ctrl-C to the parent, and
    ends when the parent is gone (killed -9, its queue's pipe stays open in the other
    workers: they would wait on it for ever)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- saved findings ----------------------------------------------------------------------

_SIGNAL_TYPES = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_PII_TYPE = pa.list_(pa.struct([("type", pa.string()), ("start", pa.int64()), ("end", pa.int64())]))
FINDINGS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tokens", pa.int64()),
        ("language", pa.string()),
        ("language_confidence", pa.float64()),
        ("duplicate_of", pa.string()),
        ("duplicate_kind", pa.string()),
        ("similarity", pa.float64()),
        ("pii", _PII_TYPE),
        ("failed_filters", pa.list_(pa.string())),
        *((field.name, _SIGNAL_TYPES[str(field.type)]) for field in fields(QualitySignals)),
    ]
)


class FindingsWriter:
    """`documents.parquet`: one row per document, every finding, for reuse and for people.

    Columns: id, tokens, language, language_confidence, duplicate_of, duplicate_kind,
    similarity, pii (type, start, end in the text), failed_filters (at the report's
    thresholds), then every quality signal.
    """

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, FINDINGS_SCHEMA, compression="zstd")

    def add(
        self,
        batch: Batch,
        findings: list[Finding],
        tokens: list[int],
        failed: list[list[str]],
    ) -> None:
        columns: dict[str, list] = {
            "id": batch.ids,
            "tokens": tokens,
            "language": [f.language for f in findings],
            "language_confidence": [f.language_confidence for f in findings],
            "duplicate_of": [f.duplicate and str(f.duplicate.original_id) for f in findings],
            "duplicate_kind": [f.duplicate and f.duplicate.kind for f in findings],
            "similarity": [f.duplicate and f.duplicate.similarity for f in findings],
            "pii": [
                [{"type": m.type, "start": m.start, "end": m.end} for m in f.pii] for f in findings
            ],
            "failed_filters": failed,
        }
        for name in SIGNAL_FIELDS:
            columns[name] = [getattr(f.signals, name) for f in findings]
        self._writer.write_table(pa.Table.from_pydict(columns, schema=FINDINGS_SCHEMA))

    def close(self) -> None:
        self._writer.close()


_SAVED_COLUMNS = ["id", "language", "language_confidence", "duplicate_of", "duplicate_kind"]
_SAVED_COLUMNS += ["similarity", "pii", *SIGNAL_FIELDS]


def _saved_rows(path: Path) -> Iterator[tuple]:
    """Rows of a findings file as tuples in _SAVED_COLUMNS order (no per-row dicts)."""
    for table in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=_SAVED_COLUMNS):
        columns = table.to_pydict()
        yield from zip(*(columns[name] for name in _SAVED_COLUMNS), strict=True)


def _with_saved(
    batches: Iterator[Batch], path: Path, keep_duplicates: bool
) -> Iterator[tuple[Batch, list[Finding]]]:
    rows = _saved_rows(path)
    for batch in batches:
        findings = []
        for doc_id, text in zip(batch.ids, batch.texts, strict=True):
            row = next(rows, None)
            if row is None or row[0] != doc_id:
                raise InputError(
                    f"the saved findings do not match the dataset at document {doc_id}",
                    path=path,
                    hint="assess the dataset again, or clean without --report",
                )
            _, language, confidence, original, kind, similarity, spans, *signals = row
            duplicate = None
            if keep_duplicates and original is not None:
                duplicate = DuplicateMatch(doc_id, original, kind, similarity)
            pii_matches = [
                PiiMatch(m["type"], m["start"], m["end"], text[m["start"] : m["end"]])
                for m in spans
            ]
            # SIGNAL_FIELDS is the dataclass's field order: positional arguments fit.
            findings.append(
                Finding(language, confidence, QualitySignals(*signals), pii_matches, duplicate)
            )
        yield batch, findings
