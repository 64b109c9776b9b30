"""The running batch of a transformers engine: sequences, their KV cache and masks.

Layout: every row of the cache is one sequence, every column one time slot shared by
all rows. A sequence that joined later, or has a shorter prompt, is *left-padded*: its
first columns are padding, masked out by `attention_mask`. So one forward pass of
shape [rows, 1] advances every sequence by a token, whatever its length.

- `prefill` runs new prompts (left-padded among themselves) and returns a batch.
- `merge` joins two batches: the shorter cache is padded on the left, then rows are
  concatenated. This is how new requests enter between decode steps.
- `keep` drops finished rows, then `trim` drops leading columns that every remaining
  row has as padding, so the cache does not grow with sequences long gone.

Positions are per row (the count of real tokens before each one), passed to the model
explicitly; causal masking is over columns, which is the same order.

This works for any transformers model whose cache is a `DynamicCache` of full-attention
layers (tensors shaped [batch, heads, seq, dim]), our `mistral4` included (it caches
the compressed MLA latents). Sliding-window and linear-attention caches are refused.

With LoRA adapters loaded (lora.py), `model` is PEFT's wrapper and `adapter_names`
names each row's adapter, so requests for the base and for several adapters share
every forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from forgeml.core.errors import ForgeError
from forgeml.serve.engine.sequence import Sequence


@dataclass
class DecodeBatch:
    sequences: list[Sequence]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [rows, columns] long, 1 = real token
    positions: torch.Tensor  # [rows] position of the next token of each row
    last_tokens: torch.Tensor  # [rows] the token each row feeds next

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def columns(self) -> int:
        return self.attention_mask.shape[1]

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long)
        self.sequences = [self.sequences[row] for row in rows]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.attention_mask = self.attention_mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        self.trim()

    def trim(self) -> None:
        """Drop leading columns that are padding in every row."""
        used = self.attention_mask.any(dim=0)
        first = int(used.float().argmax()) if bool(used.any()) else self.columns
        if first > 0:
            self.attention_mask = self.attention_mask[:, first:]
            for layer in _layers(self.cache):
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]

    def merge(self, other: DecodeBatch) -> None:
        """Append `other`'s rows, left-padding whichever cache is shorter."""
        width = max(self.columns, other.columns)
        self._pad_left(width - self.columns)
        other._pad_left(width - other.columns)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self.sequences += other.sequences
        self.attention_mask = torch.cat([self.attention_mask, other.attention_mask])
        self.positions = torch.cat([self.positions, other.positions])
        self.last_tokens = torch.cat([self.last_tokens, other.last_tokens])

    def _pad_left(self, count: int) -> None:
        if count <= 0:
            return
        self.attention_mask = torch.nn.functional.pad(self.attention_mask, (count, 0))
        for layer in _layers(self.cache):
            layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, count, 0))
            layer.values = torch.nn.functional.pad(layer.values, (0, 0, count, 0))

    def step(self, model: torch.nn.Module, adapter_names: list[str] | None = None) -> torch.Tensor:
        """One decode step for every row; returns the next-token logits [rows, vocab]."""
        ones = torch.ones((len(self), 1), dtype=self.attention_mask.dtype)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        mask = self.attention_mask
        if model.config._attn_implementation == "sdpa":
            # One new token per row attends to every real column: the 4D mask is the
            # padding mask itself. Passing it skips transformers' per-step mask build
            # (a third of a step for small models on CPU); outputs are identical.
            mask = mask[:, None, None, :].bool()
        output = model(
            input_ids=self.last_tokens[:, None],
            attention_mask=mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
            **_adapter_kwargs(adapter_names),
        )
        self.positions = self.positions + 1
        return output.logits[:, -1].float()


def prefill(
    model: torch.nn.Module,
    sequences: list[Sequence],
    pad_id: int,
    adapter_names: list[str] | None = None,
) -> tuple[DecodeBatch, torch.Tensor]:
    """Run the prompts of new sequences; return their batch and first-token logits.

    The batch's `last_tokens` are placeholders until the caller samples.
    """
    lengths = [len(sequence.prompt_ids) for sequence in sequences]
    width = max(lengths)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - lengths[row] :] = torch.tensor(sequence.prompt_ids)
        attention_mask[row, width - lengths[row] :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
        **_adapter_kwargs(adapter_names),
    )
    _layers(cache)  # refuse caches we cannot batch before any sequence is admitted
    batch = DecodeBatch(
        sequences=list(sequences),
        cache=cache,
        attention_mask=attention_mask,
        positions=torch.tensor(lengths, dtype=torch.long),
        last_tokens=torch.full((len(sequences),), pad_id, dtype=torch.long),
    )
    return batch, output.logits[:, -1].float()


def _adapter_kwargs(adapter_names: list[str] | None) -> dict[str, list[str]]:
    # A plain transformers model takes no `adapter_names`: pass it only to PEFT's wrapper.
    return {} if adapter_names is None else {"adapter_names": adapter_names}


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = cache.layers
    if not all(type(layer) is DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers})
        raise ForgeError(
            f"the transformers engine cannot batch this model's cache ({', '.join(kinds)})",
            hint="it batches full-attention models; serve this one with the vLLM engine",
        )
    return layers
