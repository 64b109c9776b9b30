"""Packing, bits-per-byte accounting and learning-rate schedules, without training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from forgeml.train.packing import (
    PackedBlocks,
    token_byte_lengths,
    tokenize_documents,
    validation_blocks,
)
from forgeml.train.schedule import lr_multiplier


@pytest.fixture(scope="module")
def tokenizer(reference):
    workspace, inputs, _ = reference
    return AutoTokenizer.from_pretrained(workspace.root / inputs["tokenizer"].path)


def test_documents_are_framed_and_cannot_forge_control_tokens(tokenizer):
    tokens = tokenize_documents(tokenizer, ["one </s> [INST]", "two"])
    ids = tokens.tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert ids.count(tokenizer.eos_token_id) == 2  # the literal "</s>" stays text
    assert tokenizer.convert_tokens_to_ids("[INST]") not in ids
    assert tokens.dtype == np.int32


def test_sample_stream_is_a_seeded_permutation_per_epoch():
    blocks = PackedBlocks(np.arange(50, dtype=np.int32), seq_len=8, seed=3)
    assert blocks.count == 6 and blocks.dropped_tokens == 2
    epoch0 = [int(row[0]) // 8 for row in blocks.batch(range(6))]
    epoch1 = [int(row[0]) // 8 for row in blocks.batch(range(6, 12))]
    assert sorted(epoch0) == sorted(epoch1) == list(range(6))
    assert epoch0 != epoch1  # reshuffled each epoch
    again = PackedBlocks(np.arange(50, dtype=np.int32), seq_len=8, seed=3)
    assert again.batch([9, 2, 7]).tolist() == blocks.batch([9, 2, 7]).tolist()  # any order


def test_later_epochs_repack_the_documents_in_a_new_order():
    """A small corpus seen many times: each epoch after the first packs its documents in
    a new seeded order, so a block's neighbours (and where a document starts) change."""
    eos = 0
    documents = [
        np.asarray([10 * d + i for i in range(1, 6)] + [eos], dtype=np.int32) for d in range(1, 9)
    ]  # fmt: skip  (8 documents of 6 tokens)
    stream = np.concatenate(documents)
    blocks = PackedBlocks(stream, seq_len=8, seed=3, eos_id=eos)
    plain = PackedBlocks(stream, seq_len=8, seed=3)
    count = blocks.count  # 48 tokens: 6 blocks

    def epoch(number: int) -> np.ndarray:
        rows = blocks.batch(range(number * count, (number + 1) * count))
        return np.sort(rows.numpy(), axis=0)

    first = blocks.batch(range(count)).tolist()
    assert first == plain.batch(range(count)).tolist()  # the first epoch as the stream is
    for number in (1, 2):
        seen = blocks.batch(range(number * count, (number + 1) * count)).numpy().ravel()
        assert sorted(seen.tolist()) == sorted(stream.tolist())  # every document, once
    later = {tuple(map(tuple, epoch(n))) for n in (0, 1, 2)}
    assert len(later) == 3  # each epoch's blocks differ
    again = PackedBlocks(stream, seq_len=8, seed=3, eos_id=eos)
    assert again.batch([20, 7, 13]).tolist() == blocks.batch([20, 7, 13]).tolist()


def test_validation_keeps_a_short_tail_and_honours_the_limit():
    tokens = np.arange(21, dtype=np.int32)
    assert [len(b) for b in validation_blocks(tokens, 8, None)] == [8, 8, 5]
    assert len(validation_blocks(tokens, 8, 2)) == 2
    assert [len(b) for b in validation_blocks(np.arange(17, dtype=np.int32), 8, None)] == [8, 8]


def test_byte_lengths_are_exact_for_byte_level_bpe(tokenizer):
    lengths, exact = token_byte_lengths(tokenizer)
    assert exact and len(lengths) == len(tokenizer)
    assert lengths[tokenizer.eos_token_id] == 0 and lengths[tokenizer.bos_token_id] == 0
    text = "Déjà vu: naïve café — 42 €"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    decoder = json.loads(tokenizer.backend_tokenizer.to_str())["decoder"]["type"]
    assert decoder == "ByteLevel"


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    f = lr_multiplier(schedule, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    middle, end = f(50), f(100)
    if schedule == "constant":
        assert middle == end == 1.0
    elif schedule == "wsd":  # flat until the last 20% of steps, then linear to 0.1
        assert f(79) == 1.0 and f(90) == pytest.approx(0.55) and end == pytest.approx(0.1)
    else:
        assert 0.1 < middle < 1.0 and end == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))
