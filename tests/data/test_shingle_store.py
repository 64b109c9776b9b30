"""ShingleStore: shingle sets kept on disk, read back exactly, offsets only in memory."""

from __future__ import annotations

import gc
import os

import numpy as np

from forgeml.data.shingle_store import ShingleStore


def test_sets_read_back_exactly_between_appends() -> None:
    rng = np.random.default_rng(0)
    store = ShingleStore()
    stored = []
    for row in range(500):
        values = np.unique(rng.integers(0, 2**32, rng.integers(0, 300), dtype=np.uint64))
        assert store.append(values.astype(np.uint32)) == row
        stored.append(values)
        probe = int(rng.integers(0, row + 1))  # a read between writes
        assert np.array_equal(store.get(probe), stored[probe])
    assert all(np.array_equal(store.get(row), values) for row, values in enumerate(stored))
    assert store.size(np.arange(3)).tolist() == [len(values) for values in stored[:3]]
    assert store.disk_bytes == 4 * sum(len(values) for values in stored)
    assert store.nbytes < store.disk_bytes / 10


def test_the_file_is_closed_when_the_store_is_collected() -> None:
    store = ShingleStore()
    store.append(np.arange(10, dtype=np.uint32))
    descriptor = store._file.fileno()
    opened = os.fstat(descriptor)
    del store
    gc.collect()
    try:
        now = os.fstat(descriptor)
    except OSError:
        return
    # Another thread (pytest-xdist's) may have been given the freed number since.
    same = (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)
    assert not same, "the store's file is still open"
