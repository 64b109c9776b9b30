"""Stop fine-tuning that went wrong, and say what happened, instead of shipping it.

- Divergence: a loss that is not a number, or that climbs well above where it started,
  stops training at once (DivergenceGuard, a trainer callback).
- Collapse: after training, the model answers a few of its own training prompts
  greedily; when most answers are one token repeated ("the the the the"), the run
  fails with samples and a hint rather than registering a model that cannot answer.
  A tiny model fine-tuned with too low a learning rate or too few steps does this.

Both are errors the user acts on (exit code 2), with the numbers that tripped them.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from transformers import TrainerCallback

from forgeml.core.errors import ForgeError

WARMUP_LOGS = 5  # losses averaged as the starting level
DIVERGED_FACTOR = 3.0  # a loss this many times the starting level has diverged
COLLAPSE_PROMPTS = 8
COLLAPSE_NEW_TOKENS = 24
REPEATED_SHARE = 0.75  # one token is this share of an answer: the answer is degenerate
COLLAPSED_SHARE = 0.75  # this share of the answers degenerate: the model collapsed


class TrainingFailed(ForgeError):
    """Training ran but produced a model that must not be used."""


class DivergenceGuard(TrainerCallback):
    def __init__(self, watch_rise: bool = True) -> None:
        self.watch_rise = watch_rise
        self.start: list[float] = []
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if not isinstance(loss, int | float):
            return
        if not math.isfinite(loss):
            self.reason = f"the loss became {loss} at step {state.global_step}"
        elif not self.watch_rise:
            return
        elif len(self.start) < WARMUP_LOGS:
            self.start.append(float(loss))
            return
        else:
            level = sum(self.start) / len(self.start)
            if loss > DIVERGED_FACTOR * level and loss > level + 1.0:
                self.reason = (
                    f"the loss rose to {loss:.3f} at step {state.global_step}, from "
                    f"{level:.3f} over the first {WARMUP_LOGS} steps"
                )
        if self.reason is not None:
            control.should_training_stop = True

    def check(self, learning_rate: float) -> None:
        if self.reason is not None:
            raise TrainingFailed(
                f"training diverged: {self.reason}",
                hint=f"lower the learning rate (it was {learning_rate:g}), or raise "
                "warmup_fraction",
            )


def degenerate(ids: list[int]) -> bool:
    """One token makes up most of an answer of some length."""
    if len(ids) < 8:
        return False
    return Counter(ids).most_common(1)[0][1] >= REPEATED_SHARE * len(ids)


def check_not_collapsed(
    model: Any,
    tokenizer: Any,
    prompts: list[tuple[list[dict[str, Any]], str]],
    learning_rate: float,
) -> dict[str, Any]:
    """Greedy answers to a few (prompt, trained answer) pairs; raises TrainingFailed when
    most are degenerate where the trained answer is not (data that repeats a token may
    teach it). Returns what was checked, for the training record."""
    from forgeml.eval.local import LocalChatModel
    from forgeml.eval.suite import ChatRequest

    if not prompts:
        return {"checked": 0}
    varied = [
        (messages, answer)
        for messages, answer in prompts
        if not degenerate(tokenizer(answer, add_special_tokens=False)["input_ids"])
    ]
    sample = varied[:: max(1, len(varied) // COLLAPSE_PROMPTS)][:COLLAPSE_PROMPTS]
    if not sample:
        return {"checked": 0}
    was_training = model.training
    model.eval()
    try:
        chat = LocalChatModel(model, tokenizer, COLLAPSE_NEW_TOKENS, batch_size=len(sample))
        answers = chat.complete([ChatRequest(messages) for messages, _ in sample])
    finally:
        model.train(was_training)
    encoded = [tokenizer(a.raw, add_special_tokens=False)["input_ids"] for a in answers]
    bad = [a.raw for a, ids in zip(answers, encoded, strict=True) if degenerate(ids)]
    checked = {"checked": len(answers), "degenerate": len(bad)}
    if len(bad) >= COLLAPSED_SHARE * len(answers):
        shown = "; ".join(repr(text[:60]) for text in bad[:3])
        raise TrainingFailed(
            f"the fine-tuned model collapsed: {len(bad)} of {len(answers)} answers to its "
            f"own training prompts are one token repeated ({shown})",
            hint=f"it has not learned the task: train longer (more steps or epochs) or with "
            f"a higher learning rate (it was {learning_rate:g}; a tiny model needs about "
            "1e-3); to keep such a model anyway, set collapse_check: false",
        )
    return checked
