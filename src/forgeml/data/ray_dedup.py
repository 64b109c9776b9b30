"""Duplicate detection with `executor: ray`: the MinHash work and the shuffle in Ray, the
decisions here, in document order, the same as the local `NearDuplicateIndex`'s.

The local index holds a band table of every kept document (21 keys each) and computes
every signature in this process. At a billion documents neither fits one machine, so
with Ray:

1. each scan batch's Ray task also computes its documents' keys (`document_keys`): the
   exact key and the 21 LSH band keys, a table left in Ray's object store;
2. Ray Data shuffles them (`duplicate_plan`): grouped by exact key, every copy learns
   the first document with its text; grouped by band key (first copies only, as only
   they reach the local index's band table), every document learns the earlier
   documents it shares a band with (`PAIR`, once per shared band) and every document
   some later one shares a band with is marked `NEEDED`;
3. that plan, sorted by document, streams back to this process, where
   `PlannedDuplicateIndex` makes the order-dependent decisions with the local index's
   own code (`_best_match`, `_record`): a candidate counts only if it was kept, and is
   verified with the exact Jaccard of the shingle sets.

So this process holds no band table and computes no signature: what grows with the
corpus here is an int32 per document (kept row or near-copy code) and the kept ids, as
in the local index, and the shingle sets of `NEEDED` documents only.

A band key shared by more than `HOT_GROUP` documents (a corpus of near-identical
templates) would make ~n^2/2 pairs; such a band is sent here as `HOT` rows instead and
resolved as the local index does, with a table of its kept documents only.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forgeml.data.dedup import DuplicateMatch, NearDuplicateIndex, exact_key, sorted_set
from forgeml.data.shingle_store import ShingleStore

KEYS_SCHEMA = pa.schema(
    [("doc", pa.int64()), ("exact", pa.uint64()), ("bands", pa.list_(pa.uint64()))]
)
PLAN_SCHEMA = pa.schema(
    [("doc", pa.int64()), ("kind", pa.int8()), ("other", pa.int64()), ("band", pa.uint64())]
)
# Plan row kinds. EXACT: `other` is the first document with this text. BAND: one of a
# first copy's band keys (between the two shuffles only). PAIR: `other` is an earlier
# document sharing a band. HOT: `band` is shared by too many documents to pair them.
# NEEDED: a later document will compare itself with this one.
EXACT, BAND, PAIR, HOT, NEEDED = range(5)
HOT_GROUP = 64


@lru_cache(maxsize=4)
def _index(threshold: float) -> NearDuplicateIndex:
    return NearDuplicateIndex(threshold=threshold)


def document_keys(texts: list[str], first_doc: int, threshold: float) -> pa.Table:
    """Each document's exact key and band keys (none when it has no words), as the local
    index computes them."""
    index = _index(threshold)
    exact = np.empty(len(texts), dtype=np.uint64)
    bands: list[np.ndarray] = []
    for row, text in enumerate(texts):
        exact[row] = np.frombuffer(bytes.fromhex(exact_key(text)), dtype=np.uint64, count=1)[0]
        shingles = sorted_set(index.hasher.shingle_hashes(text))
        no_bands = np.empty(0, dtype=np.uint64)
        bands.append(
            index.band_keys(index.hasher.signature_of(shingles)) if len(shingles) else no_bands
        )
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum([len(keys) for keys in bands], out=offsets[1:])
    values = np.concatenate(bands) if bands else np.empty(0, dtype=np.uint64)
    return pa.table(
        {
            "doc": np.arange(first_doc, first_doc + len(texts), dtype=np.int64),
            "exact": exact,
            "bands": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint64())),
        },
        schema=KEYS_SCHEMA,
    )


def _plan_rows(doc, kind, other=None, band=None) -> pa.Table:
    count = len(doc)
    return pa.table(
        {
            "doc": np.asarray(doc, dtype=np.int64),
            "kind": np.full(count, kind, dtype=np.int8),
            "other": np.full(count, -1, dtype=np.int64) if other is None else other,
            "band": np.zeros(count, dtype=np.uint64) if band is None else band,
        },
        schema=PLAN_SCHEMA,
    )


def _groups(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (key, doc), and each group's start and size."""
    order = np.lexsort((docs, keys))
    keys, docs = keys[order], docs[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else order
    sizes = np.diff(np.append(starts, len(keys)))
    return order, starts, sizes


def split_exact(block: pa.Table) -> pa.Table:
    """A block holding whole exact-key groups: EXACT rows for every copy, BAND rows for
    the first copy's bands."""
    docs = block["doc"].to_numpy()
    order, starts, sizes = _groups(block["exact"].to_numpy(), docs)
    docs = docs[order]
    first_of_row = np.repeat(docs[starts], sizes)
    copies = docs != first_of_row
    exact = _plan_rows(docs[copies], EXACT, other=first_of_row[copies])
    firsts = order[starts]
    bands = block["bands"].take(pa.array(firsts))
    lengths = pc.list_value_length(bands).to_numpy(zero_copy_only=False)
    band_rows = _plan_rows(
        np.repeat(docs[starts], lengths), BAND, band=pc.list_flatten(bands).to_numpy()
    )
    return pa.concat_tables([exact, band_rows])


def pair_bands(block: pa.Table, hot_group: int = HOT_GROUP) -> pa.Table:
    """A block holding whole band-key groups: PAIR rows for each later member of a group
    with each earlier one, NEEDED for each member some later one pairs with, HOT rows
    for the members of groups over `hot_group`. Vectorised: a corpus of near copies has
    a group for most of its documents."""
    bands, docs = block["band"].to_numpy(), block["doc"].to_numpy()
    order, starts, sizes = _groups(bands, docs)
    bands, docs = bands[order], docs[order]
    size_of_row = np.repeat(sizes, sizes)
    start_of_row = np.repeat(starts, sizes)
    rank = np.arange(len(docs)) - start_of_row  # position within its group
    hot = size_of_row > hot_group
    paired = (size_of_row > 1) & ~hot
    # Each paired row meets the `rank` rows before it in its group.
    meets = np.where(paired, rank, 0)
    later = np.repeat(np.arange(len(docs)), meets)
    first_pair = np.repeat(np.cumsum(meets) - meets, meets)
    earlier = np.repeat(start_of_row, meets) + (np.arange(len(later)) - first_pair)
    needed = (hot | paired) & ~(paired & (rank == size_of_row - 1))
    return pa.concat_tables(
        [
            _plan_rows(docs[later], PAIR, other=docs[earlier]),
            _plan_rows(docs[hot], HOT, band=bands[hot]),
            _plan_rows(docs[needed], NEEDED),
        ]
    )


def _only(kind: int):
    def keep(block: pa.Table) -> pa.Table:
        return block.filter(pc.equal(block["kind"], pa.scalar(kind, pa.int8())))

    return keep


def duplicate_plan(ray: Any, key_refs: list, *, partitions: int, hot_group: int = HOT_GROUP):
    """The plan rows of every document that has any, sorted by document (a Ray Dataset)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    whole = {"batch_size": None, "batch_format": "pyarrow"}
    keys = ray.data.from_arrow_refs(key_refs)
    by_text = keys.repartition(partitions, keys=["exact"]).map_batches(split_exact, **whole)
    by_text = by_text.materialize()  # read twice below: computed once
    copies = by_text.map_batches(_only(EXACT), **whole)
    bands = by_text.map_batches(_only(BAND), **whole)
    pairs = bands.repartition(partitions, keys=["band"]).map_batches(
        pair_bands, fn_kwargs={"hot_group": hot_group}, **whole
    )
    return copies.union(pairs).sort("doc")


def plan_by_document(plan) -> Iterator[tuple[int, pa.Table]]:
    """(document, its plan rows) in document order, streamed from the sorted plan."""
    pending: list[pa.Table] = []
    current = -1
    for batch in plan.iter_batches(batch_format="pyarrow", batch_size=65536):
        docs = batch["doc"].to_numpy()
        if not len(docs):
            continue
        starts = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        for index, start in enumerate(starts.tolist()):
            end = int(starts[index + 1]) if index + 1 < len(starts) else len(docs)
            doc = int(docs[start])
            if doc != current and pending:
                yield current, pa.concat_tables(pending)
                pending = []
            current = doc
            pending.append(batch.slice(start, end - start))
    if pending:
        yield current, pa.concat_tables(pending)


class _SomeShingles:
    """The shingle sets of the kept documents that are NEEDED, by kept row (the
    interface `NearDuplicateIndex._best_match` reads)."""

    def __init__(self) -> None:
        self._store = ShingleStore()
        self._row_of: dict[int, int] = {}

    def add(self, kept_row: int, shingles: np.ndarray) -> None:
        self._row_of[kept_row] = self._store.append(shingles)

    def size(self, rows: np.ndarray) -> np.ndarray:
        return self._store.size(np.array([self._row_of[int(row)] for row in rows], dtype=np.int64))

    def get(self, row: int) -> np.ndarray:
        return self._store.get(self._row_of[row])

    @property
    def nbytes(self) -> int:
        return self._store.nbytes + 100 * len(self._row_of)


class PlannedDuplicateIndex(NearDuplicateIndex):
    """`NearDuplicateIndex.add`'s answers from a Ray plan: documents must come in the
    order (and numbering) the plan was made with."""

    def __init__(self, plan: Iterator[tuple[int, pa.Table]], threshold: float = 0.8) -> None:
        super().__init__(threshold=threshold)
        self._plan = plan
        self._planned: tuple[int, pa.Table] | None = next(plan, None)
        self._shingles = _SomeShingles()  # type: ignore[assignment]
        self._code = array("i")  # per document: kept row (>= 0) or -1 - near copy
        self._hot: dict[int, list[int]] = {}  # hot band key -> kept rows

    def _rows_of(self, doc: int) -> pa.Table | None:
        if self._planned is None or self._planned[0] != doc:
            return None
        rows = self._planned[1]
        self._planned = next(self._plan, None)
        return rows

    def add(self, doc_id, text: str) -> DuplicateMatch | None:
        self._check_new(doc_id)
        doc = len(self._code)
        rows = self._rows_of(doc)
        kinds = rows["kind"].to_numpy() if rows is not None else np.empty(0, dtype=np.int8)
        if EXACT in kinds:
            first = int(rows["other"].to_numpy()[kinds == EXACT][0])
            code = self._code[first]
            self._code.append(code)
            return self._record(doc_id, code)
        pairs = rows["other"].to_numpy()[kinds == PAIR] if rows is not None else []
        hot = rows["band"].to_numpy()[kinds == HOT] if rows is not None else []
        candidates = [self._code[other] for other in pairs.tolist()] if len(pairs) else []
        candidates = [code for code in candidates if code >= 0]  # kept ones only
        for band in np.asarray(hot).tolist():
            candidates.extend(self._hot.get(band, ()))
        shingles = None
        if candidates or NEEDED in kinds:
            shingles = sorted_set(self.hasher.shingle_hashes(text))
        if candidates:
            match = self._best_match(shingles, np.asarray(candidates, dtype=np.int64))
            if match is not None:
                row, similarity = match
                self._near_rows.append(row)
                self._near_similarity.append(similarity)
                code = -len(self._near_rows)
                self._code.append(code)
                return self._record(doc_id, code)
        row = len(self._kept)
        self._kept.append(doc_id)
        self._code.append(row)
        if NEEDED in kinds:
            self._shingles.add(row, shingles)
        for band in np.asarray(hot).tolist():
            self._hot.setdefault(band, []).append(row)
        return None
