"""Server settings: defaults here, overridden by `serving:` in forgeml.yaml, then by
FORGEML_SERVING_<FIELD> environment variables (containers, systemd units), then the CLI."""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from forgeml.plan.hardware import HARDWARE


class CanarySettings(BaseModel):
    """Traffic for NAME (or NAME@PROD) split between two aliases, or shadowed (traffic.py)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The model name requests use, e.g. support-bot.")
    prod: str = Field("prod", description="The alias that answers by default.")
    candidate: str = Field("candidate", description="The alias under test.")
    weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Percent of users (of requests, for those without `user`) the candidate "
        "answers; ignored in shadow mode.",
    )
    mode: Literal["split", "shadow"] = Field(
        "split",
        description="split: the candidate answers `weight`% of traffic; shadow: prod answers "
        "everything and a copy of each request goes to the candidate in the background.",
    )
    shadow_queue: int = Field(
        64, ge=1, description="Shadow copies waiting for the candidate; more are dropped."
    )


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, description="Sequences decoded together per model.")
    max_waiting: int = Field(
        256, ge=0, description="Requests queued per model beyond free batch slots before 429."
    )
    default_max_tokens: int | None = Field(
        None, ge=1, description="Completion limit when a request sets none (None: the context)."
    )
    default_reasoning_budget: int | None = Field(
        None, ge=1, description="Reasoning tokens before [/THINK] is forced, unless a request says."
    )
    log_prompts: bool = Field(
        False, description="Store prompts and outputs in the request log (personal data!)."
    )
    language_signal: bool = Field(
        True,
        description="Identify each prompt's language for drift monitoring (py3langid, "
        "mapped: a few MB resident); off: no `language` signal, for small edge servers.",
    )
    drift_check_seconds: float = Field(
        300.0,
        ge=0,
        description="How often each served model's recent traffic is tested for drift "
        "(`forgeml monitor drift`); 0 turns the check off.",
    )
    drift_window_minutes: int = Field(
        60,
        ge=1,
        le=60 * 24 * 31,
        description="The traffic each drift check tests: the last N minutes.",
    )
    drift_webhook_url: str | None = Field(
        None,
        description="Posted a JSON alert when a model starts drifting (optional; nothing is "
        "sent anywhere unless this is set).",
    )
    request_log_days: int = Field(
        30, ge=1, description="Days request log rows are kept in the registry before deletion."
    )
    feedback_cache_size: int = Field(
        4096,
        ge=0,
        description="Recent chat completions kept in memory (never on disk) so /v1/feedback "
        "can name the conversation it rates; 0 turns this off.",
    )
    feedback_cache_seconds: float = Field(
        3600.0, gt=0, description="How long a completion stays in that cache."
    )
    key_cache_seconds: float = Field(
        10.0, ge=0, description="How long a verified key is trusted before re-checking."
    )
    key_cache_size: int = Field(
        10_000, ge=1, description="Verified keys kept in that cache (least recently used go)."
    )
    key_requests_per_minute: int | None = Field(
        None,
        ge=1,
        description="Requests one API key may start per minute (a burst of this many, then "
        "refilled evenly) before 429 with Retry-After; None: no rate limit.",
    )
    key_max_concurrent: int | None = Field(
        64,
        ge=1,
        description="Requests one API key may have open at once (a stream counts until its "
        "last byte) before 429 with Retry-After; None: no cap.",
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body on every route but /v1/files (413 beyond; counted "
        "while reading, so a chunked body without Content-Length is capped too).",
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest request body on /v1/files (a multipart upload), 413 beyond.",
    )
    max_images_per_request: int = Field(
        8,
        ge=0,
        le=256,
        description="Images one chat request may carry to a vision-language model (400 "
        "beyond); each is at most 20 MiB and 40 megapixels, and is shrunk to the model's "
        "image size before the model sees it.",
    )
    max_completion_choices: int = Field(
        64,
        ge=1,
        description="Choices one /v1/completions request may ask for (prompts x n); 400 beyond.",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the models; default all cores but one, which the HTTP "
        "event loop keeps (on 2 cores one thread also avoids oversubscription stalls).",
    )
    engine_process: bool = Field(
        True,
        description="Run each transformers engine in a process of its own, so decoding never "
        "waits on the HTTP event loop for Python's GIL (12-45% more tokens/s at 32 streams "
        "on 2 cores); off: a thread in the server's process (starts faster, shares memory).",
    )
    endpoint: str = Field("", description="Where the server listens, recorded on deployments.")
    batch_concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description="Requests of a batch (/v1/batches, `forgeml batch run`) in flight at once; "
        "the engine batches them.",
    )
    batch_runner: bool = Field(
        True,
        description="Run batches in this server (false: another server or `forgeml batch "
        "run` sharing the registry runs them).",
    )
    job_workers: int = Field(
        1,
        ge=0,
        description="`forgeml jobs worker` processes the server runs for fine-tuning jobs "
        "(0: none; run workers yourself, e.g. on a GPU machine sharing the registry).",
    )
    plan_hardware: Literal[tuple(HARDWARE)] = Field(  # type: ignore[valid-type]
        "cpu-2",
        description="Hardware the job workers train on, for the duration a held "
        "(`auto_start: false`) job is estimated to take (`forgeml plan --hardware`).",
    )
    max_on_demand_models: int = Field(
        2,
        ge=0,
        description="Registry models (e.g. fine-tuned ones) loaded when a request names them, "
        "beyond those the server was started with; the least recently used idle one is "
        "unloaded past this many (a busy one never). 0: serve only the models named at start.",
    )
    on_demand_models: list[str] = Field(
        default_factory=list,
        description="Registry models any key may have loaded on demand (names cover every "
        "version). Admin keys may name any model, and fine-tuning jobs' models are "
        "servable to every key; other models stay unknown (404) to inference keys.",
    )
    max_on_demand_adapters: int = Field(
        8,
        ge=0,
        description="LoRA adapters loaded into their base model's engine when a request names "
        "them (a base not held counts as an on-demand model); the least recently used is "
        "unloaded past this many. 0: serve only the adapters named at start.",
    )
    canary: list[CanarySettings] = Field(
        default_factory=list,
        description="Canary or shadow deployments: requests for a model split between its "
        "prod and candidate aliases by weight, or copied to the candidate (traffic.py).",
    )
    # Engines: served_models.make_engine reads these.
    engine: Literal["transformers", "llama.cpp", "vllm"] | None = Field(
        None,
        description="transformers (CPU/GPU, batches requests), llama.cpp (a GGUF export, batches "
        "requests in max_batch_size slots) or vllm (GPU, a vLLM server). Default: llama.cpp for a GGUF "
        "export, else transformers.",
    )
    llama_cpp_n_ctx: int | None = Field(
        None,
        ge=1,
        description="llama.cpp context per sequence in tokens; its f32 KV cache holds "
        "max_batch_size of them. Default: the model's trained context.",
    )
    vllm_command: str | None = Field(
        None,
        description="The `vllm` executable of vLLM's own environment (e.g. /opt/vllm/bin/vllm): "
        "the server runs `vllm serve MODEL_DIR` with it and stops it on exit.",
    )
    vllm_url: str | None = Field(
        None,
        description="Instead of vllm_command: a running vLLM server that serves this one model "
        "with its tokenizer (its API key, if any, is read from $VLLM_API_KEY).",
    )
    vllm_args: list[str] = Field(
        default_factory=list,
        description="More `vllm serve` arguments, e.g. ['--tensor-parallel-size', '2'].",
    )
    vllm_start_timeout: float = Field(
        600.0, gt=0, description="Seconds `vllm serve` may take to become ready."
    )

    def threads(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 2) - 1)


ENV_PREFIX = "FORGEML_SERVING_"
NULLS = {"", "none", "null"}


def settings_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `serving:` settings that FORGEML_SERVING_<FIELD> variables set, as raw values
    for ServeSettings to check: `FORGEML_SERVING_MAX_BATCH_SIZE=8`. A list is a JSON
    array or comma-separated; `none` (or empty) unsets a setting that may be null. A
    misspelt variable is an error, as a misspelt forgeml.yaml key is (KeyError: its name)."""
    environ = os.environ if environ is None else environ
    fields = ServeSettings.model_fields
    values: dict[str, Any] = {}
    for variable, raw in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name not in fields:
            raise KeyError(variable)
        annotation = fields[name].annotation
        nullable = get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(
            annotation
        )
        if nullable and raw.strip().lower() in NULLS:
            values[name] = None
        elif get_origin(annotation) is list:
            text = raw.strip()
            values[name] = (
                json.loads(text)
                if text.startswith("[")
                else [part.strip() for part in text.split(",") if part.strip()]
            )
        else:
            values[name] = raw
    return values


def environment_variable(field: str) -> str:
    return ENV_PREFIX + field.upper()
