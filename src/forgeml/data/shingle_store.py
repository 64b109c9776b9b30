"""The shingle sets of kept documents, on disk, so candidates are verified with the exact Jaccard.

MinHash only estimates the Jaccard similarity: at 128 permutations its standard error
near 0.8 is ~0.035, which both misses copies at 0.85 and removes documents at 0.75.
Comparing the shingle sets themselves removes that noise, but a set costs 4 bytes a
shingle (a few KB a document, far more for long ones) and, in a streaming pass, any
kept document may become a candidate later. So the sets are appended to an unlinked
temporary file and only their offsets stay in memory (8 bytes a document); the
operating system's page cache, not this process, holds what is read often. The file
takes ~4 bytes a word of kept text (about 2/3 of the text's size) in $TMPDIR, which
for large corpora should be a disk, not a tmpfs (whose files live in RAM). It is
removed when the store is garbage-collected.

    store = ShingleStore()
    row = store.append(np.unique(shingle_hashes))   # sorted, unique uint32
    store.size(row), store.get(row)
"""

from __future__ import annotations

import tempfile
import weakref

import numpy as np

_ITEM = np.dtype(np.uint32).itemsize


class ShingleStore:
    """Append-only list of sorted uint32 arrays kept in a temporary file."""

    def __init__(self) -> None:
        # Open for the store's whole life, closed by the finalizer below.
        self._file = tempfile.TemporaryFile(prefix="forgeml-shingles-")  # noqa: SIM115
        weakref.finalize(self, self._file.close)  # close without a ResourceWarning
        # _offsets[row] .. _offsets[row + 1]: where set `row` lies, in items.
        self._offsets = np.zeros(1024, dtype=np.int64)
        self._count = 0
        self._at_end = True  # the file position is at its end (no seek before writing)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the offsets); the sets themselves are on disk."""
        return self._offsets.nbytes

    @property
    def disk_bytes(self) -> int:
        return int(self._offsets[self._count]) * _ITEM

    def append(self, hashes: np.ndarray) -> int:
        """Store a sorted, duplicate-free uint32 array; returns its row."""
        if self._count + 2 > len(self._offsets):
            self._offsets = np.concatenate([self._offsets, np.zeros_like(self._offsets)])
        if not self._at_end:
            self._file.seek(0, 2)
            self._at_end = True
        self._file.write(np.ascontiguousarray(hashes, dtype=np.uint32).tobytes())
        self._offsets[self._count + 1] = self._offsets[self._count] + len(hashes)
        self._count += 1
        return self._count - 1

    def size(self, row: int | np.ndarray) -> int | np.ndarray:
        """How many shingles set `row` holds (or an array of sizes for an array of rows)."""
        return self._offsets[np.add(row, 1)] - self._offsets[row]

    def get(self, row: int) -> np.ndarray:
        """The set stored at `row`, as a sorted uint32 array."""
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        self._file.seek(start * _ITEM)  # a buffered file flushes pending writes first
        self._at_end = False
        return np.frombuffer(self._file.read((end - start) * _ITEM), dtype=np.uint32)
