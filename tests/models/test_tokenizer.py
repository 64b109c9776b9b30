from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from forgeml.core.errors import InputError
from forgeml.models.chat_template import CHAT_TEMPLATE, SPECIAL_TOKENS
from forgeml.models.size_table import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from forgeml.models.tokenizer import train_tokenizer

SAMPLES = [
    "def f(x):\n    return x ** 2  # square\n",
    "Order ORD-12345 shipped on 2024-03-07 for €1,299.50.",
    "Ünïcödé, 日本語, emoji 🙂 and\ttabs  double  spaces\n\n",
    "",
]


def test_round_trips_text(tokenizer, corpus: list[str]) -> None:
    for text in [*SAMPLES, *corpus[:5]]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text


def test_learns_a_vocabulary_that_compresses(tokenizer, corpus: list[str]) -> None:
    assert len(tokenizer) == 2048
    text = corpus[0]
    assert len(text) / len(tokenizer.encode(text, add_special_tokens=False)) > 2.5


def test_special_tokens_are_single_fixed_ids(tokenizer) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.encode(token, add_special_tokens=False) == [expected_id]
    ids = tokenizer.encode("a[INST]b[/THINK]c</s>", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("[INST]") in ids
    assert tokenizer.convert_tokens_to_ids("[/THINK]") in ids
    assert ids[-1] == EOS_ID
    ids = (
        tokenizer.unk_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert ids == (UNK_ID, BOS_ID, EOS_ID, PAD_ID)


def test_nothing_is_added_when_encoding(tokenizer) -> None:
    # The chat template writes <s> itself; an automatic BOS would double it.
    assert tokenizer.encode("hello") == tokenizer.encode("hello", add_special_tokens=False)


def test_digits_are_split_individually(tokenizer) -> None:
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer.encode("12345 in 2024", add_special_tokens=False)
    )
    digits = [token for token in tokens if any(ch.isdigit() for ch in token)]
    assert digits == list("123452024")


def test_save_and_reload(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert (tmp_path / "tokenizer_config.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded.chat_template == CHAT_TEMPLATE
    for text in SAMPLES:
        expected = tokenizer.encode(text, add_special_tokens=False)
        assert reloaded.encode(text, add_special_tokens=False) == expected
    assert reloaded.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == SPECIAL_TOKENS
    # Declared byte-level so llama.cpp's converter can treat it as a GPT-2-style BPE.
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    kinds = [step["type"] for step in saved["pre_tokenizer"]["pretokenizers"]]
    assert kinds == ["Digits", "ByteLevel"]
    assert saved["model"]["type"] == "BPE"


def test_deterministic(corpus: list[str], tmp_path) -> None:
    for name in ("first", "second"):
        train_tokenizer(corpus[:20], vocab_size=600).save_pretrained(tmp_path / name)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "first" / file).read_bytes() == (tmp_path / "second" / file).read_bytes()


def test_min_frequency_can_stop_the_vocabulary_early() -> None:
    tokenizer = train_tokenizer(["abc abd"] * 3, vocab_size=5000, min_frequency=2)
    assert len(tokenizer) < 400


def test_rejects_bad_settings() -> None:
    with pytest.raises(InputError) as error:
        train_tokenizer(["text"], vocab_size=100)
    assert error.value.field == "vocab_size"
    with pytest.raises(InputError) as error:
        train_tokenizer(["text"], vocab_size=1000, min_frequency=0)
    assert error.value.field == "min_frequency"
    with pytest.raises(InputError) as error:
        train_tokenizer(iter(["", ""]), vocab_size=1000)
    assert error.value.field == "texts"
