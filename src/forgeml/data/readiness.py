"""Is a dataset enough to train on? Verdicts for the three ways forgeml trains a model.

    readiness(tokens=2_000_000_000, chat_examples=0, preference_examples=0, size="small",
              vocab_size=8192)

Each verdict is "ready", "limited" or "insufficient", with the numbers and the rule that
decided it, so a reader can disagree with the rule rather than with a black box:

- Pre-training from scratch: Chinchilla's ~20 tokens per parameter (Hoffmann et al.
  2022), counting every parameter of the mixture-of-experts model (conservative: its
  active parameters alone would ask for fewer). Fewer unique tokens are "limited" down
  to a quarter of that, since repeating data for up to ~4 epochs is almost as good as
  fresh data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models");
  below that the verdict names the largest size the data supports.
- Continued pre-training of an existing base model: >= 100M tokens is enough to move
  its knowledge toward the domain; >= 1M tokens still adapts vocabulary and style.
- Fine-tuning (SFT): chat examples, i.e. conversations with assistant turns. Pilots in
  the style of Mistral's Forge use 10k-50k examples; >= 1k is enough for a LoRA on one
  narrow task.
"""

from __future__ import annotations

from typing import Any

TOKENS_PER_PARAMETER = 20
MAX_USEFUL_EPOCHS = 4
CPT_READY_TOKENS = 100_000_000
CPT_LIMITED_TOKENS = 1_000_000
SFT_READY_EXAMPLES = 10_000
SFT_LIMITED_EXAMPLES = 1_000


def parameters(size: str, vocab_size: int | None = None) -> int:
    """Total parameters of a named size with this vocabulary (the typical one if None)."""
    # Imported here: forgeml.models.sizes loads torch and transformers, which a data
    # command should pay for only when it asks for a readiness verdict.
    from forgeml.models.size_table import typical_vocab
    from forgeml.models.sizes import build_config, count_parameters

    vocab = vocab_size or typical_vocab(size)
    return count_parameters(build_config(size, vocab))[0]


def _pretrain(tokens: int, size: str, vocab_size: int | None) -> dict[str, Any]:
    total = parameters(size, vocab_size)
    needed = TOKENS_PER_PARAMETER * total
    rule = (
        f"{TOKENS_PER_PARAMETER} tokens per parameter (Chinchilla); up to "
        f"{MAX_USEFUL_EPOCHS} epochs of repetition still count"
    )
    numbers = {"size": size, "parameters": total, "tokens_needed": needed, "rule": rule}
    if tokens >= needed:
        verdict = "ready"
        reason = (
            f"{tokens:,} tokens cover the {needed:,} a {size} model ({total:,} parameters) needs."
        )
    elif tokens * MAX_USEFUL_EPOCHS >= needed:
        verdict = "limited"
        epochs = needed / max(tokens, 1)
        reason = (
            f"{tokens:,} tokens are {tokens / needed:.0%} of the {needed:,} a {size} model "
            f"needs; train for ~{epochs:.1f} epochs (repetition up to {MAX_USEFUL_EPOCHS} "
            "epochs costs little)."
        )
    else:
        verdict = "insufficient"
        from forgeml.models.size_table import SIZES

        fitting = [
            name
            for name in SIZES
            if tokens * MAX_USEFUL_EPOCHS >= TOKENS_PER_PARAMETER * parameters(name, vocab_size)
        ]
        advice = (
            f"the largest size it supports is {fitting[-1]!r}"
            if fitting
            else "no size fits; continue pre-training an existing base model instead"
        )
        reason = (
            f"{tokens:,} tokens are {tokens / needed:.1%} of the {needed:,} a {size} model "
            f"needs, even with {MAX_USEFUL_EPOCHS} epochs; {advice}."
        )
        numbers["largest_supported_size"] = fitting[-1] if fitting else None
    return {"verdict": verdict, "reason": reason, **numbers}


def _continued(tokens: int) -> dict[str, Any]:
    rule = (
        f">= {CPT_READY_TOKENS:,} tokens shift a base model's knowledge to the domain; "
        f">= {CPT_LIMITED_TOKENS:,} adapt its vocabulary and style"
    )
    if tokens >= CPT_READY_TOKENS:
        verdict, reason = "ready", f"{tokens:,} tokens are enough to teach a base model the domain."
    elif tokens >= CPT_LIMITED_TOKENS:
        verdict = "limited"
        reason = (
            f"{tokens:,} tokens adapt a base model's vocabulary and style, but knowledge "
            f"gains need ~{CPT_READY_TOKENS:,}; mix in general text to avoid forgetting."
        )
    else:
        verdict = "insufficient"
        reason = (
            f"{tokens:,} tokens are too few to change a base model; use retrieval over "
            "these documents, or fine-tune on examples."
        )
    return {"verdict": verdict, "reason": reason, "rule": rule, "tokens_needed": CPT_READY_TOKENS}


def _fine_tuning(chat: int, preference: int) -> dict[str, Any]:
    rule = (
        f"pilots use {SFT_READY_EXAMPLES:,}-50,000 chat examples; "
        f">= {SFT_LIMITED_EXAMPLES:,} suit a LoRA on one narrow task"
    )
    extra = f" ({preference:,} preference pairs for DPO/ORPO)" if preference else ""
    if chat >= SFT_READY_EXAMPLES:
        verdict, reason = "ready", f"{chat:,} chat examples are a pilot-sized SFT set{extra}."
    elif chat >= SFT_LIMITED_EXAMPLES:
        verdict = "limited"
        reason = (
            f"{chat:,} chat examples suit a LoRA on one narrow task; a pilot needs "
            f"{SFT_READY_EXAMPLES:,}-50,000{extra}."
        )
    elif chat:
        verdict = "insufficient"
        reason = (
            f"{chat:,} chat examples are too few; collect at least {SFT_LIMITED_EXAMPLES:,}{extra}."
        )
    else:
        verdict = "insufficient"
        reason = (
            "no chat examples: fine-tuning needs conversations with assistant turns "
            f"(jsonl lines with 'messages'){extra}."
        )
    return {
        "verdict": verdict,
        "reason": reason,
        "rule": rule,
        "chat_examples": chat,
        "preference_examples": preference,
    }


def readiness(
    tokens: int, chat_examples: int, preference_examples: int, size: str, vocab_size: int | None
) -> dict[str, dict[str, Any]]:
    """Verdicts keyed "pretrain", "continued_pretraining" and "fine_tuning"."""
    return {
        "pretrain": _pretrain(tokens, size, vocab_size),
        "continued_pretraining": _continued(tokens),
        "fine_tuning": _fine_tuning(chat_examples, preference_examples),
    }
