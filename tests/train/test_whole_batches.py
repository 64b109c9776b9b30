"""WholeBatchSampler: each epoch a seeded shuffle padded to whole global batches."""

from __future__ import annotations

import torch
from accelerate.data_loader import SeedableRandomSampler

from forgeml.train.whole_batches import WholeBatchSampler


def test_an_epoch_that_divides_is_shuffled_as_accelerate_shuffles():
    ours = WholeBatchSampler(12, 4, seed=7)
    theirs = SeedableRandomSampler(data_source=range(12), data_seed=7)
    for epoch in range(3):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert list(ours) == list(theirs)


def test_the_last_batch_is_filled_from_the_start_of_the_epoch():
    sampler = WholeBatchSampler(14, 4, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 16
    assert sorted(set(order)) == list(range(14))  # every example once, two of them twice
    assert order[14:] == order[:2]


def test_fewer_examples_than_a_batch_still_make_one_whole_batch():
    order = list(WholeBatchSampler(3, 8, seed=0))
    assert len(order) == 8 and set(order) == {0, 1, 2}


def test_each_epoch_has_its_own_order_and_a_rerun_repeats_it():
    def epochs(sampler: WholeBatchSampler) -> list[list[int]]:
        return [list(sampler) for _ in range(3)]  # the epoch advances after each pass

    first = epochs(WholeBatchSampler(10, 4, seed=3))
    assert first == epochs(WholeBatchSampler(10, 4, seed=3))
    assert first[0] != first[1] != first[2]
    assert torch.equal(torch.tensor(first[0][:10]).sort().values, torch.arange(10))
