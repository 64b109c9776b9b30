"""The running batch of a transformers engine: sequences, their KV cache and masks.

Layout: every row of the cache is one sequence, every column one time slot shared by
all rows. A sequence that joined later, or has a shorter prompt, is *left-padded*: its
first columns are padding, masked out by `attention_mask`. So one forward pass of
shape [rows, 1] advances every sequence by a token, whatever its length.

- `prefill` runs new prompts (left-padded among themselves) and returns a batch.
- `step` decodes one token per row; for `mistral4` it can prefill new prompts in the
  same pass (`joining`, see mla_step.py) and return them as a batch of their own.
- `merge` joins two batches: the shorter cache is padded on the left, then rows are
  concatenated. This is how new requests enter between decode steps.
- `keep` drops finished rows, then `trim` drops leading columns that every remaining
  row has as padding, so the cache does not grow with sequences long gone.

Positions are per row (the count of real tokens before each one), passed to the model
explicitly; causal masking is over columns, which is the same order.

The cache is a `DynamicCache` whose layer tensors are views into larger *storage* with
free columns after the used ones: a decode step writes its column in place instead of
concatenating (copying) the whole cache, and `trim` only moves a start index. A
transformers forward (a step mla_step.py does not cover) still grows the cache its own
way; its tensors then become the storage.

This works for any transformers model whose cache is a `DynamicCache` of full-attention
layers (tensors shaped [batch, heads, seq, dim]), our `mistral4` included (it caches
the compressed MLA latents). Sliding-window and linear-attention caches are refused.
`mistral4` batches whose rows all use the base weights go through mla_step.py, the
rest through the model's own forward; both read and write the same cache.

With LoRA adapters loaded (lora.py), `model` is PEFT's wrapper and `adapter_names`
names each row's adapter, so requests for the base and for several adapters share
every forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from forgeml.core.errors import ForgeError
from forgeml.serve.engine import mla_step, prompt_score
from forgeml.serve.engine.lora import BASE_ROW
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.engine.vision import ImageEncoder

# Free columns allocated past the used ones when storage is (re)built: one copy of the
# cache every ROOM decode steps rather than one per step.
ROOM = 64


@dataclass
class DecodeBatch:
    sequences: list[Sequence]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [rows, columns] long, 1 = real token
    positions: torch.Tensor  # [rows] position of the next token of each row
    last_tokens: torch.Tensor  # [rows] the token each row feeds next
    # Per layer, the (keys, values) tensors [rows, heads, capacity, dim] whose columns
    # [start, start + columns) the cache's layers show; see the module docstring.
    storage: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)
    start: int = 0

    def __post_init__(self) -> None:
        if not self.storage:
            self._adopt()

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def columns(self) -> int:
        return self.attention_mask.shape[1]

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long)
        self.sequences = [self.sequences[row] for row in rows]
        self.storage = [
            (keys.index_select(0, index), values.index_select(0, index))
            for keys, values in self.storage
        ]
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
            self.start += first
        self._publish()

    def merge(self, other: DecodeBatch) -> None:
        """Append `other`'s rows, left-padding whichever cache is shorter."""
        width = max(self.columns, other.columns)
        rows = len(self) + len(other)
        storage = []
        for mine, theirs in zip(self._used(), other._used(), strict=True):
            merged = []
            for own, their in zip(mine, theirs, strict=True):
                # Zeros, not garbage, in the padding: masked scores still multiply them.
                both = own.new_zeros(rows, own.shape[1], width + ROOM, own.shape[3])
                both[: len(self), :, width - self.columns : width] = own
                both[len(self) :, :, width - other.columns : width] = their
                merged.append(both)
            storage.append((merged[0], merged[1]))
        self.storage, self.start = storage, 0
        self.sequences += other.sequences
        self.attention_mask = torch.cat(
            [_pad_left(self.attention_mask, width), _pad_left(other.attention_mask, width)]
        )
        self.positions = torch.cat([self.positions, other.positions])
        self.last_tokens = torch.cat([self.last_tokens, other.last_tokens])
        self._publish()

    def can_join(
        self, model: torch.nn.Module, adapter_names: list[str] | None, joining: list[Sequence]
    ) -> bool:
        """Whether `step` can prefill `joining` in its own pass (`adapter_names`: the
        batch's rows', then the joining ones')."""
        lean = _lean_model(model, adapter_names)
        width = max(len(sequence.prompt_ids) for sequence in joining)
        return lean is not None and mla_step.fits(lean, len(joining), width)

    def step(
        self,
        model: torch.nn.Module,
        adapter_names: list[str] | None = None,
        joining: list[Sequence] | None = None,
        pad_id: int = 0,
        images: ImageEncoder | None = None,
    ) -> tuple[torch.Tensor, DecodeBatch | None]:
        """One decode step for every row, prefilling `joining` in the same pass (where
        `can_join` allows). Returns the next-token logits [rows + joining, vocab] and
        the joining sequences' batch, for the caller to merge once it has sampled."""
        cached = self.columns
        ones = torch.ones((len(self), 1), dtype=self.attention_mask.dtype)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        lean = _lean_model(model, adapter_names)
        joined = None
        if lean is None:
            if joining:
                raise ValueError("only mla_step prefills alongside a step: ask can_join first")
            logits = self._generic_step(model, adapter_names)
        else:
            self._make_room(cached)
            decoding = mla_step.Decoding(
                self.last_tokens, self.positions, self.attention_mask, self._used(cached + 1)
            )
            prompts = _prompts(joining, pad_id, images) if joining else None
            logits = mla_step.forward(lean, decoding, prompts)
            self._publish()
            if prompts is not None:
                joined = _prompt_batch(lean, joining, prompts, pad_id)
        self.positions = self.positions + 1
        return logits, joined

    def _generic_step(
        self, model: torch.nn.Module, adapter_names: list[str] | None
    ) -> torch.Tensor:
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
        self._adopt()  # the forward concatenated new tensors
        return output.logits[:, -1].float()

    def _make_room(self, cached: int) -> None:
        """Ensure storage has a free column after the `cached` used ones."""
        capacity = self.storage[0][0].shape[2]
        if self.start + cached < capacity:
            return
        storage = []
        for tensors in self._used(cached):
            grown = []
            for used in tensors:
                room = used.new_empty(used.shape[0], used.shape[1], cached + ROOM, used.shape[3])
                room[:, :, :cached] = used
                grown.append(room)
            storage.append((grown[0], grown[1]))
        self.storage, self.start = storage, 0

    def _used(self, columns: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        end = self.start + (self.columns if columns is None else columns)
        return [
            (keys[:, :, self.start : end], values[:, :, self.start : end])
            for keys, values in self.storage
        ]

    def _adopt(self) -> None:
        """Take the cache's own tensors as storage (a transformers forward replaced them)."""
        self.storage = [(layer.keys, layer.values) for layer in _layers(self.cache)]
        self.start = 0

    def _publish(self) -> None:
        """Point the cache's layers at the used columns of storage."""
        for layer, (keys, values) in zip(_layers(self.cache), self._used(), strict=True):
            layer.keys, layer.values = keys, values


def prefill(
    model: torch.nn.Module,
    sequences: list[Sequence],
    pad_id: int,
    adapter_names: list[str] | None = None,
    images: ImageEncoder | None = None,
) -> tuple[DecodeBatch, torch.Tensor]:
    """Run the prompts of new sequences; return their batch and first-token logits.

    The batch's `last_tokens` are placeholders until the caller samples. `images`: a
    vision-language model's encoder, for prompts with images.
    """
    prompts = _prompts(sequences, pad_id, images)
    lean = _lean_model(model, adapter_names)
    if lean is not None and mla_step.fits(lean, *prompts.input_ids.shape):
        logits = mla_step.forward(lean, None, prompts)
        return _prompt_batch(lean, sequences, prompts, pad_id), logits
    # Logits of the last column (the first token) and of the columns prompt_score.py
    # scores, not of every column: the output layer is the widest product of a prefill.
    flat, targets, counts = prompt_score.prompt_targets(prompts.input_ids, prompts.attention_mask)
    width = prompts.input_ids.shape[1]
    keep = sorted({int(index) % width for index in flat} | {width - 1})
    cache = DynamicCache(config=model.config)
    tokens = (
        {"input_ids": prompts.input_ids}
        if prompts.embeds is None
        else {"inputs_embeds": prompts.embeds}
    )
    output = model(
        **tokens,
        attention_mask=prompts.attention_mask,
        position_ids=prompts.positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=torch.tensor(keep, dtype=torch.long),
        **_adapter_kwargs(adapter_names),
    )
    if len(flat):
        at = {column: index for index, column in enumerate(keep)}
        rows, columns = flat // width, [at[int(index) % width] for index in flat]
        scored = output.logits[rows, torch.tensor(columns, dtype=torch.long)]
        prompts.logprobs = prompt_score.row_logprobs(scored, targets, counts)
    _note_logprobs(sequences, prompts)
    return _new_batch(sequences, cache, prompts, pad_id), output.logits[:, -1].float()


def _note_logprobs(sequences: list[Sequence], prompts: mla_step.Prompts) -> None:
    for sequence, logprob in zip(sequences, prompts.logprobs or [], strict=False):
        sequence.prompt_logprob = logprob


def _prompts(
    sequences: list[Sequence], pad_id: int, images: ImageEncoder | None = None
) -> mla_step.Prompts:
    """The sequences' prompts, left-padded to the longest (with their images' features
    in the embeddings, where they have images)."""
    lengths = [len(sequence.prompt_ids) for sequence in sequences]
    width = max(lengths)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - lengths[row] :] = torch.tensor(sequence.prompt_ids)
        attention_mask[row, width - lengths[row] :] = 1
    embeds = images.prompt_embeddings(input_ids, sequences) if images is not None else None
    return mla_step.Prompts(input_ids, attention_mask, embeds=embeds)


