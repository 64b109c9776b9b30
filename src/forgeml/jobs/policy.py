"""What a fine-tuning job from the API may ask for: checked at submission and again by
the worker (a job queued by an older server, or written into the registry by hand,
gets no further than one the API refused).

An API key is not a shell account. A job's grader therefore takes only the shapes
OpenAI documents for reinforcement fine-tuning (`string_check`, `text_similarity`) and
a `json_schema` given inline: forgeml's `python` reward imports a module of the
caller's choosing in the worker, and `json_schema.schema_path` reads any file the
worker can; both stay features of recipes and the command line, which run with the
operator's own rights. Nor does a job name its model: `hyperparameters.name` would
make the job's output the newest version of any name, the one production serves by
plain name included, so the worker always names it `ft-<base>-<suffix>-<job>`.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from forgeml.core.errors import InputError
from forgeml.train.rewards import RewardSpec

API_GRADERS = ("string_check", "text_similarity", "json_schema")
GRADER_FIELD = "method.reinforcement.grader"
# Stage parameters a job sets itself, never the caller.
RESERVED_HYPERPARAMETERS = {
    "name": "the worker names the model ft-<base>-<suffix>-<job>; use `suffix` to tell "
    "jobs apart, and `forgeml models promote` to give a model a production name",
    "rewards": f"give the grader as {GRADER_FIELD}",
}


def check_grader(grader: Any) -> dict[str, Any]:
    """The grader as a reward spec, or `InputError` naming what the API accepts."""
    kind = grader.get("type") if isinstance(grader, dict) else None
    if kind not in API_GRADERS:
        raise InputError(
            f"grader type {kind!r} is not accepted from the API; use one of "
            f"{', '.join(API_GRADERS)}",
            field=GRADER_FIELD,
            hint="Python rewards and schema files are for recipes and `forgeml train rl` "
            "on the server's own machine.",
        )
    if kind == "json_schema" and grader.get("schema_path") is not None:
        raise InputError(
            "a grader's schema must be given inline (json_schema), not as a schema_path",
            field=f"{GRADER_FIELD}.schema_path",
        )
    try:
        TypeAdapter(RewardSpec).validate_python(grader)
    except ValidationError as error:
        raise InputError(str(error.errors()[0]["msg"]), field=GRADER_FIELD) from error
    return grader


def check_hyperparameters(hyperparameters: dict[str, Any], field: str = "hyperparameters") -> None:
    """Refuse the stage parameters a job may not set (see RESERVED_HYPERPARAMETERS)."""
    for key, why in RESERVED_HYPERPARAMETERS.items():
        if key in hyperparameters:
            raise InputError(f"{key} cannot be set by a job: {why}", field=f"{field}.{key}")


def check_job_spec(spec: dict[str, Any]) -> None:
    """The worker's check of a queued job: the rewards it carries and its hyperparameters."""
    hyperparameters = dict(spec.get("hyperparameters") or {})
    rewards = hyperparameters.pop("rewards", None) or []
    check_hyperparameters(hyperparameters)
    for reward in rewards:
        check_grader(reward)
