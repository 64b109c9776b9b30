"""The baseline near-duplicate index the benchmarks compare against: datasketch's MinHashLSH.

This is forgeml's index before it kept its own band tables (up to 2026-11): the same
MinHash signatures (`MinHasher`), `datasketch.MinHashLSH` with weights (0.05, 0.95)
(16 bands x 8 rows at threshold 0.8) and candidates verified against the *estimated*
Jaccard. It has the same interface as `NearDuplicateIndex` (`add`, `clusters`), so a
benchmark can run both on one corpus in one run. Memory: ~6.5 KB per kept document,
mostly datasketch's dict-of-sets tables.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from datasketch import MinHashLSH

from forgeml.data.dedup import DuplicateMatch, MinHasher, exact_key


class _LshEntry:
    """What `MinHashLSH` reads from a MinHash, without building one per document."""

    __slots__ = ("hashvalues",)
    scheme = "affine32"

    def __init__(self, hashvalues: np.ndarray) -> None:
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


class DatasketchIndex:
    """MinHash + datasketch MinHashLSH (16 x 8), candidates checked by estimated Jaccard."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128) -> None:
        self.threshold = threshold
        self.hasher = MinHasher(num_perm=num_perm)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
        self._exact: dict[str, tuple[Hashable, str, float]] = {}
        self._signatures = np.empty((1024, num_perm), dtype=np.uint32)
        self._kept: list[Hashable] = []
        self._members: dict[Hashable, list[Hashable]] = {}

    def add(self, doc_id: Hashable, text: str) -> DuplicateMatch | None:
        key = exact_key(text)
        earlier = self._exact.get(key)
        if earlier is not None:
            return self._record(DuplicateMatch(doc_id, *earlier))
        self._exact[key] = (doc_id, "exact", 1.0)
        shingle_hashes = self.hasher.shingle_hashes(text)
        if not len(shingle_hashes):
            return None
        entry = _LshEntry(self.hasher.signature_of(shingle_hashes))
        candidates = self.lsh.query(entry)
        if candidates:
            rows = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
            agreement = np.count_nonzero(self._signatures[rows] == entry.hashvalues, axis=1)
            best = int(np.argmax(agreement))
            similarity = float(agreement[best]) / self.hasher.num_perm
            if similarity >= self.threshold:
                original = self._kept[int(rows[best])]
                self._exact[key] = (original, "near", similarity)
                return self._record(DuplicateMatch(doc_id, original, "near", similarity))
        row = len(self._kept)
        if row == len(self._signatures):
            grown = np.empty((2 * row, self._signatures.shape[1]), dtype=np.uint32)
            grown[:row] = self._signatures
            self._signatures = grown
        self._signatures[row] = entry.hashvalues
        self._kept.append(doc_id)
        self.lsh.insert(row, entry, check_duplication=False)
        return None

    def _record(self, match: DuplicateMatch) -> DuplicateMatch:
        self._members.setdefault(match.original_id, [match.original_id]).append(match.doc_id)
        return match

    def clusters(self) -> dict[Hashable, list[Hashable]]:
        return {original: list(members) for original, members in self._members.items()}
