"""How expected a prompt is under the served model: its mean log-probability per token.

A drift signal (forgeml.monitor): prompts like the model's training data score high,
prompts from another domain, language or register score low. The engine gets it from
the prefill it runs anyway: the hidden states at a prompt's positions are already
computed, only the output layer is applied to a few more of them. At most
`MAX_SCORED` positions per prompt, evenly spaced, so the extra cost is bounded for any
prompt length (one output-layer product of at most 16 rows a prompt).

`monitor.reference` scores the model's training prompts with the same positions, so the
two distributions are comparable.
"""

from __future__ import annotations

import torch

MAX_SCORED = 16


def scored_positions(length: int) -> list[int]:
    """Positions of a prompt of `length` tokens whose outputs are scored: position i
    predicts token i + 1. Every one for short prompts, else MAX_SCORED evenly spaced."""
    count = length - 1
    if count <= 0:
        return []
    if count <= MAX_SCORED:
        return list(range(count))
    return sorted({round(i * (count - 1) / (MAX_SCORED - 1)) for i in range(MAX_SCORED)})


def scored_columns(length: int, width: int) -> list[int]:
    """`scored_positions` as columns of a row left-padded to `width`."""
    offset = width - length
    return [offset + position for position in scored_positions(length)]


def mean_logprob(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean log-probability of `targets` [n] under `logits` [n, vocab]."""
    scores = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])
    return round(float(scores.mean()), 4)


def row_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, counts: list[int]
) -> list[float | None]:
    """Split stacked logits/targets into rows of `counts` and take each row's mean."""
    found: list[float | None] = []
    start = 0
    for count in counts:
        if count == 0:
            found.append(None)
            continue
        found.append(mean_logprob(logits[start : start + count], targets[start : start + count]))
        start += count
    return found


def prompt_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """For left-padded prompts [rows, width]: the flat indices (row * width + column) of
    the scored columns, the token each predicts, and how many each row has."""
    width = input_ids.shape[1]
    flat: list[int] = []
    targets: list[int] = []
    counts: list[int] = []
    lengths = attention_mask.sum(dim=1).tolist()
    for row, length in enumerate(lengths):
        columns = scored_columns(int(length), width)
        flat += [row * width + column for column in columns]
        targets += input_ids[row, [column + 1 for column in columns]].tolist()
        counts.append(len(columns))
    return torch.tensor(flat, dtype=torch.long), torch.tensor(targets, dtype=torch.long), counts
