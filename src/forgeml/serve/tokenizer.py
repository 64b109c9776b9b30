"""The tokenizer the server uses: `tokenizers` alone, read from a model directory.

Serving needs a small part of a Hugging Face tokenizer (encode, decode, the special ids,
the vocabulary, the Rust backend for streaming decodes and for llguidance), and loading
`transformers.AutoTokenizer` for it costs the server transformers and torch (~400 MB
resident): a GGUF served by llama.cpp would carry both for nothing. `ServingTokenizer`
answers those calls the way `PreTrainedTokenizerFast` does (a test compares them over
every id of the quickstart tokenizer), from `tokenizer.json` and `tokenizer_config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from forgeml.core.errors import InputError

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # tokenizer_config.json; real ones are kilobytes
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


class ServingTokenizer:
    def __init__(self, backend: Tokenizer, config: dict[str, Any]) -> None:
        self.backend_tokenizer = backend
        for name in _SPECIAL_NAMES:
            token = _content(config.get(name))
            setattr(self, name, token)
            setattr(self, f"{name}_id", None if token is None else backend.token_to_id(token))
        extra = config.get("additional_special_tokens") or config.get("extra_special_tokens")
        if isinstance(extra, dict):  # transformers 5 may name them: {"image_token": ...}
            extra = list(extra.values())
        tokens = [_content(getattr(self, name)) for name in _SPECIAL_NAMES]
        tokens += [_content(token) for token in extra or []]
        ids = (backend.token_to_id(token) for token in tokens if token is not None)
        self.all_special_ids = sorted({token_id for token_id in ids if token_id is not None})

    @classmethod
    def load(cls, directory: Path) -> ServingTokenizer:
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise InputError(
                f"{directory} has no tokenizer.json (a fast tokenizer is needed to serve)",
                hint="save the tokenizer with transformers' save_pretrained, or re-export",
            )
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as error:
            raise InputError(f"{path} is not a tokenizers file: {error}") from error
        return cls(backend, _read_config(Path(directory) / "tokenizer_config.json"))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        token_id = self.backend_tokenizer.token_to_id(token)
        return self.unk_token_id if token_id is None else token_id


def _content(token: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{path} is over {MAX_CONFIG_BYTES // 2**20} MiB; is it the right file?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a JSON object")
    return config
