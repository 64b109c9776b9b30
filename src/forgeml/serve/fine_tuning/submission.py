"""A create-job body (OpenAI's or Mistral's) checked and turned into a queued job.

Everything that can be checked before training starts is checked here, so a bad
request is a 400 naming its field, not a job that fails an hour later: the base model
exists, each file was uploaded for fine-tuning and holds the records the method trains
on (chat for supervised, preference pairs for dpo, prompts for reinforcement, labelled
records for Mistral's classifier jobs), and the
hyperparameters are valid for the method's stage.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from forgeml.core.errors import ForgeError, InputError, NotFoundError
from forgeml.core.registry import ForgottenError
from forgeml.core.schema import FineTuningJob
from forgeml.core.workspace import Workspace
from forgeml.jobs import files, integrations, policy, queue
from forgeml.jobs.worker import HYPERPARAMETER_NAMES
from forgeml.serve.errors import ModelNotServed
from forgeml.serve.fine_tuning.protocol import CreateJobRequest
from forgeml.train.finetune_params import (
    ClassifyParams,
    FinetuneParams,
    PreferenceParams,
    RLParams,
    SFTParams,
)

PARAMS_FOR_METHOD: dict[str, type[FinetuneParams]] = {
    "supervised": SFTParams,
    "dpo": PreferenceParams,
    "reinforcement": RLParams,
    "classifier": ClassifyParams,
}
FORMAT_FOR_METHOD = {
    "supervised": "chat",
    "dpo": "preference",
    "reinforcement": "prompt",
    "classifier": "classification",
}


def is_mistral_body(body: CreateJobRequest) -> bool:
    return body.training_files is not None


def create_job(
    workspace: Workspace, body: CreateJobRequest, audit: dict[str, Any] | None = None
) -> FineTuningJob:
    """Check the body against the registry and queue the job (blocking: call in a thread)."""
    try:
        workspace.registry.resolve(body.model, kind="model", purpose="be fine-tuned")
    except ForgottenError:
        raise  # 409, naming the deletion request: the model exists but may not be used
    except ForgeError as error:
        raise ModelNotServed(f"no model {body.model!r} to fine-tune: {error.message}") from error
    job = mistral_job(body) if is_mistral_body(body) else openai_job(body)
    for number, entry in enumerate(job["training_files"]):
        field = f"training_files.{number}.file_id" if is_mistral_body(body) else "training_file"
        check_file(workspace, entry["file_id"], job["method"], field)
    if job["validation_file"]:
        field = "validation_files.0" if is_mistral_body(body) else "validation_file"
        check_file(workspace, job["validation_file"], job["method"], field)
    training_params(job["method"], job["hyperparameters"])
    return queue.submit(workspace, base_model=body.model, audit=audit, **job)


def openai_job(body: CreateJobRequest) -> dict[str, Any]:
    if not body.training_file:
        raise InputError("training_file is required", field="training_file")
    method = body.method.type if body.method else "supervised"
    config = getattr(body.method, method) if body.method else None
    policy.check_hyperparameters(body.hyperparameters or {})
    if config is not None:
        policy.check_hyperparameters(config.hyperparameters, f"method.{method}.hyperparameters")
    hyperparameters = {**(body.hyperparameters or {}), **(config.hyperparameters if config else {})}
    if method == "reinforcement":
        if config is None or config.grader is None:
            raise InputError(
                "reinforcement fine-tuning needs a grader", field="method.reinforcement.grader"
            )
        hyperparameters["rewards"] = [policy.check_grader(config.grader)]
    return {
        "method": method,
        "training_files": [{"file_id": body.training_file}],
        "validation_file": body.validation_file,
        "hyperparameters": hyperparameters,
        "suffix": body.suffix,
        "seed": body.seed,
        "integrations": integrations.from_request(body.integrations),
        "api": "openai",
        "metadata": body.metadata,
    }


def mistral_job(body: CreateJobRequest) -> dict[str, Any]:
    if not body.training_files:
        raise InputError("training_files must name at least one file", field="training_files")
    if len({entry.weight for entry in body.training_files}) > 1:
        raise InputError(
            "training files with different weights are not supported yet; use equal weights",
            field="training_files",
        )
    if len(body.validation_files or []) > 1:
        raise InputError("one validation file is supported", field="validation_files")
    policy.check_hyperparameters(body.hyperparameters or {})
    return {
        "method": "classifier" if body.job_type == "classifier" else "supervised",
        "training_files": [entry.model_dump() for entry in body.training_files],
        "validation_file": (body.validation_files or [None])[0],
        "hyperparameters": body.hyperparameters or {},
        "suffix": body.suffix,
        "seed": body.seed,
        "auto_start": True if body.auto_start is None else body.auto_start,
        "integrations": integrations.from_request(body.integrations),
        "api": "mistral",
    }


def check_file(workspace: Workspace, file_id: str, method: str, field: str) -> None:
    try:
        stored = files.get_file(workspace, file_id)
    except NotFoundError as error:
        raise InputError(f"no file {file_id!r}; upload it to /v1/files", field=field) from error
    if stored.purpose != "fine-tune":
        raise InputError(
            f"{file_id} was uploaded with purpose {stored.purpose!r}; training data needs "
            "purpose 'fine-tune'",
            field=field,
        )
    formats = sorted((stored.details or {}).get("counts") or {})
    expected = FORMAT_FOR_METHOD[method]
    if expected not in formats:
        raise InputError(
            f"{file_id} holds {', '.join(formats) or 'no'} records; method {method!r} trains "
            f"on {expected} records",
            field=field,
        )


def training_params(method: str, hyperparameters: dict[str, Any]) -> FinetuneParams:
    """The stage parameters the job will train with (the worker translates the same way)."""
    params = PARAMS_FOR_METHOD[method]
    fields = params.model_fields
    values: dict[str, Any] = {}
    api_name: dict[str, str] = {}  # our field -> the name the caller used, for errors
    for key, value in hyperparameters.items():
        if value in (None, "auto"):
            continue
        if key == "learning_rate_multiplier" and isinstance(value, bool):
            raise InputError(
                f"must be a positive number, got {value!r}", field=f"hyperparameters.{key}"
            )
        target = HYPERPARAMETER_NAMES.get(key, key)
        if target in fields and target != "name":
            values[target], api_name[target] = value, key
    try:
        return params(**values)
    except ValidationError as error:
        loc = error.errors()[0]["loc"]
        name = api_name.get(str(loc[0]), str(loc[0])) if loc else ""
        raise InputError(_first_problem(error), field=f"hyperparameters.{name}") from error


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    return str(problem["msg"])
