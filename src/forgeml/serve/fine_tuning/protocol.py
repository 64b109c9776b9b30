"""/v1/fine_tuning/jobs: OpenAI's and Mistral's bodies and job objects, field by field.

One request model takes either body: OpenAI's (`training_file`, `method`) or Mistral's
(`training_files`, `auto_start`). Responses are two families, because the two job
objects disagree on field types (statuses, `hyperparameters`, `training_files`); the
router picks one per request (see serving.py). Unknown request fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Hyperparameters = dict[str, Any]  # API names; values may be "auto"

# --- request -----------------------------------------------------------------------------


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: Hyperparameters = Field(default_factory=dict)
    grader: dict[str, Any] | None = None  # reinforcement only


class Method(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodConfig | None = None
    dpo: MethodConfig | None = None
    reinforcement: MethodConfig | None = None


class TrainingFile(BaseModel):
    file_id: str
    weight: float = Field(1.0, gt=0)


class CreateJobRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    suffix: str | None = Field(None, max_length=64)
    hyperparameters: Hyperparameters | None = None  # OpenAI (legacy) and Mistral
    integrations: list[dict[str, Any]] | None = Field(None, max_length=4)  # jobs/integrations.py
    # OpenAI
    training_file: str | None = None
    validation_file: str | None = None
    method: Method | None = None
    seed: int | None = Field(None, ge=0)
    metadata: dict[str, str] | None = None
    # Mistral
    training_files: list[TrainingFile] | None = None
    validation_files: list[str] | None = None
    auto_start: bool | None = None
    job_type: Literal["completion", "classifier"] | None = None


# --- OpenAI responses --------------------------------------------------------------------


class OpenAIJobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class OpenAIJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: OpenAIJobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str = "forgeml"
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal[
        "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
    ]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]


class OpenAIJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIJob]
    has_more: bool


class OpenAIEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class OpenAIEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class OpenAICheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class OpenAICheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAICheckpoint]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


# --- Mistral responses -------------------------------------------------------------------

MistralStatus = Literal[
    "QUEUED",
    "STARTED",
    "VALIDATING",
    "VALIDATED",
    "RUNNING",
    "FAILED_VALIDATION",
    "FAILED",
    "SUCCESS",
    "CANCELLED",
    "CANCELLATION_REQUESTED",
]


class MistralHyperparameters(BaseModel):
    training_steps: int | None = None
    learning_rate: float | None = None  # None: chosen from the model's size, not known yet
    weight_decay: float | None = None
    warmup_fraction: float | None = None
    epochs: float | None = None
    seq_len: int | None = None
    fim_ratio: float | None = None


class MistralEvent(BaseModel):
    name: str
    created_at: int
    data: dict[str, Any] | None = None


class MistralCheckpoint(BaseModel):
    metrics: CheckpointMetrics
    step_number: int
    created_at: int


class MistralJob(BaseModel):
    id: str
    object: Literal["job"] = "job"
    job_type: Literal["completion", "classifier"] = "completion"
    auto_start: bool
    model: str
    status: MistralStatus
    created_at: int
    modified_at: int
    training_files: list[str]
    validation_files: list[str] | None = None
    hyperparameters: MistralHyperparameters
    fine_tuned_model: str | None = None
    suffix: str | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    trained_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    repositories: list[dict[str, Any]] = Field(default_factory=list)
    events: list[MistralEvent] | None = None  # the job's status changes (details only)
    checkpoints: list[MistralCheckpoint] | None = None


class MistralJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MistralJob]
    total: int
