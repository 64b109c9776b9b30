"""A compact, growing multimap from 64-bit keys to 32-bit values: the near-duplicate index's tables.

A Python dict of ints costs ~100 bytes an entry (key object, value object, slot); the
LSH index holds one entry per band per kept document, so at 21 bands that alone would
be ~2 KB a document. Here an entry is 12 bytes (a uint64 key and an int32 value in
numpy arrays), stored log-structured:

- new items go to a small unsorted buffer, searched by one vectorised comparison;
- a full buffer becomes a sorted run, merged into the previous run while that one is
  at most MERGE_RATIO times larger: run sizes then grow by ~MERGE_RATIO from newest
  to oldest, so there are at most 3 runs up to 50k items and 5 up to 10M, and a
  lookup is one binary search per run (`np.searchsorted`, all the item's keys at
  once). The price is that an entry is copied by merges ~11 times by 50k items and
  ~25 times by 10M (a factor of 2 would copy it ~log2(n) times but keep ~log2(n)
  runs); copies are vectorised, lookups (one per document) are not, so fewer runs win.

A key may map to many values (documents sharing a band), and a lookup returns a whole
range of equal keys as one slice, so a very common key costs one numpy slice rather
than a walk along a chain. Only appends: kept documents are never removed.

    table = KeyTable(width=21)
    table.add(keys, value=row)   # keys: uint64, one per column (e.g. per band)
    table.find(keys)             # values of every stored key equal to one of `keys`
"""

from __future__ import annotations

import numpy as np

# Items held unsorted before they become a run: the buffer is compared in full on every
# lookup (512 x 21 keys ~ 5 us), and each run costs a binary search per lookup.
BUFFER_ITEMS = 512
MERGE_RATIO = 8


class KeyTable:
    """Multimap uint64 -> int32 for items of `width` keys that share one value.

    Runs mix the columns in one sorted array, so a key must say which column it
    belongs to: the callers keep the columns' key spaces apart (a band key carries its
    band number in its top bits).
    """

    def __init__(self, width: int, buffer_items: int = BUFFER_ITEMS) -> None:
        if width < 1 or buffer_items < 1:
            raise ValueError("width and buffer_items must be >= 1")
        self.width = width
        self._buffer_keys = np.empty((buffer_items, width), dtype=np.uint64)
        self._buffer_values = np.empty(buffer_items, dtype=np.int32)
        self._buffered = 0
        self._items = 0
        # (sorted keys, values), oldest and largest first; sizes strictly decrease.
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        """How many items (groups of `width` keys) have been added."""
        return self._items

    @property
    def nbytes(self) -> int:
        """Bytes held in arrays: the buffer plus 12 bytes per stored key."""
        runs = sum(keys.nbytes + values.nbytes for keys, values in self._runs)
        return runs + self._buffer_keys.nbytes + self._buffer_values.nbytes

    def add(self, keys: np.ndarray, value: int) -> None:
        """Store `keys` (shape (width,), uint64), each mapping to `value`."""
        self._buffer_keys[self._buffered] = keys
        self._buffer_values[self._buffered] = value
        self._buffered += 1
        self._items += 1
        if self._buffered == len(self._buffer_values):
            self._flush()

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Values of every stored key equal to one of `keys`, oldest first for each key.

        A value appears once per matching column: for LSH bands, the count of a document
        in the result is the number of bands it shares with the query.
        """
        found = []
        for run_keys, run_values in self._runs:
            low = np.searchsorted(run_keys, keys)
            # mode="clip": a key past the end is compared with the last key, never equal.
            hits = run_keys.take(low, mode="clip") == keys
            if hits.any():
                for column in np.flatnonzero(hits):
                    high = np.searchsorted(run_keys, keys[column], side="right")
                    found.append(run_values[low[column] : high])
        if self._buffered:
            hits = self._buffer_keys[: self._buffered] == keys
            if hits.any():
                rows, _ = np.nonzero(hits)  # one row per matching key
                found.append(self._buffer_values[rows])
        if not found:
            return np.empty(0, dtype=np.int32)
        return np.concatenate(found)

    def _flush(self) -> None:
        count = self._buffered
        keys = self._buffer_keys[:count].ravel()
        values = np.repeat(self._buffer_values[:count], self.width)
        order = np.argsort(keys, kind="stable")  # stable: equal keys stay oldest first
        run = (keys[order], values[order])
        self._buffered = 0
        while self._runs and len(self._runs[-1][0]) <= MERGE_RATIO * len(run[0]):
            run = _merge(self._runs.pop(), run)
        self._runs.append(run)


def _merge(
    older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted runs without re-sorting; among equal keys the older come first."""
    old_keys, old_values = older
    new_keys, new_values = newer
    # Where each newer key lands: after every older key <= it and after the newer before it.
    landing = np.searchsorted(old_keys, new_keys, side="right")
    landing += np.arange(len(new_keys))
    size = len(old_keys) + len(new_keys)
    from_old = np.ones(size, dtype=bool)
    from_old[landing] = False
    keys = np.empty(size, dtype=np.uint64)
    values = np.empty(size, dtype=np.int32)
    keys[landing], values[landing] = new_keys, new_values
    keys[from_old], values[from_old] = old_keys, old_values
    return keys, values