def _prompt_batch(
    model: torch.nn.Module, sequences: list[Sequence], prompts: mla_step.Prompts, pad_id: int
) -> DecodeBatch:
    """The batch of prompts mla_step.forward just ran, over the cache it returned."""
    _note_logprobs(sequences, prompts)
    cache = DynamicCache(config=model.config)
    for layer, (keys, values) in zip(_layers(cache), prompts.cache, strict=True):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return _new_batch(sequences, cache, prompts, pad_id)


def _new_batch(
    sequences: list[Sequence], cache: DynamicCache, prompts: mla_step.Prompts, pad_id: int
) -> DecodeBatch:
    return DecodeBatch(  # refuses caches we cannot batch before any sequence is admitted
        sequences=list(sequences),
        cache=cache,
        attention_mask=prompts.attention_mask,
        positions=prompts.attention_mask.sum(dim=1),
        last_tokens=torch.full((len(sequences),), pad_id, dtype=torch.long),
    )


def _lean_model(model: torch.nn.Module, adapter_names: list[str] | None) -> torch.nn.Module | None:
    """The plain model under `model` if mla_step.py can run it: a `mistral4` whose rows
    all use the base weights (mla_step reads those under PEFT's LoRA layers)."""
    if adapter_names is not None and any(name != BASE_ROW for name in adapter_names):
        return None
    unwrap = getattr(model, "get_base_model", None)  # PEFT's wrapper
    base = unwrap() if unwrap is not None else model
    return base if mla_step.supports(base) else None


def _pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


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
