"""Replay: general text mixed into fine-tuning, so the model keeps what it knew.

Fine-tuning on a narrow task moves every weight towards it; a share of the base's own
pre-training (or domain) text in the same batches pulls back. `replay_fraction` is the
share of the trained tokens that are replay text: with 1,000 trained answer tokens and
0.25, about 333 tokens of text are added, as blocks cut from the mixture's train split
(`<s> doc </s>` packed, the loss on every token), each about as long as a median
fine-tuning example so no batch is all text. The blocks are chosen by the run's seed,
and the trainer shuffles them in with the examples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from forgeml.core.errors import InputError
from forgeml.data.dataset import iter_texts
from forgeml.train.packing import tokenize_documents

MIN_BLOCK_TOKENS = 32


def replay_rows(
    tokenizer: Any,
    mixture: Path,
    fraction: float,
    trained_tokens: int,
    example_lengths: list[int],
    seed: int,
) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
    """Rows of text (labels = input ids) making up `fraction` of the trained tokens."""
    stream = tokenize_documents(tokenizer, iter_texts(mixture / "train"))
    length = max(MIN_BLOCK_TOKENS, int(np.median(example_lengths))) if example_lengths else 128
    wanted = math.ceil(trained_tokens * fraction / (1 - fraction) / length)
    available = len(stream) // length
    if available == 0:
        raise InputError(
            f"the replay mixture's train split has {len(stream)} tokens, fewer than one "
            f"block of {length}",
            field="replay",
        )
    blocks = stream[: available * length].reshape(available, length)
    chosen = np.random.default_rng(seed).choice(
        available, size=min(wanted, available), replace=False
    )
    rows = [{"input_ids": blocks[i].tolist(), "labels": blocks[i].tolist()} for i in sorted(chosen)]
    record = {
        "fraction": fraction,
        "blocks": len(rows),
        "block_tokens": length,
        "tokens": len(rows) * length,
        "wanted_blocks": wanted,
    }
    return rows, record
