"""A GGUF model in llama.cpp with one KV-cache slot per concurrent sequence.

    slots = SlotContext(Path("model-f16.gguf"), slots=32, slot_context=2048, threads=2)
    slot, keep = slots.claim(prompt_ids, free={0, 1, 2})   # the cache already holds `keep`
    rows = slots.decode([Feed(slot, prompt_ids[keep:], keep, logits=True)])
    rows[0]                                               # next-token logits, numpy

This is llama.cpp's batch API as its own server uses it (`llama-server`'s slots): one
`llama_context` with `n_seq_max` sequences, each slot a sequence id with its own part of
the KV cache (`kv_unified` off: every slot gets `slot_context` tokens, so one long
conversation never evicts the others), and one `llama_decode` per step over the tokens
of every slot at once, prompts and next tokens mixed.

Each slot remembers the tokens its cache holds, so a new request is put in the free slot
whose cache shares the longest prefix with its prompt (the next turn of a chat, or a
shared system prompt), and only the rest is evaluated.

llama-cpp-python's `Llama` class cannot do this: it builds a context for one sequence.
This module uses its thin wrappers over the C API (`_internals`), pinned with the wheel.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from forgeml.core.errors import ForgeError, InputError


@dataclass
class Feed:
    """Tokens of one slot for the next decode, from cache position `start`; or, with
    `embeddings`, an image's embeddings at those positions (`tokens` are the prompt's
    placeholders there, which the slot's cache records)."""

    slot: int
    tokens: list[int]
    start: int
    logits: bool  # the last token's logits are wanted (a token is sampled after it)
    embeddings: np.ndarray | None = None  # [len(tokens), n_embd] float32


class DecodeError(RuntimeError):
    """llama_decode failed; the slots in that batch hold unknown cache contents."""


def load_llama_cpp():
    """llama.cpp's C API (llama-cpp-python's `llama_cpp.llama_cpp` bindings) and its thin
    wrappers (`_internals`), or a ForgeError saying how to get them.

    Without the package's `__init__`, which imports the high-level `Llama` class and with
    it jinja2 and diskcache (~5 MB resident the engine never uses): serving a GGUF loads
    only what it runs (#22). Anything else that asks the package for a name still gets it.
    """
    try:
        package = package_without_init("llama_cpp")
        api = importlib.import_module("llama_cpp.llama_cpp")
        # The first line of its __init__ (`from .llama_cpp import *`): its own modules
        # (_logger) use these names of the package.
        names = getattr(api, "__all__", [n for n in vars(api) if not n.startswith("_")])
        vars(package).update({n: getattr(api, n) for n in names if n not in vars(package)})
        internals = importlib.import_module("llama_cpp._internals")
    except ImportError as error:
        raise ForgeError(
            "the llama.cpp engine needs llama-cpp-python, which is not installed",
            hint="make gguf (builds and installs it; see forgeml/export)",
        ) from error
    return api, internals


def package_without_init(name: str) -> ModuleType:
    """Package `name`, registered so that its submodules import without running its
    `__init__`; the first name the package lacks runs it then (a PEP 562 module
    `__getattr__`), so `import llama_cpp; llama_cpp.Llama` anywhere still works. The
    package as it is once imported."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"no package {name}", name=name)
    package = importlib.util.module_from_spec(spec)

    def run_init(attribute: str):
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = run_init
    sys.modules[name] = package
    return package


def _quiet(llama_cpp) -> None:
    """Send llama.cpp's load and context logs nowhere, as `Llama(verbose=False)` does."""
    from llama_cpp._logger import set_verbose

    set_verbose(False)


