"""Packed sequences: documents tokenized, joined with `<s>`/`</s>`, cut into equal blocks.

    tokens = tokenize_documents(tokenizer, iter_texts(mixture / "train"))
    train = PackedBlocks(tokens, seq_len=256, seed=0)
    batch = train.batch(range(0, 8))   # samples 0..7 of the endless, shuffled stream

Pre-training sees one endless stream of samples. Sample `i` is block
`permutation(seed, epoch)[i % n_blocks]` of epoch `i // n_blocks`, so the data position
is a single integer (samples consumed) and resuming needs no saved iterator, sampler or
RNG: the next batch after a restart is the one an uninterrupted run would have drawn.
The permutation comes from numpy's PCG64 seeded with (seed, epoch): the same order on
every machine and every numpy version that keeps that generator stable.

Epochs after the first repack the documents in a new order (seeded by (seed, epoch)),
so a small corpus seen many times (continued pre-training on an organisation's
documents) does not show the model the same blocks again: with fixed blocks it can
memorise each block's text from the documents packed before it in that block, and then
cannot recall a fact from the document's own words. The first epoch keeps the stream's
order, so a single-epoch run is the same whether or not the stream has document bounds.

Every block is full (`seq_len` tokens, labels everywhere), so every micro-batch predicts
the same number of tokens and averaging micro-batch losses gives the exact batch mean,
whatever the accumulation steps or number of processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np
import torch

from forgeml.core.errors import InputError

TOKENIZE_BATCH = 256  # documents per call to the fast tokenizer (it parallelises a batch)


def tokenize_documents(tokenizer, texts: Iterable[str]) -> np.ndarray:
    """One int32 stream: `<s> doc </s>` per document (no `<s>` if the tokenizer has none).

    `split_special_tokens=True` keeps a literal "</s>" or "[INST]" in a document as
    text, so documents cannot forge control tokens (see forgeml.models.tokenizer).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError(
            "the tokenizer has no end-of-sequence token to separate packed documents",
            hint="use a tokenizer with an eos_token (forgeml's tokenizers have </s>)",
        )
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pieces: list[np.ndarray] = []
    texts = iter(texts)
    while batch := list(islice(texts, TOKENIZE_BATCH)):
        encoded = tokenizer(batch, add_special_tokens=False, split_special_tokens=True)
        for ids in encoded["input_ids"]:
            pieces.append(np.asarray([*bos, *ids, eos], dtype=np.int32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)


class PackedBlocks:
    """Equal blocks of a token stream; the tail shorter than a block is dropped.

    Given `eos_id`, the stream's documents (each ending in it) are reordered for every
    epoch after the first and packed anew; the number of blocks stays the same."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int, eos_id: int | None = None):
        self.seq_len = seq_len
        self.seed = seed
        self.stream = tokens
        self.count = len(tokens) // seq_len
        self.dropped_tokens = len(tokens) - self.count * seq_len
        self.blocks = tokens[: self.count * seq_len].reshape(self.count, seq_len)
        ends = np.flatnonzero(tokens == eos_id) + 1 if eos_id is not None else np.zeros(0)
        self.ends = ends.astype(np.int64)
        self._order: tuple[int, np.ndarray] | None = None
        self._packed: dict[int, np.ndarray] = {}

    @property
    def tokens(self) -> int:
        return self.count * self.seq_len

    def _block_of(self, sample: int) -> tuple[int, int]:
        epoch, position = divmod(sample, self.count)
        if self._order is None or self._order[0] != epoch:
            generator = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._order = (epoch, generator.permutation(self.count))
        return epoch, int(self._order[1][position])

    def _epoch_blocks(self, epoch: int) -> np.ndarray:
        """The blocks of one epoch: the stream's own for the first, or when the stream
        has fewer than two documents; else its documents in a seeded order, repacked."""
        if epoch == 0 or len(self.ends) < 2:
            return self.blocks
        if epoch not in self._packed:
            starts = np.concatenate([[0], self.ends[:-1]])
            generator = np.random.Generator(np.random.PCG64([self.seed, epoch, 1]))
            order = generator.permutation(len(starts))
            stream = np.concatenate([self.stream[starts[i] : self.ends[i]] for i in order])
            stream = np.concatenate([stream, self.stream[self.ends[-1] :]])  # an unended tail
            self._packed = {epoch: stream[: self.tokens].reshape(self.count, self.seq_len)}
        return self._packed[epoch]

    def batch(self, samples: Iterable[int]) -> torch.Tensor:
        """Input ids [len(samples), seq_len] for these global sample numbers."""
        rows = []
        for sample in samples:
            epoch, block = self._block_of(sample)
            rows.append(self._epoch_blocks(epoch)[block])
        return torch.from_numpy(np.stack(rows).astype(np.int64))


def validation_blocks(tokens: np.ndarray, seq_len: int, limit: int | None) -> list[np.ndarray]:
    """The validation stream in order, cut into blocks; the last, shorter one is kept
    (a small validation split still counts) unless it predicts nothing."""
    blocks = [tokens[start : start + seq_len] for start in range(0, len(tokens), seq_len)]
    blocks = [block for block in blocks if len(block) >= 2]
    return blocks[:limit] if limit else blocks


def iter_eval_batches(blocks: list[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of equal-length blocks (only the last block may be shorter)."""
    full = [b for b in blocks if len(b) == len(blocks[0])]
    for start in range(0, len(full), batch_size):
        yield torch.from_numpy(np.stack(full[start : start + batch_size]).astype(np.int64))
    for block in blocks[len(full) :]:
        yield torch.from_numpy(block.astype(np.int64)[None])


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def token_byte_lengths(tokenizer) -> tuple[torch.Tensor, bool]:
    """UTF-8 bytes each token id stands for (0 for special tokens), and whether exact.

    Bits per byte divides the loss by these, so models with different tokenizers
    compare. Byte-level BPE is exact (each vocabulary character is one byte); any other
    tokenizer is measured by decoding each id alone, which miscounts pieces of
    multi-byte characters and word-boundary markers.
    """
    ids = range(len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    special = set(tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = json.loads(backend.to_str()).get("decoder") or {} if backend else {}
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    alphabet = _byte_alphabet()
    byte_level = "ByteLevel" in kinds and all(
        all(c in alphabet for c in token) for i, token in zip(ids, tokens, strict=True)
        if i not in special and token is not None
    )  # fmt: skip
    lengths = []
    for i, token in zip(ids, tokens, strict=True):
        if i in special or token is None:
            lengths.append(0)
        elif byte_level:
            lengths.append(len(token))
        else:
            lengths.append(len(tokenizer.decode([i]).encode("utf-8")))
    return torch.tensor(lengths, dtype=torch.int64), byte_level
