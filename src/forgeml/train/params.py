"""Parameters of the training stages: plain data with their defaults, checked up front.

Kept apart from the stages so the command line can show them without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from forgeml.core.stages import StageParams
from forgeml.models.size_table import check_size_name

DEFAULT_SIZE = "tiny"
Schedule = Literal["cosine", "wsd", "constant"]
Precision = Literal["auto", "fp32", "bf16"]


class PretrainParams(StageParams):
    # --- model ---------------------------------------------------------------------------
    size: str | None = Field(
        default=None,
        description=f"Named size for a new model (see `forgeml models sizes`); default "
        f"{DEFAULT_SIZE}. A `-vl` size (tiny-vl) saves the trained text model with a fresh "
        "vision tower. Not with a base model.",
    )
    model: dict[str, Any] = Field(
        default_factory=dict,
        description="Mistral4Config fields overriding the size (e.g. num_hidden_layers: 3); "
        "with a base model only experts_implementation / attn_implementation.",
    )
    base_path: Path | None = Field(
        default=None,
        description="Local Hugging Face causal-LM directory to continue pre-training.",
    )
    # --- data ----------------------------------------------------------------------------
    seq_len: int = Field(default=256, ge=8, description="Tokens per packed sequence.")
    # --- optimisation --------------------------------------------------------------------
    batch_size: int = Field(
        default=8, ge=1, description="Sequences per optimizer step, all processes together."
    )
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Sequences per forward pass per process (gradient accumulation makes "
        "up the rest); default: batch_size / processes.",
    )
    max_steps: int = Field(
        default=1000, ge=1, description="Optimizer steps; also the schedule's horizon."
    )
    max_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock budget: stop at the first step boundary past it. The "
        "schedule still plans for max_steps, so step k's weights do not depend on timing.",
    )
    learning_rate: float = Field(default=1e-3, gt=0, description="Peak AdamW learning rate.")
    schedule: Schedule = Field(
        default="cosine", description="cosine, wsd (warmup-stable-decay) or constant."
    )
    warmup_steps: int = Field(default=10, ge=0, description="Linear warmup steps.")
    min_lr_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Final learning rate / peak (cosine, wsd)."
    )
    decay_fraction: float = Field(
        default=0.2, gt=0, le=1, description="Share of max_steps spent decaying (wsd)."
    )
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW decay of matrices.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    # --- evaluation, checkpoints, logging ------------------------------------------------
    eval_every: int = Field(default=100, ge=1, description="Validate every N steps.")
    eval_max_sequences: int | None = Field(
        default=200, ge=1, description="Validation sequences per evaluation; null: all."
    )
    checkpoint_every: int = Field(default=100, ge=1, description="Checkpoint every N steps.")
    log_every: int = Field(default=10, ge=1, description="Record metrics every N steps.")
    precision: Precision = Field(
        default="auto", description="auto (fp32 on CPU, bf16 autocast on GPU), fp32 or bf16."
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="On several processes (torchrun): ddp (each holds the whole model) or "
        "fsdp (FSDP2: parameters, gradients and optimizer state sharded across them).",
    )
    name: str | None = Field(default=None, description="Name the model.")

    @field_validator("size")
    @classmethod
    def _known_size(cls, value: str | None) -> str | None:
        return value if value is None else check_size_name(value)

    @model_validator(mode="after")
    def _check(self) -> PretrainParams:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.base_path is not None and self.size is not None:
            raise ValueError("size applies to a new model; a base model keeps its own shape")
        return self