class SlotContext:
    def __init__(
        self,
        path: Path,
        *,
        slots: int,
        slot_context: int = 0,
        threads: int = 1,
        batch_tokens: int = 512,
    ) -> None:
        llama_cpp, internals = load_llama_cpp()
        self._api = llama_cpp
        _quiet(llama_cpp)
        if not path.is_file():
            raise InputError(f"no GGUF file at {path}", path=path)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        try:
            self._model = internals.LlamaModel(
                path_model=str(path), params=model_params, verbose=False
            )
        except ValueError as error:  # "Failed to load model from file"
            raise ForgeError(
                f"llama.cpp could not load {path.name}: {error}",
                hint="export the model again with the installed llama-cpp-python",
            ) from error
        self.slots = max(1, min(slots, int(llama_cpp.llama_max_parallel_sequences())))
        trained = int(self._model.n_ctx_train())
        self.slot_context = slot_context or trained
        # A slot is never smaller than one full batch of prompt, or chunking could not fit.
        self.batch_tokens = max(batch_tokens, self.slots)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.slot_context * self.slots
        params.n_seq_max = self.slots
        params.kv_unified = False
        params.n_batch = params.n_ubatch = self.batch_tokens
        params.n_threads = params.n_threads_batch = threads
        # f32: llama.cpp's default f16 cache alone moves the tiny model's logits by up to
        # ~0.3, enough to change greedy tokens. No flash attention, as in `Llama`.
        params.type_k = params.type_v = llama_cpp.GGML_TYPE_F32
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        try:
            self._context = internals.LlamaContext(model=self._model, params=params, verbose=False)
        except ValueError as error:
            self._model.close()
            raise ForgeError(
                f"llama.cpp could not make a cache of {self.slots} x {self.slot_context} "
                f"tokens for {path.name}: {error}",
                hint="serve with fewer slots (max_batch_size) or a smaller llama_cpp_n_ctx",
            ) from error
        self.ctx = self._context.ctx
        self._memory = self._context.memory
        # llama.cpp rounds the cache up; what a slot really holds is what counts.
        self.slot_context = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._model.vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self._model.model))
        self.model_pointer = self._model.model  # for llama.cpp's vision code (mtmd)
        self.eos_token_id = int(self._model.token_eos())
        model = self._model.model
        # Recurrent state cannot be cut back to a prefix: such a slot re-reads every prompt.
        self.reuse_prefix = not (
            llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model)
        )
        self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, 1)
        self._cached: list[list[int]] = [[] for _ in range(self.slots)]

    def tokenize(self, text: str) -> list[int]:
        return self._model.tokenize(text.encode(), add_bos=False, special=True)

    def close(self) -> None:
        """Free llama.cpp's memory; also when the engine is dropped (`__del__`), not when
        it stops, so a stopped engine can start again as it could with `Llama`."""
        if getattr(self, "_batch", None) is not None:
            self._api.llama_batch_free(self._batch)
            self._batch = None
        for part in (getattr(self, "_context", None), getattr(self, "_model", None)):
            if part is not None:  # absent when loading failed part way
                part.close()

    def __del__(self) -> None:
        self.close()

    # --- slots ---------------------------------------------------------------------------

    def claim(
        self, prompt: list[int], free: Iterable[int], reusable: int | None = None
    ) -> tuple[int, int]:
        """The free slot whose cache shares most of `prompt`, and how many tokens it keeps.

        At least the last prompt token is always evaluated again: its logits pick the
        first new token. At most `reusable` tokens are kept: an image's placeholders are
        the same ids for every image, so a cache is reused only up to the first image.

        Ties go to the lowest slot id, so the busy slots stay side by side: llama.cpp
        runs a batch as one pass per run of consecutive sequence ids (see `decode`), and
        8 requests scattered over 32 slots would cost up to 8 passes a step.
        """
        best, best_keep = -1, -1
        limit = len(prompt) - 1 if reusable is None else min(reusable, len(prompt) - 1)
        for slot in sorted(free):
            keep = _common_prefix(self._cached[slot], prompt) if self.reuse_prefix else 0
            keep = min(keep, limit)
            if keep > best_keep:
                best, best_keep = slot, keep
        if best < 0:
            raise RuntimeError("claim() needs at least one free slot")
        self.truncate(best, best_keep)
        return best, best_keep

    def truncate(self, slot: int, keep: int) -> None:
        """Drop the slot's cached positions from `keep` on."""
        if keep <= 0 or not self.reuse_prefix:
            self._api.llama_memory_seq_rm(self._memory, slot, -1, -1)
            self._cached[slot] = []
        else:
            self._api.llama_memory_seq_rm(self._memory, slot, keep, -1)
            del self._cached[slot][keep:]

    # --- decoding ------------------------------------------------------------------------

    def decode(self, feeds: list[Feed]) -> np.ndarray:
        """Evaluate every feed; the logits rows of the token feeds that want them.

        Token feeds go in one llama_decode; each image feed in one of its own before it
        (a llama.cpp batch holds tokens or embeddings, and the logits buffer is the last
        decode's). The rows are in feed order and stay valid until the next call.

        The batch is laid out in slot order. Why: with a KV stream per slot llama.cpp
        cuts a batch into ubatches of consecutive sequence ids *in batch order*
        (`split_equal(..., sequential=true)`), and each ubatch is one more pass over the
        weights. Slots in arrival order (scattered by prefix reuse) cut a 32-sequence
        decode step into many passes; in slot order it is one (docs/PERFORMANCE.md).
        """
        for feed in feeds:
            if feed.embeddings is not None:
                self._decode_embeddings(feed)
        feeds = [feed for feed in feeds if feed.embeddings is None]
        if not feeds:  # a step that only read images
            return np.empty((0, self.n_vocab), dtype=np.float32)
        total = sum(len(feed.tokens) for feed in feeds)
        if total > self.batch_tokens:
            raise RuntimeError(f"{total} tokens in a batch of {self.batch_tokens}")
        in_slot_order = sorted(feeds, key=lambda feed: feed.slot)
        batch = self._batch
        count, outputs = 0, 0
        for feed in in_slot_order:
            if feed.start != len(self._cached[feed.slot]):
                raise RuntimeError(f"slot {feed.slot} feeds from {feed.start}, cache differs")
            last = len(feed.tokens) - 1
            for offset, token in enumerate(feed.tokens):
                batch.token[count] = token
                batch.pos[count] = feed.start + offset
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = feed.slot
                wanted = feed.logits and offset == last
                batch.logits[count] = wanted
                outputs += wanted
                count += 1
        batch.n_tokens = count
        status = self._api.llama_decode(self.ctx, batch)
        if status != 0:
            for feed in feeds:
                self.truncate(feed.slot, 0)
            raise DecodeError(f"llama_decode returned {status}")
        for feed in feeds:
            self._cached[feed.slot].extend(feed.tokens)
        if not outputs:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        pointer = self._api.llama_get_logits(self.ctx)
        rows = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(outputs, self.n_vocab)
        )
        if all(a is b for a, b in zip(in_slot_order, feeds, strict=True)):
            return rows
        # Rows come in slot order; give them back in feed order.
        row_of = {id(feed): row for row, feed in enumerate(f for f in in_slot_order if f.logits)}
        return rows[[row_of[id(feed)] for feed in feeds if feed.logits]]

    def _decode_embeddings(self, feed: Feed) -> None:
        """An image's embeddings into the slot's cache at `feed.start` (no logits: the
        prompt goes on after an image)."""
        embeddings = np.ascontiguousarray(feed.embeddings, dtype=np.float32)
        count = len(feed.tokens)
        if feed.start != len(self._cached[feed.slot]):
            raise RuntimeError(f"slot {feed.slot} feeds from {feed.start}, cache differs")
        if embeddings.shape != (count, self.n_embd) or count > self.batch_tokens:
            raise RuntimeError(f"image embeddings {embeddings.shape} for {count} positions")
        batch = self._api.llama_batch_init(count, self.n_embd, 1)
        try:
            ctypes.memmove(batch.embd, embeddings.ctypes.data, embeddings.nbytes)
            for offset in range(count):
                batch.pos[offset] = feed.start + offset
                batch.n_seq_id[offset] = 1
                batch.seq_id[offset][0] = feed.slot
                batch.logits[offset] = False
            batch.n_tokens = count
            status = self._api.llama_decode(self.ctx, batch)
        finally:
            self._api.llama_batch_free(batch)
        if status != 0:
            self.truncate(feed.slot, 0)
            raise DecodeError(f"llama_decode returned {status} for an image")
        self._cached[feed.slot].extend(feed.tokens)


def _common_prefix(cached: list[int], prompt: list[int]) -> int:
    size = min(len(cached), len(prompt))
    if not size:
        return 0
    differ = np.flatnonzero(np.asarray(cached[:size]) != np.asarray(prompt[:size]))
    return int(differ[0]) if len(differ) else size
