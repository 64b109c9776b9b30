"""`forgeml serve MODEL...`: the OpenAI/Mistral-compatible API over workspace models.

forgeml keys create --name my-app            # prints fml-... once
forgeml serve support-bot@prod --port 8000
# then any OpenAI or Mistral client: base_url=http://127.0.0.1:8000/v1, api_key=fml-...
forgeml serve support-bot-gguf               # a GGUF export: served by llama.cpp
forgeml serve support-bot --engine vllm      # with serving.vllm_command in forgeml.yaml
forgeml serve support-bot support-bot-lora   # a LoRA adapter, served over its base's weights
FORGEML_MODELS=support-bot@prod FORGEML_HOST=0.0.0.0 FORGEML_SERVING_MAX_BATCH_SIZE=8 forgeml serve
forgeml serve support-bot@prod --canary support-bot@candidate:10   # 10% of users
forgeml serve support-bot@prod --shadow support-bot@candidate      # copies, answers discarded
"""

from __future__ import annotations

import typer
from pydantic import ValidationError

from forgeml.cli.output import console, options
from forgeml.core.errors import InputError
from forgeml.serve.settings import (
    CanarySettings,
    ServeSettings,
    environment_variable,
    settings_from_environment,
)


def serve(
    ctx: typer.Context,
    models: list[str] = typer.Argument(
        ...,
        help="Models to serve: NAME, NAME:VERSION, NAME@ALIAS or model/SHA-PREFIX; a LoRA "
        "adapter is served by its base model's engine (the base is loaded if not named).",
        envvar="FORGEML_MODELS",
        show_envvar=True,
    ),
    host: str = typer.Option(
        "127.0.0.1", envvar="FORGEML_HOST", help="Interface to listen on (0.0.0.0: every one)."
    ),
    port: int = typer.Option(8000, envvar="FORGEML_PORT", help="TCP port."),
    max_batch_size: int | None = typer.Option(
        None, help="Sequences decoded together per model (default 32)."
    ),
    max_waiting: int | None = typer.Option(
        None, help="Requests queued per model before answering 429 (default 256)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for the models (default: all cores but one)."
    ),
    log_prompts: bool | None = typer.Option(
        None,
        "--log-prompts/--no-log-prompts",
        help="Keep prompts and outputs in the request log (they may hold personal data).",
    ),
    request_log_days: int | None = typer.Option(
        None, help="Days request log rows are kept in the registry (default 30)."
    ),
    job_workers: int | None = typer.Option(
        None,
        "--job-workers",
        help="Fine-tuning job worker processes to run (default 1; 0: run `forgeml jobs "
        "worker` yourself).",
    ),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help="transformers, llama.cpp (GGUF exports; their default) or vllm (set "
        "serving.vllm_command or serving.vllm_url in forgeml.yaml).",
    ),
    engine_process: bool | None = typer.Option(
        None,
        "--engine-process/--engine-thread",
        help="Run the transformers engine in its own process (default: more tokens/s under "
        "load) or as a thread of the server (starts faster).",
    ),
    canary: list[str] = typer.Option(
        [],
        "--canary",
        help="NAME@ALIAS:WEIGHT: that alias answers WEIGHT% (0-100) of the users asking for "
        "NAME (or NAME@PROD, the alias NAME is served under; default prod).",
    ),
    shadow: list[str] = typer.Option(
        [],
        "--shadow",
        help="NAME@ALIAS: prod answers everything; a copy of each request for NAME goes to "
        "ALIAS in the background, measured and discarded.",
    ),
) -> None:
    """Serve models over HTTP until interrupted; every route but /health needs an API key.
    Every `serving:` setting of forgeml.yaml can also be set as FORGEML_SERVING_<FIELD>
    (e.g. FORGEML_SERVING_MAX_BATCH_SIZE=8), between forgeml.yaml and these options."""
    import uvicorn

    from forgeml.serve.app import create_app

    workspace = options(ctx).open()
    overrides = {
        "max_batch_size": max_batch_size,
        "max_waiting": max_waiting,
        "torch_threads": threads,
        "log_prompts": log_prompts,
        "request_log_days": request_log_days,
        "job_workers": job_workers,
        "engine": engine,
        "engine_process": engine_process,
    }
    configured = dict(workspace.settings.get("serving") or {})
    from_environment = _environment_settings()
    plans = [*canary_plans(canary, models, "--canary"), *canary_plans(shadow, models, "--shadow")]
    if plans:
        configured["canary"] = plans
    values = {**configured, **from_environment}
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = _settings(workspace, values, endpoint=f"http://{host}:{port}")
    app = create_app(workspace, models, settings)
    console.print(f"serving {', '.join(models)} on http://{host}:{port}/v1 (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def ui(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8000, help="TCP port."),
) -> None:
    """Run the web console alone (no model served): http://HOST:PORT/ui, log in with an
    admin or viewer key (`forgeml keys create --scope viewer`)."""
    import uvicorn

    from forgeml.console import create_console_app

    workspace = options(ctx).open()
    configured = workspace.settings.get("serving") or {}
    settings = _settings(workspace, {**configured, **_environment_settings()})
    app = create_console_app(workspace, settings)
    console.print(f"console on http://{host}:{port}/ui (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _settings(workspace, values: dict, **extra) -> ServeSettings:
    """ServeSettings from merged values; a bad one is an InputError naming its field."""
    try:
        return ServeSettings(**values, **extra)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise InputError(
            problem["msg"], path=workspace.config_path, field=f"serving.{field}"
        ) from error


def _environment_settings() -> dict:
    """FORGEML_SERVING_* values, each checked on its own so an error names its variable."""
    try:
        values = settings_from_environment()
    except KeyError as error:
        raise InputError(
            f"unknown setting {error.args[0]}",
            hint="Name a `serving:` field after FORGEML_SERVING_ (docs/CONFIGURATION.md).",
        ) from error
    except ValueError as error:  # a list variable that is not valid JSON
        raise InputError(f"a FORGEML_SERVING_ list is not a JSON array: {error}") from error
    for name, value in values.items():
        try:
            ServeSettings(**{name: value})
        except ValidationError as error:
            raise InputError(
                f"{error.errors()[0]['msg']} (got {value!r})", field=environment_variable(name)
            ) from error
    return values


def canary_plans(values: list[str], models: list[str], option: str) -> list[dict]:
    """`--canary NAME@ALIAS:WEIGHT` / `--shadow NAME@ALIAS` as `serving.canary` entries."""
    plans = []
    for value in values:
        target, _, weight = value.partition(":") if option == "--canary" else (value, "", "")
        name, _, alias = target.partition("@")
        if not name or not alias or (option == "--canary" and not weight):
            form = (
                "NAME@ALIAS:WEIGHT, e.g. bot@candidate:10"
                if option == "--canary"
                else ("NAME@ALIAS, e.g. bot@candidate")
            )
            raise InputError(f"{value!r} is not {form}", field=option)
        try:
            share = float(weight) if weight else 0.0
        except ValueError:
            raise InputError(f"{weight!r} in {value!r} is not a number", field=option) from None
        if not 0 <= share <= 100:
            raise InputError(
                f"weight {weight} in {value!r} is outside 0-100", field=option,
                hint="The weight is the percent of users the candidate answers.",
            )  # fmt: skip
        prod = next((m.partition("@")[2] for m in models if m.startswith(f"{name}@")), "prod")
        mode = "split" if option == "--canary" else "shadow"
        plans.append(
            CanarySettings(model=name, prod=prod, candidate=alias, weight=share, mode=mode)
        )
    return [plan.model_dump() for plan in plans]
