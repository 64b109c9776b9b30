"""Pick the next token of every row with numpy: the llama.cpp engine's sampler.

The same rules as the transformers engine's torch sampler (sampling.py): a guide's mask
first, greedy where temperature is 0, else temperature and top-p, then one
inverse-CDF draw per row from the sequence's own random stream, so a seeded request
gives the same completion whoever else shares the batch. numpy, not torch, because a
server for GGUF models must not load torch (~200 MB) to sample from 32 rows of logits.
The random streams differ from torch's: a seed is reproducible per engine.
"""

from __future__ import annotations

import logging

import numpy as np

from forgeml.serve.engine.sequence import Sequence

log = logging.getLogger("forgeml.serve.engine")


def guide_masks(sequences: list[Sequence], vocab: int) -> list[np.ndarray | None]:
    """Each row's allowed tokens (a bool mask `vocab` long), or None where any may come.

    A guide that fails ends its own sequence (`guide_failed`), never the batch.
    """
    masks: list[np.ndarray | None] = []
    for sequence in sequences:
        allowed = None
        if sequence.guide is not None:
            try:
                allowed = sequence.guide.allowed(sequence.remaining)
            except Exception as error:
                log.exception("constrained decoding failed for %s", sequence.request.request_id)
                sequence.guide_failed(f"constrained decoding failed: {error}")
        if allowed is not None:
            allowed = allowed[:vocab]
            if allowed.shape[0] < vocab:  # a model vocabulary padded past the tokenizer's
                allowed = np.pad(allowed, (0, vocab - allowed.shape[0]))
        masks.append(allowed)
    return masks


def sample(logits: np.ndarray, sequences: list[Sequence]) -> list[int]:
    """Next token per row of `logits` ([rows, vocab], left unchanged)."""
    masks = guide_masks(sequences, logits.shape[1])
    if any(mask is not None for mask in masks):
        logits = np.array(logits, dtype=np.float32)  # ours to write; the caller's may be shared
        for row, mask in enumerate(masks):
            if mask is not None:
                logits[row, ~mask] = -np.inf
    chosen = logits.argmax(axis=1)
    sampled = [row for row, sequence in enumerate(sequences) if not sequence.greedy]
    if sampled:
        chosen[sampled] = _sample_rows(logits[sampled], [sequences[row] for row in sampled])
    return chosen.tolist()


def _sample_rows(logits: np.ndarray, sequences: list[Sequence]) -> np.ndarray:
    temperatures = np.array([s.sampling.temperature for s in sequences], dtype=np.float32)
    scaled = logits.astype(np.float32) / temperatures[:, None]
    scaled -= scaled.max(axis=1, keepdims=True)
    probs = np.exp(scaled)  # exp(-inf) = 0: masked tokens get no mass
    probs /= probs.sum(axis=1, keepdims=True)
    top_p = np.array([s.sampling.top_p for s in sequences], dtype=np.float32)
    return _draw(_top_p(probs, top_p), [_generator(s) for s in sequences])


def _generator(sequence: Sequence) -> np.random.Generator:
    """The sequence's own random stream: from its seed, else from fresh entropy."""
    if sequence.generator is None:
        seed = sequence.sampling.seed
        sequence.generator = np.random.default_rng(None if seed is None else seed % 2**64)
    return sequence.generator


def _draw(probs: np.ndarray, generators: list[np.random.Generator]) -> np.ndarray:
    """One token per row: a uniform per row into the row's CDF (as sampling._draw).
    `side="right"` never lands on a token of probability zero."""
    cdf = probs.cumsum(axis=1)
    uniforms = np.array([generator.random() for generator in generators])
    targets = uniforms * cdf[:, -1] * (1 - 1e-6)
    chosen = [np.searchsorted(cdf[row], targets[row], side="right") for row in range(len(cdf))]
    return np.minimum(np.array(chosen), probs.shape[1] - 1)


def _top_p(probs: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """Keep, per row, the smallest set of most likely tokens whose mass reaches top_p."""
    if bool((top_p >= 1.0).all()):
        return probs
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    mass_before = sorted_probs.cumsum(axis=1) - sorted_probs
    sorted_probs[mass_before >= top_p[:, None]] = 0.0
    kept = np.zeros_like(probs)
    np.put_along_axis(kept, order, sorted_probs, axis=1)
    return kept
