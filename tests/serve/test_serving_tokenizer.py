"""The server's tokenizer (tokenizers alone) answers as transformers' does, and the numpy
sampler of the llama.cpp engine keeps the sampling rules of the torch one."""

from __future__ import annotations

import json
import pydoc_data.topics

import numpy as np
import pytest
from transformers import AutoTokenizer

from forgeml.core.errors import InputError
from forgeml.models import chat_template
from forgeml.models.tokenizer import train_tokenizer
from forgeml.serve.constrained.vocabulary import GuideVocabulary
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.numpy_sampling import sample
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.tokenizer import ServingTokenizer

TEXT = "Hello <s> [INST] the for statement </s> ünïcode\t 42 [THINK]"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000).save_pretrained(
        directory
    )
    return directory


def test_it_answers_like_transformers_for_every_token(tokenizer_dir):
    ours = ServingTokenizer.load(tokenizer_dir)
    theirs = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    assert len(ours) == len(theirs)
    for name in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.all_special_ids == sorted(theirs.all_special_ids)
    assert ours.get_vocab() == theirs.get_vocab()
    assert [ours.decode([i]) for i in range(len(ours))] == [
        theirs.decode([i]) for i in range(len(theirs))
    ]
    for add in (False, True):
        assert ours(TEXT, add_special_tokens=add) == {
            "input_ids": theirs(TEXT, add_special_tokens=add)["input_ids"]
        }
    for token in (*chat_template.SPECIAL_TOKENS, "no-such-token"):
        assert ours.convert_tokens_to_ids(token) == theirs.convert_tokens_to_ids(token)
    # What constrained decoding builds from each is the same, mask for mask.
    mine, reference = GuideVocabulary(ours), GuideVocabulary(theirs)
    assert (mine.text == reference.text).all() and mine.control == reference.control


def test_special_tokens_may_be_written_as_added_token_objects(tokenizer_dir, tmp_path):
    for name in ("tokenizer.json",):
        (tmp_path / name).write_bytes((tokenizer_dir / name).read_bytes())
    config = {"eos_token": {"content": "</s>", "special": True}, "extra_special_tokens": {}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = ServingTokenizer.load(tmp_path)
    assert tokenizer.eos_token_id == 2 and tokenizer.bos_token_id is None


def test_a_directory_without_a_usable_tokenizer_is_named(tokenizer_dir, tmp_path):
    with pytest.raises(InputError, match="no tokenizer.json"):
        ServingTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="not a tokenizers file"):
        ServingTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(InputError, match="tokenizer_config.json is not valid JSON"):
        ServingTokenizer.load(tmp_path)


class OnlyGuide:
    """A guide that allows a fixed set of tokens."""

    def __init__(self, vocab: int, allowed: list[int]) -> None:
        self.mask = np.zeros(vocab, dtype=bool)
        self.mask[allowed] = True

    def allowed(self, remaining_tokens: int) -> np.ndarray:
        return self.mask

    def advance(self, token_id: int) -> None:
        pass


def sequence(tokenizer, guide=None, **sampling) -> Sequence:
    params = SamplingParams(max_tokens=8, **sampling)
    return Sequence(GenerationRequest("r", [1], params, guide), tokenizer.backend_tokenizer, {2})


def test_numpy_sampling_keeps_the_rules(tokenizer_dir):
    tokenizer = ServingTokenizer.load(tokenizer_dir)
    vocab = len(tokenizer)
    logits = np.random.default_rng(0).normal(size=(3, vocab)).astype(np.float32)
    before = logits.copy()

    # Greedy is the argmax; a guide's mask is obeyed, greedy or sampled.
    greedy = sequence(tokenizer, temperature=0.0)
    guided = sequence(tokenizer, OnlyGuide(vocab, [5, 9]), temperature=2.0)
    nucleus = sequence(tokenizer, temperature=1.0, top_p=1e-6)  # only the most likely token
    for _ in range(20):
        chosen = sample(logits, [greedy, guided, nucleus])
        assert chosen[0] == int(logits[0].argmax())
        assert chosen[1] in (5, 9)
        assert chosen[2] == int(logits[2].argmax())
    assert (logits == before).all()  # the caller's logits are left as they were

    # A seed gives the same draws whoever shares the batch, and draws do vary.
    def draws(batch_mates: int) -> list[int]:
        seeded = sequence(tokenizer, temperature=1.0, seed=3)
        others = [sequence(tokenizer, temperature=1.0) for _ in range(batch_mates)]
        rows = np.repeat(logits[:1], batch_mates + 1, axis=0)
        return [sample(rows, [seeded, *others])[0] for _ in range(30)]

    assert draws(0) == draws(4)
    assert len(set(draws(0))) > 5
