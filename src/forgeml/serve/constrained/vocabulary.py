"""What constrained decoding needs to know about one tokenizer, computed once per model.

- the llguidance view of the tokenizer (it walks the byte-level vocabulary as a trie
  to compute, per step, which tokens keep the output a valid prefix of the grammar);
- the chat template's control-token ids and which ids are plain text;
- "closing tiers": tokens that end JSON soonest, one list for inside a string (a token
  that starts with `"`, best `"` followed only by `]`/`}`) and one for outside (`}`/`]`,
  then separators, then `"` to open a key a schema requires). When a constrained
  completion is about to run out of tokens, the guide prefers them, so even a model
  that would ramble (an untrained one, in tests) closes its JSON in time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from copy import copy

import llguidance
import numpy as np

from forgeml.core.errors import ForgeError, InputError
from forgeml.models import chat_template

_BRACKETS = frozenset("]}")
_SEPARATORS = _BRACKETS | frozenset(",: ")
_CACHED_GRAMMARS = 64


class GuideVocabulary:
    def __init__(self, tokenizer) -> None:
        self.size = len(tokenizer)
        self.eos_id = int(tokenizer.eos_token_id)
        self.control: dict[str, int] = {}
        for token in chat_template.SPECIAL_TOKENS:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                self.control[token] = token_id
        self.control[chat_template.EOS] = self.eos_id
        special = set(tokenizer.all_special_ids) | set(self.control.values())
        texts = [tokenizer.decode([i]) for i in range(self.size)]
        self.text = np.array([i not in special for i in range(self.size)], dtype=bool)
        self.texts = texts
        self.lengths = np.array([len(text.encode()) for text in texts], dtype=np.int64)
        eos = self.only(self.eos_id)
        self.string_tiers = [
            eos,
            self._where(texts, lambda t: t[:1] == '"' and set(t[1:]) <= _BRACKETS),
            self._where(texts, lambda t: t[:1] == '"'),
        ]
        self.outside_tiers = [
            eos,
            self._where(texts, lambda t: bool(t) and set(t) <= _BRACKETS),
            self._where(texts, lambda t: bool(t) and set(t) <= _SEPARATORS),
            self._where(texts, lambda t: t.strip() == '"'),
        ]
        self._ll_tokenizer = _llguidance_tokenizer(tokenizer)
        self._grammars: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def has(self, *tokens: str) -> bool:
        return all(token in self.control for token in tokens)

    def id(self, token: str) -> int:
        return self.control[token]

    def only(self, *token_ids: int) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[list(token_ids)] = True
        return mask

    def _where(self, texts: list[str], keep) -> np.ndarray:
        return np.array([keep(text) for text in texts], dtype=bool) & self.text

    def matcher(self, grammar: str, field: str) -> llguidance.LLMatcher:
        """A fresh matcher for `grammar`; compiled grammars are cached and copied."""
        with self._lock:
            pristine = self._grammars.get(grammar)
            if pristine is not None:
                self._grammars.move_to_end(grammar)
                return pristine.deep_copy()
        pristine = llguidance.LLMatcher(self._ll_tokenizer, grammar, log_level=0)
        if pristine.is_error():
            raise InputError(
                f"cannot constrain output to this schema: {pristine.get_error()}", field=field
            )
        with self._lock:
            self._grammars[grammar] = pristine
            while len(self._grammars) > _CACHED_GRAMMARS:
                self._grammars.popitem(last=False)
        return pristine.deep_copy()

    def mask(self, matcher: llguidance.LLMatcher) -> np.ndarray:
        """The tokens `matcher` allows next, as a bool mask over the vocabulary."""
        if matcher.is_error():
            raise ForgeError(f"constrained decoding failed: {matcher.get_error()}")
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.zeros(self.size, dtype=bool)
        unpacked = np.unpackbits(bits, bitorder="little")[: self.size]
        allowed[: len(unpacked)] = unpacked
        return allowed


def _llguidance_tokenizer(tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of the tokenizer, from its Rust backend's JSON (what
    `llguidance.hf.from_tokenizer` does, without importing transformers)."""
    backend = copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    return llguidance.LLTokenizer(backend.to_str(), eos_token=int(tokenizer.eos_token_id))
