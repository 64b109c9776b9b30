"""Train a byte-level BPE tokenizer with the chat template's control tokens reserved.

    tokenizer = train_tokenizer(texts, vocab_size=8192)
    tokenizer.save_pretrained(directory)  # tokenizer.json, tokenizer_config.json,
                                          # chat_template.jinja; AutoTokenizer reloads it

Choices, and why:

- Byte-level BPE (GPT-2's byte alphabet): any input is encodable, no `<unk>` ever
  appears, and every tool in the ecosystem (transformers, vLLM, llama.cpp) reads it.
- Pre-tokenizer = `Digits(individual_digits=True)` then GPT-2's `ByteLevel` regex.
  Single digits make numbers (order ids, dates, amounts) tokenise the same wherever
  they appear and let arithmetic see place values. This is exactly StarCoder's and
  SmolLM's pre-tokenizer, which llama.cpp implements (`\\p{N}` then the GPT-2 regex),
  so the GGUF converter can be told `tokenizer.ggml.pre = LLAMA_CPP_PRE_TOKENIZER`
  for our (never pre-registered) hash; plain "gpt2" would merge digit runs and
  tokenise numbers differently from training. Punctuation is left to the GPT-2
  regex (runs of symbols, optionally with one leading space): isolating every
  symbol would match no llama.cpp pre-tokenizer. A word still differs with and
  without its leading space (`ĠORD` in text, `ORD` after a JSON quote); that is
  byte-level BPE's nature.
- Special tokens (`chat_template.SPECIAL_TOKENS`) take ids 0.. in a fixed order
  (`<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3, then the control tokens), matching the ids
  `sizes.build_config` writes into the model config. They are single ids and never
  split. Nothing is added automatically when encoding: the chat template writes `<s>`
  and `</s>` itself, and pre-training adds them explicitly. Encode raw documents with
  `split_special_tokens=True`, so a literal `</s>` or `[INST]` in a document stays text.
- Deterministic: the same texts and settings give the same tokenizer.json bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from forgeml.core.errors import InputError
from forgeml.models import chat_template
from forgeml.models.size_table import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# llama.cpp's pre-tokenizer with the same splitting rules (its "smollm"/"starcoder"/
# "refact" types all use `\p{N}` then the GPT-2 regex).
LLAMA_CPP_PRE_TOKENIZER = "smollm"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """Learn a byte-level BPE vocabulary of at most `vocab_size` ids from `texts`.

    The vocabulary can come out smaller: merges stop when no pair occurs
    `min_frequency` times. Size the model with `len(tokenizer)`.
    `model_max_length` (the model's context) is recorded for truncation warnings.
    """
    reserved = len(chat_template.SPECIAL_TOKENS) + 256  # + the byte alphabet
    if vocab_size < reserved:
        raise InputError(
            f"vocab_size must be at least {reserved} (special tokens + 256 bytes), got {vocab_size}",
            field="vocab_size",
        )
    if min_frequency < 1:
        raise InputError(
            f"min_frequency must be at least 1, got {min_frequency}", field="min_frequency"
        )

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = _pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=chat_template.SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    characters = 0

    def counted() -> Iterable[str]:
        nonlocal characters
        for text in texts:
            characters += len(text)
            yield text

    backend.train_from_iterator(counted(), trainer=trainer)
    if characters == 0:
        raise InputError("no text to learn a vocabulary from", field="texts")

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=chat_template.UNK,
        bos_token=chat_template.BOS,
        eos_token=chat_template.EOS,
        pad_token=chat_template.PAD,
        additional_special_tokens=chat_template.CONTROL_TOKENS,
        clean_up_tokenization_spaces=False,
        **({"model_max_length": model_max_length} if model_max_length else {}),
    )
    tokenizer.chat_template = chat_template.CHAT_TEMPLATE
    # The model config hard-codes these ids (sizes.build_config); keep them in step.
    assert (
        tokenizer.unk_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ) == (
        UNK_ID,
        BOS_ID,
        EOS_ID,
        PAD_ID,
    )
    return tokenizer
