"""KeyTable: the compact multimap behind the near-duplicate index, against a dict."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from forgeml.data.keytable import KeyTable


def test_lookups_match_a_dict_through_flushes_and_merges() -> None:
    rng = np.random.default_rng(0)
    table = KeyTable(width=3, buffer_items=7)  # tiny buffer: many runs and merges
    reference: dict[int, list[int]] = defaultdict(list)
    columns = np.arange(3, dtype=np.uint64) << np.uint64(32)
    for value in range(3000):
        # Few distinct keys per column: keys repeat across many items.
        keys = rng.integers(0, 40, 3).astype(np.uint64) | columns
        if value % 7 == 0:
            expected = [v for key in keys.tolist() for v in reference[key]]
            assert sorted(table.find(keys).tolist()) == sorted(expected)
        table.add(keys, value)
        for key in keys.tolist():
            reference[key].append(value)
    assert len(table) == 3000
    # Values of one key come back oldest first, once per matching column.
    key = next(iter(reference))
    query = np.full(3, np.uint64(2**64 - 1))
    query[key >> 32] = key
    assert table.find(query).tolist() == reference[key]


def test_an_absent_key_finds_nothing() -> None:
    table = KeyTable(width=2, buffer_items=4)
    for value in range(10):
        table.add(np.array([value, 100 + value], dtype=np.uint64), value)
    assert table.find(np.array([50, 50], dtype=np.uint64)).tolist() == []
    past_the_end = np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64)
    assert table.find(past_the_end).tolist() == []
    assert table.find(np.array([3, 104], dtype=np.uint64)).tolist() == [3, 4]


def test_an_entry_costs_12_bytes_and_runs_stay_few() -> None:
    table = KeyTable(width=21)
    rng = np.random.default_rng(1)
    items = 20_000
    for value in range(items):
        table.add(rng.integers(0, 2**63, 21, dtype=np.uint64), value)
    assert table.nbytes / (items * 21) == pytest.approx(12, rel=0.05)
    assert len(table._runs) <= 4
