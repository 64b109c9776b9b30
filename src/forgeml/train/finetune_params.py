"""Parameters of the fine-tuning stages (`train.sft`, `train.preference`, `train.rl` and
their `_lora` twins): plain data with defaults, checked before any work starts.

Names follow the fine-tuning APIs the job worker translates (`epochs`, `max_steps`,
`batch_size`, `learning_rate`, `beta`, `warmup_fraction`, `weight_decay`, `seq_len`).
Kept apart from the stages so the command line can show them without importing torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forgeml.core.stages import StageParams
from forgeml.train.params import Precision
from forgeml.train.rewards import ExactMatch, RewardSpec

ReasoningEffort = Literal["auto", "none", "high"]
# Linear layers of every mistral4 block (MLA attention; dense and shared-expert MLPs).
# The routed experts are fused 3D tensors that LoRA's Linear wrapper cannot adapt.
MISTRAL4_LORA_TARGETS = (
    "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
    "gate_proj", "up_proj", "down_proj",
)  # fmt: skip


class FinetuneParams(StageParams):
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
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak AdamW learning rate.")
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
    log_every: int = Field(default=10, ge=1, description="Record metrics every N steps.")
    precision: Precision = Field(
        default="auto", description="auto (fp32 on CPU, bf16 on a GPU that has it), fp32 or bf16."
    )
    collapse_check: bool = Field(
        default=True,
        description="After training, fail the run if most greedy answers to its own "
        "training prompts are one token repeated (a model that learned nothing usable).",
    )
    name: str | None = Field(default=None, description="Name the output.")

    @model_validator(mode="after")
    def _check_batch(self) -> FinetuneParams:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        return self


class SFTParams(FinetuneParams):
    pass


class PreferenceParams(FinetuneParams):
    algorithm: Literal["dpo", "orpo", "kto"] = Field(
        default="dpo",
        description="dpo (with a frozen reference), orpo (no reference) or kto (unpaired).",
    )
    learning_rate: float = Field(default=5e-6, gt=0, description="Peak AdamW learning rate.")
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
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [ExactMatch(type="exact_match")],
        min_length=1,
        description="Reward functions, summed with their weights (see forgeml.train.rewards).",
    )
    learning_rate: float = Field(default=1e-6, gt=0, description="Peak AdamW learning rate.")
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
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak AdamW learning rate.")
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
