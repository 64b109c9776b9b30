"""A fine-tuning job's `integrations`: checked at submission, kept in one shape, echoed in
the caller's API's shape, and handed to the training stage (train/integrations.py).

    OpenAI:  {"type": "wandb", "wandb": {"project", "name"?, "entity"?, "tags"?}}
    Mistral: {"type": "wandb", "project", "name"?, "run_name"?, "api_key"?}
    forgeml: {"type": "mlflow", "mlflow": {"experiment"?, "run_name"?}} (or the fields flat)

W&B runs offline and MLflow logs to the workspace's local store, so no key is needed:
a Mistral `api_key` is dropped at once, never stored or echoed. A caller cannot choose
where on the server the tracker writes (`dir`, `tracking_dir`): that is the workspace's
`tracking/` folder. OpenAI's job object knows W&B only, so an MLflow entry is used but
echoed in Mistral's shape alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from forgeml.core.errors import InputError
from forgeml.train.integrations import MlflowIntegration, WandbIntegration, check_installed

MAX_INTEGRATIONS = 4
_FIELDS = {
    "wandb": ("project", "name", "entity", "tags"),
    "mlflow": ("experiment", "run_name", "tags"),
}
_SECRETS = ("api_key",)


def from_request(raw: list[Any] | None) -> list[dict[str, Any]]:
    """The request's integrations in the stored shape, or an InputError naming the entry."""
    if not raw:
        return []
    if len(raw) > MAX_INTEGRATIONS:
        raise InputError(f"at most {MAX_INTEGRATIONS} integrations", field="integrations")
    stored = []
    for number, entry in enumerate(raw):
        field = f"integrations.{number}"
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in _FIELDS:
            raise InputError(
                f"type must be one of {', '.join(_FIELDS)}; got {kind!r}", field=f"{field}.type"
            )
        check_installed_for_api(kind, field)
        nested = entry.get(kind)
        values = nested if isinstance(nested, dict) else entry
        if kind == "wandb" and "run_name" in values and "name" not in values:
            values = {**values, "name": values["run_name"]}  # Mistral's run name
        unknown = set(values) - set(_FIELDS[kind]) - {"type", "run_name", *_SECRETS, kind}
        if unknown:
            raise InputError(
                f"unknown field(s) {', '.join(sorted(unknown))}; a {kind} integration takes "
                + ", ".join(_FIELDS[kind]),
                field=field,
            )
        spec = {"type": kind, **{k: values[k] for k in _FIELDS[kind] if values.get(k) is not None}}
        try:
            (WandbIntegration if kind == "wandb" else MlflowIntegration).model_validate(spec)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise InputError(problem["msg"], field=f"{field}.{where}") from None
        stored.append(spec)
    return stored


def check_installed_for_api(kind: str, field: str) -> None:
    try:
        check_installed(kind)
    except InputError as error:
        raise InputError(
            f"{error.message} on this server; ask its operator to install it", field=field
        ) from None


def openai_view(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """W&B entries in OpenAI's shape. OpenAI's job object types an integration as W&B
    only, so an MLflow entry (forgeml's addition) is used but not echoed there."""
    return [
        s if isinstance(s.get(s.get("type")), dict)  # a job stored before the shape was one
        else {"type": s["type"], s["type"]: {k: v for k, v in s.items() if k != "type"}}
        for s in stored
        if s.get("type") == "wandb"
    ]  # fmt: skip


def mistral_view(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k not in _SECRETS} for s in stored]


def stage_integrations(stored: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """The stage parameter: the tracker's run named after the job unless the caller named it."""
    out = []
    for spec in stored:
        tags = [*spec.get("tags", []), f"forgeml/{job_id}"]
        if spec["type"] == "wandb":
            out.append({**spec, "name": spec.get("name") or job_id, "tags": tags})
        else:
            out.append({**spec, "run_name": spec.get("run_name") or job_id, "tags": tags})
    return out
