"""Parameters of the fine-tuning stages (`train.sft`, `train.preference`, `train.rl` and
their `_lora` twins): plain data with defaults, checked before any work starts.

Names follow the fine-tuning APIs the job worker translates (`epochs`, `max_steps`,
`batch_size`, `learning_rate`, `beta`, `warmup_fraction`, `weight_decay`, `seq_len`).
Kept apart from the stages so the command line can show them without importing torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from forgeml.core.stages import StageParams
from forgeml.train.integrations import Integration, check_integrations
from forgeml.train.params import Precision
from forgeml.train.rewards import ExactMatch, RewardSpec

ReasoningEffort = Literal["auto", "none", "high"]
# Linear layers of every mistral4 block (MLA attention; dense and shared-expert MLPs).
# The routed experts are fused 3D tensors that LoRA's Linear wrapper cannot adapt.
MISTRAL4_LORA_TARGETS = (
    "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
    "gate_proj", "up_proj", "down_proj",
)  # fmt: skip


def auto_learning_rate(parameters: int, family: str, lora: bool) -> float:
    """The peak learning rate when none is given: by model size, for full fine-tuning
    (SFT, classifiers), scaled down for preference and RL stages, up for LoRA.

    Anchored on what trains the quickstart's tiny model well (SFT 1e-3, DPO 5e-6, GRPO
    2e-5: docs/PERFORMANCE.md) and on the rates common for 1-70B models (full SFT 1e-5
    to 2e-5, LoRA ~10x that). SFT at 1e-4 on the tiny model collapses into one repeated
    token (issue #18), which is why a fixed default cannot serve every size.
    """
    if parameters < 20_000_000:
        rate = 1e-3
    elif parameters < 300_000_000:
        rate = 3e-4
    elif parameters < 3_000_000_000:
        rate = 1e-4
    elif parameters < 30_000_000_000:
        rate = 2e-5
    else:
        rate = 1e-5
    rate *= FAMILY_SCALE[family]
    if lora:
        rate = min(rate * 10, 2e-3)
    return float(f"{rate:.3g}")


# OpenAI's default epochs (its fine-tuning data-preparation cookbook): 3 passes, more when
# that would be under 100 examples seen, fewer when over 25,000.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25
MIN_AUTO_BATCH, MAX_AUTO_BATCH = 8, 256


def auto_epochs(examples: int) -> int:
    """Passes over `examples` training examples when the user names neither epochs nor steps."""
    examples = max(1, examples)
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, -(-MIN_TARGET_EXAMPLES // examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def auto_batch_size(examples: int) -> int:
    """About 0.2% of the examples (OpenAI's rule), a power of two from 8 to 256: small data
    keeps the batch that trains the tiny model well, large data gets fewer, larger steps."""
    batch = MIN_AUTO_BATCH
    while batch * 2 <= min(MAX_AUTO_BATCH, examples * 0.002):
        batch *= 2
    return batch


# LoRA by default for a large model on little data (SFTParams.lora unset): see auto_lora.
AUTO_LORA_MIN_PARAMETERS, AUTO_LORA_MAX_EXAMPLES = 1_000_000_000, 10_000


def auto_lora(parameters: int, examples: int) -> bool:
    """Whether SFT trains a LoRA adapter (merged into the output) when the user says
    neither way: for a model of 1B parameters or more on at most 10,000 conversations.

    Small data is where full fine-tuning of a large model overwrites most of what the
    base knew, and LoRA forgets less of it (Biderman et al. 2024, "LoRA Learns Less and
    Forgets Less"); it also needs a fraction of the memory (AdamW on every weight keeps
    ~16 bytes per parameter: 16 GB for 1B, 112 GB for 7B). On more data, full fine-tuning
    learns more, so it stays. Below 1B it stays too: on the quickstart's tiny model LoRA
    neither learned the routing task nor kept the base (docs/PERFORMANCE.md, LoRA).
    """
    return parameters >= AUTO_LORA_MIN_PARAMETERS and examples <= AUTO_LORA_MAX_EXAMPLES


FAMILY_SCALE = {"sft": 1.0, "classify": 1.0, "preference": 1 / 200, "rl": 1 / 50}


class FinetuneParams(StageParams):
    FAMILY: ClassVar[str] = "sft"
    # --- optimisation --------------------------------------------------------------------
    epochs: float = Field(default=1.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps; when set, overrides epochs."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per optimizer step.")
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Examples per forward pass (gradient accumulation makes up the rest); "
        "default: batch_size.",
    )
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Peak AdamW learning rate; unset: chosen from the model's size and the "
        "stage (auto_learning_rate), recorded in the output's training.json.",
    )
    learning_rate_multiplier: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Scales the chosen learning rate when none is given (OpenAI's hyperparameter).",
    )
    warmup_fraction: float = Field(
        default=0.0, ge=0, lt=1, description="Share of the steps spent warming up, linearly."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    # --- data ----------------------------------------------------------------------------
    seq_len: int = Field(
        default=1024, ge=8, description="Tokens per example; longer ones are cut at the end."
    )
    reasoning_effort: ReasoningEffort = Field(
        default="auto",
        description="Model setting rendered into each conversation: auto is high when an "
        "assistant turn has a reasoning trace, else none.",
    )
    # --- LoRA ----------------------------------------------------------------------------
    lora: bool = Field(
        default=False,
        description="Train a LoRA adapter instead of every weight (train.X merges it into a "
        "full model; train.X_lora keeps the adapter alone).",
    )
    lora_rank: int = Field(default=16, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scale numerator (alpha/r).")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on LoRA inputs.")
    lora_target_modules: list[str] | None = Field(
        default=None,
        description="Module names to adapt; default: every attention and MLP linear of "
        "mistral4 (" + ", ".join(MISTRAL4_LORA_TARGETS) + "), all linears otherwise.",
    )
    # --- evaluation, checkpoints, logging ------------------------------------------------
    eval_every: int | None = Field(
        default=None, ge=1, description="Validate every N steps (default: at the end only)."
    )
    checkpoint_every: int = Field(default=50, ge=1, description="Checkpoint every N steps.")
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many validations without a lower validation loss, and "
        "output the best checkpoint's weights (needs a validation dataset and eval_every).",
    )
    log_every: int = Field(default=10, ge=1, description="Record metrics every N steps.")
    precision: Precision = Field(
        default="auto", description="auto (fp32 on CPU, bf16 on a GPU that has it), fp32 or bf16."
    )
    collapse_check: bool = Field(
        default=True,
        description="After training, fail the run if most greedy answers to its own "
        "training prompts are one token repeated (a model that learned nothing usable).",
    )
    integrations: list[Integration] = Field(
        default=[],
        max_length=4,
        description="Experiment trackers that receive the training metrics: "
        "[{type: wandb, project: P}] (offline, under tracking/) or "
        "[{type: mlflow, experiment: E}] (a local SQLite store under tracking/).",
    )
    name: str | None = Field(default=None, description="Name the output.")

    _integrations_installed = field_validator("integrations")(check_integrations)

    @model_validator(mode="after")
    def _check_batch(self) -> FinetuneParams:
        if (
            self.micro_batch_size is not None
            and self.batch_size is not None
            and self.batch_size % self.micro_batch_size
        ):
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        return self

    def resolved(self, parameters: int) -> FinetuneParams:
        """These parameters with the learning rate chosen, for a model of this size."""
        if self.learning_rate is not None:
            return self
        rate = auto_learning_rate(parameters, self.FAMILY, self.lora)
        return self.model_copy(
            update={"learning_rate": float(f"{rate * self.learning_rate_multiplier:.3g}")}
        )

    def sized(self, examples: int, parameters: int) -> FinetuneParams:
        """These parameters with epochs, batch size and LoRA chosen for `examples`
        training examples and a model of `parameters` where they are unset (None:
        SFTParams), by auto_epochs, auto_batch_size and auto_lora. Recorded in the
        output's training.json like every resolved parameter."""
        update: dict[str, Any] = {}
        if self.lora is None:
            update["lora"] = auto_lora(parameters, examples)
        if self.epochs is None:
            update["epochs"] = 1.0 if self.max_steps else float(auto_epochs(examples))
        if self.batch_size is None:
            batch = auto_batch_size(examples)
            micro = self.micro_batch_size or 1
            update["batch_size"] = -(-batch // micro) * micro  # a multiple of the micro batch
        return self.model_copy(update=update) if update else self


class SFTParams(FinetuneParams):
    # Unset (None): chosen from the training data's size when the stage has read it.
    epochs: float | None = Field(
        default=None,
        gt=0,
        description="Passes over the training data; default: from the data's size (OpenAI's "
        "rule: 3; more under 34 examples, up to 25; fewer past 8,333). max_steps overrides.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Examples per optimizer step; default: ~0.2% of the examples, a power "
        "of two from 8 to 256.",
    )
    lora: bool | None = Field(  # type: ignore[assignment]
        default=None,
        description="Train a LoRA adapter instead of every weight (train.sft merges it into "
        "a full model); default: LoRA for a model of 1B parameters or more on at most 10,000 "
        "conversations (auto_lora), every weight otherwise.",
    )
    trainable: Literal["all", "projector", "vision"] = Field(
        default="all",
        description="What a vision-language model trains: all its weights, the projector "
        "alone (first, after add-vision), or the vision tower and projector.",
    )
    replay_fraction: float = Field(
        default=0.0,
        ge=0,
        le=0.9,
        description="Share of the trained tokens that are general text from the `replay` "
        "mixture (the base's pre-training text), so fine-tuning keeps what the base knew.",
    )


class PreferenceParams(FinetuneParams):
    FAMILY: ClassVar[str] = "preference"
    algorithm: Literal["dpo", "orpo", "kto"] = Field(
        default="dpo",
        description="dpo (with a frozen reference), orpo (no reference) or kto (unpaired).",
    )
    beta: float = Field(
        default=0.1, gt=0, description="Strength of the pull towards the reference (ORPO: λ)."
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of pairs held out for reward accuracy when no validation dataset "
        "is given (at least one pair when there are two or more).",
    )


class RLParams(FinetuneParams):
    FAMILY: ClassVar[str] = "rl"
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [ExactMatch(type="exact_match")],
        min_length=1,
        description="Reward functions, summed with their weights (see forgeml.train.rewards).",
    )
    batch_size: int = Field(
        default=8, ge=1, description="Completions per optimizer step (prompts x num_generations)."
    )
    num_generations: int = Field(default=4, ge=2, description="Completions sampled per prompt.")
    max_completion_length: int = Field(default=256, ge=1, description="Tokens per completion.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(
        default=0.0, ge=0, description="KL pull towards the frozen input model (0: none)."
    )

    @model_validator(mode="after")
    def _check_groups(self) -> RLParams:
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                f"({self.num_generations}): each prompt's completions are compared as a group"
            )
        return self


class ClassifyParams(FinetuneParams):
    FAMILY: ClassVar[str] = "classify"
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data.")
    batch_size: int = Field(default=16, ge=1, description="Examples per optimizer step.")
    seq_len: int = Field(
        default=512, ge=8, description="Tokens per input; longer ones are cut at the end."
    )


# The `_lora` stages output an adapter, so for them LoRA is not a choice.
_ADAPTER = "Always true: this stage's output is an adapter."


class SFTLoraParams(SFTParams):
    lora: Literal[True] = Field(default=True, description=_ADAPTER)


class PreferenceLoraParams(PreferenceParams):
    lora: Literal[True] = Field(default=True, description=_ADAPTER)


class RLLoraParams(RLParams):
    lora: Literal[True] = Field(default=True, description=_ADAPTER)
