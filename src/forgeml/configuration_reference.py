"""The configuration reference (docs/CONFIGURATION.md), rendered from forgeml's own models.

    python -m forgeml.configuration_reference --write docs/CONFIGURATION.md   # make docs
    python -m forgeml.configuration_reference                                 # to stdout

Stage parameters, recipes and the `serving:` and `gates:` settings are pydantic models,
so their tables come from the models themselves: names, types, defaults, limits and
descriptions cannot drift from the code. tests/test_configuration_reference.py fails
when the committed file is older than the models. The output is deterministic (no
times, no paths of this machine) so regenerating it changes nothing unless a model did.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from forgeml.core.atomic import write_text_if_changed
from forgeml.core.offline import OFFLINE_ENV
from forgeml.core.recipes import Recipe, RecipeStep
from forgeml.core.stages import Stage, list_stages
from forgeml.eval.gates import GateSpec
from forgeml.monitor.settings import MonitoringSettings
from forgeml.serve.settings import ServeSettings

REGENERATE = "make docs"
LONGEST_DEFAULT = 60  # characters: longer defaults (a grading rubric) are cut in the table

# --- types, defaults and limits as a reader writes them in YAML ---------------------------

SCALARS = {str: "str", int: "int", float: "float", bool: "bool", Path: "path", Any: "any"}
LIMITS = (
    ("ge", "≥ {}"),
    ("gt", "> {}"),
    ("le", "≤ {}"),
    ("lt", "< {}"),
    ("min_length", "length ≥ {}"),
    ("max_length", "length ≤ {}"),
    ("pattern", "matches `{}`"),
)


def anchor(title: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def type_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        discriminator = next((a.discriminator for a in args[1:] if isinstance(a, FieldInfo)), None)
        if discriminator:  # a tagged union: say which field picks the member
            members = ", ".join(type_text(arg) for arg in get_args(args[0]))
            return f"one of (by `{discriminator}`): {members}"
        return type_text(args[0])
    if origin in (Union, types.UnionType):
        parts = [type_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return " / ".join(f"`{_yaml_value(value)}`" for value in args)
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return "map" if args[1] is Any else f"map of {type_text(args[0])} to {type_text(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{anchor(annotation.__name__)})"
    if annotation is datetime:
        return "datetime (ISO 8601)"
    return SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def limits_text(field: FieldInfo) -> str:
    found = []
    for part in field.metadata:
        for name, template in LIMITS:
            value = getattr(part, name, None)
            if value is not None:
                found.append(template.format(value))
    return ", ".join(found)


def _yaml_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _plain(value: Any) -> Any:
    """JSON-ready, with nested models reduced to the fields that differ from their defaults."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return to_jsonable_python(value)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel) and not _plain(value):
        return "its defaults"
    text = json.dumps(_plain(value), ensure_ascii=False)
    if len(text) > LONGEST_DEFAULT:
        text = text[: LONGEST_DEFAULT - 1] + "…"
    return f"`{text}`"


# --- markdown ------------------------------------------------------------------------------


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]
    return "\n".join(lines)


def model_table(model: type[BaseModel]) -> str:
    rows = []
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        if limits := limits_text(field):
            kind += f"; {limits}"
        rows.append(
            [f"`{field.alias or name}`", kind, default_text(field), field.description or ""]
        )
    return table(["field", "type", "default", "description"], rows)


def docstring(model: type) -> str:
    """A class's own docstring, as paragraphs (not one inherited from a base class)."""
    text = inspect.cleandoc(model.__dict__.get("__doc__") or "")
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())


def nested_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """Every model a field of `model` can hold, however deep."""
    found: set[type[BaseModel]] = set()

    def visit(annotation: Any) -> None:
        is_model = inspect.isclass(annotation) and issubclass(annotation, BaseModel)
        if is_model and annotation not in found:
            found.add(annotation)
            for field in annotation.model_fields.values():
                visit(field.annotation)
        for arg in get_args(annotation):
            visit(arg)

    for field in model.model_fields.values():
        visit(field.annotation)
    return found


# --- sections ----------------------------------------------------------------------------


def builtin_stages() -> list[Stage]:
    """forgeml's stages (sorted by name); stages a test or plugin registers are left out."""
    return [stage for stage in list_stages() if stage.fn.__module__.startswith("forgeml.")]


RECIPES_TEXT = """\
A recipe is a YAML file of named steps that `forgeml run RECIPE` executes in order
(`--dry-run` prints the plan and runs nothing). The whole file is validated before any
step runs; an error names the file, the line and the field. A step whose run (stage,
parameters, input artifacts, source files, seed, code) already succeeded is reused, not
repeated. Examples: [`recipes/`](../recipes/).

- **Inputs.** `inputs:` maps each input of the stage to an earlier step (its one output of
  the input's kind), to `STEP.OUTPUT` (a named output), or to an artifact already in the
  workspace (`NAME`, `NAME:N`, `NAME@ALIAS`, `KIND/SHA-PREFIX`). An input of kind `X[]`
  takes a list.
- **Variables.** `vars:` gives variables and their defaults; `${name}` in any string of
  the recipe is replaced by the value. A string that is exactly `${name}` takes the
  value with its type (`max_steps: ${steps}` stays a number); inside longer text the
  value is written as text. An unknown variable is an error. `${recipe_dir}` is always
  set: the folder holding the recipe, for paths next to it.
- **`--var NAME=VALUE`** (repeatable) sets a variable, over its default; VALUE is read as
  YAML (`--var steps=200` is a number).
- **`--set STEP.PARAM=VALUE`** (repeatable) sets one parameter in a step's `with:` after
  variables are substituted; `--set seed=3` sets a top-level field. VALUE is read as
  YAML.
"""

WORKSPACE_EXAMPLE = """\
forgeml_workspace: 1
serving:
  engine: transformers
  max_batch_size: 16
  request_log_days: 14
gates:
  min: {exact_match: 0.5}
  perplexity_max_increase: 0.02
  must_beat: prod
monitoring:
  alpha: 0.01
  models:
    support-bot: {min_psi: 0.3}
"""

WORKSPACE_KEYS = [
    ["`forgeml_workspace`", "int", "Marks the folder as a workspace; `forgeml init` writes `1`."],
    [
        "`database_url`",
        "str",
        "The registry's SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`, to share "
        "one registry across a team. `FORGEML_DATABASE_URL` overrides it. Default: "
        "`registry.db` (SQLite) in the workspace.",
    ],
    [
        "`artifact_store`",
        "str or mapping",
        "A store several machines share artifacts and uploads through: `s3://bucket/prefix` "
        "(any S3-compatible server; the `s3` extra) or a shared filesystem path, or a mapping "
        "`{url, endpoint_url, region_name}`. Stages publish what they commit there; a machine "
        "fetches what it lacks, checked against its sha256 before use; erasure removes it "
        "there too. Credentials from the environment (`AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`). `FORGEML_ARTIFACT_STORE` overrides it. "
        "Default: none (this folder only).",
    ],
    [
        "`serving`",
        "[serving](#serving)",
        "Defaults for `forgeml serve`; its command-line options override them.",
    ],
    [
        "`gates`",
        type_text(GateSpec),
        "Promotion gates `forgeml models promote` applies to every model, together with the "
        "`gates` of the model's `eval.run` step.",
    ],
    [
        "`monitoring`",
        "[monitoring](#monitoring)",
        "Drift thresholds of `forgeml monitor drift`/`report` and the server's drift alerts; "
        "per model under `models:`.",
    ],
]

# Variables forgeml reads. The test checks every FORGEML_* name in src/ is listed here.
ENVIRONMENT = [
    ["`FORGEML_WORKSPACE`", "The workspace folder when `--workspace` is not given (default `./forgeml-workspace`)."],
    ["`FORGEML_DATABASE_URL`", "The registry database; overrides `database_url` in forgeml.yaml."],
    ["`FORGEML_ARTIFACT_STORE`", "The shared artifact store's URL; overrides `artifact_store` in forgeml.yaml."],
    ["`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`", "An S3 `artifact_store`'s credentials and server (read by botocore, never from forgeml.yaml)."],
    ["`AWS_EC2_METADATA_DISABLED`", "Set to `true` by forgeml before it opens an S3 store, unless set: botocore then never asks the cloud metadata address for credentials (`false` for instance roles)."],
    ["`RAY_ADDRESS`", "The Ray cluster of `executor: ray` when `ray_address` is not given; neither: a local Ray for the run. `launch --on ray --submit`: the Jobs API when `--ray-address` and `RAY_API_SERVER_ADDRESS` are not given."],
    ["`RAY_API_SERVER_ADDRESS`", "`launch --on ray --submit`: the cluster's Jobs API (its dashboard, `http://HEAD:8265`) when `--ray-address` is not given, as for `ray job submit`."],
    ["`RAY_JOB_CONFIG_JSON_ENV_VAR`", "Set by Ray for a job's entrypoint; a run launched with `--on ray` records the submission id from it."],
    ["`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`", "A Ray cluster's token (else `~/.ray/auth_token`); given one, forgeml sets `RAY_AUTH_MODE` to `token` unless it is set."],
    ["`RAY_AUTH_MODE`", "Ray's own: left as set; see the line above."],
    ["`RAY_USE_TLS`", "Ray's own (`1`: the cluster speaks TLS); forgeml then skips its gRPC handshake check of a `ray_address` (an address where something other than Ray answers is otherwise an error in 15 s)."],
    ["`RAY_USAGE_STATS_ENABLED`", "Set to `0` by forgeml before Ray starts: no usage statistics."],
    ["`FORGEML_SERVING_`", "Followed by a `serving:` field in capitals (`FORGEML_SERVING_MAX_BATCH_SIZE` sets `max_batch_size`): that setting of `forgeml serve`, over forgeml.yaml, under its options. Lists: a JSON array or comma-separated; `none` unsets a nullable one; an unknown name is an error."],
    ["`FORGEML_MODELS`", "The models `forgeml serve` serves when none are named (space-separated)."],
    ["`FORGEML_HOST`, `FORGEML_PORT`", "Where `forgeml serve` listens (`--host`, `--port`)."],
    ["`FORGEML_JOBS_POLL`", "Seconds between a `forgeml jobs worker`'s looks at the queue (`--poll`)."],
    ["`FORGEML_ACTOR`", "Who the audit log records as acting (default `user@host`); for servers and job workers."],
    ["`FORGEML_DEBUG`", "Any value: print tracebacks of user errors (`--debug` sets it)."],
    ["`FORGEML_EVAL_API_KEY`", "API key for `forgeml eval endpoint` and the endpoints of `forgeml eval compare` (`--api-key` sets it). Stages name the variable (`api_key_env`), never the key."],
    ["`FORGEML_JUDGE_API_KEY`", "API key of the judge model (`--judge-api-key` sets it)."],
    ["`FORGEML_TEACHER_API_KEY`", "API key of the teacher endpoint of `forgeml data synthesize --generator teacher`; the stage names the variable, never the key."],
    ["`FORGEML_LLAMA_CPP_SRC`", "A llama.cpp checkout (or unpacked llama-cpp-python sdist) holding `convert_hf_to_gguf.py`, for GGUF export."],
    ["`XDG_CACHE_HOME`", "Where the unpacked llama.cpp converter is looked for: `$XDG_CACHE_HOME/forgeml` (default `~/.cache/forgeml`)."],
    ["`VLLM_API_KEY`", "API key of the vLLM server named by `serving.vllm_url`."],
    ["`EDGE_API_KEY`", "Read by an edge bundle's `./serve` (not by forgeml): the bearer key clients must send (`--api-key` sets it)."],
    ["`RANK`, `WORLD_SIZE`", "Set by `accelerate launch` / `torchrun`: this process's rank and the number of processes."],
    ["`FORGEML_LAUNCH`", "Set by the jobs `forgeml launch` writes (`slurm`, `kubernetes`, `ray`): recorded with each run under `environment.launch`, with the Slurm job, the pod or the Ray job."],
    ["`FORGEML_PYTHON`", "Read by a `forgeml launch --on slurm` script: the Python with forgeml on every node (default: the `--python` it was written with)."],
    ["`FORGEML_RDZV_PORT`", "Read by a `forgeml launch --on slurm` script: torchrun's rendezvous port on the allocation's first node (default 29500)."],
    ["`CUBLAS_WORKSPACE_CONFIG`", "Set to `:4096:8` by training when unset: cuBLAS is deterministic only with a fixed workspace."],
]  # fmt: skip


def recipes_section() -> str:
    return "\n\n".join(
        [
            "## Recipes",
            RECIPES_TEXT.strip(),
            "### Recipe file",
            model_table(Recipe),
            "### Step",
            "Each item of `steps:`.",
            model_table(RecipeStep),
        ]
    )


def stage_section(stage: Stage) -> str:
    def kinds(specs: dict[str, str]) -> str:
        return ", ".join(f"`{name}` ({kind})" for name, kind in specs.items()) or "none"

    inputs = {
        name: spec.kind + (", one or more" if spec.many else ", optional" if spec.optional else "")
        for name, spec in stage.inputs.items()
    }
    return "\n\n".join(
        [
            f"### {stage.name}",
            stage.description,
            f"Inputs: {kinds(inputs)}. Outputs: {kinds(stage.outputs)}.",
            model_table(stage.params),
        ]
    )


def stages_section(stages: list[Stage]) -> str:
    summary = table(
        ["stage", "what it does"],
        [[f"[`{s.name}`](#{anchor(s.name)})", s.description] for s in stages],
    )
    intro = (
        "What a recipe step can `use`, with its `with:` parameters (unknown parameters are "
        "errors). `forgeml stages show NAME` prints the same table."
    )
    return "\n\n".join(["## Stages", intro, summary, *(stage_section(s) for s in stages)])


def workspace_section() -> str:
    serve_flags = "`--max-batch-size`, `--max-waiting`, `--threads` (`torch_threads`), `--log-prompts`, `--request-log-days`, `--job-workers`, `--engine`"  # fmt: skip
    return "\n\n".join(
        [
            "## Workspace settings: forgeml.yaml",
            "`forgeml.yaml` at the root of a workspace holds the organisation's settings. "
            "`forgeml init` (or the first command that makes the workspace) writes it.",
            f"```yaml\n{WORKSPACE_EXAMPLE.strip()}\n```",
            table(["key", "type", "meaning"], WORKSPACE_KEYS),
            "### serving",
            f"`forgeml serve` options override these: {serve_flags}. Unknown keys are errors. "
            "Each is also an environment variable, `FORGEML_SERVING_` and the field in "
            "capitals, which overrides forgeml.yaml (see [Environment variables]"
            "(#environment-variables)).",
            model_table(ServeSettings),
            "### gates",
            "The fields of [GateSpec](#gatespec). Metric names are the keys of an eval's "
            "`metrics`; a gate that compares with an alias nobody holds yet is skipped.",
            "### monitoring",
            "A model's thresholds are these, with the fields its entry under `models:` names "
            "replaced; `--alpha` on the command line overrides `alpha`.",
            model_table(MonitoringSettings),
        ]
    )


def environment_section() -> str:
    offline = table(
        ["variable", "value"],
        [[f"`{name}`", f"`{OFFLINE_ENV[name]}`"] for name in sorted(OFFLINE_ENV)],
    )
    return "\n\n".join(
        [
            "## Environment variables",
            table(["variable", "meaning"], ENVIRONMENT),
            "### Offline defaults",
            "Importing forgeml sets these when they are unset, so no library reaches a hub "
            "or sends telemetry. Set one yourself to override it.",
            offline,
        ]
    )


def nested_section(models: set[type[BaseModel]]) -> str:
    parts = [
        "## Nested types",
        "The shapes of parameters and settings that hold more than one value.",
    ]
    for model in sorted(models, key=lambda m: m.__name__):
        parts += [f"### {model.__name__}", docstring(model), model_table(model)]
    return "\n\n".join(part for part in parts if part)


def render() -> str:
    stages = builtin_stages()
    nested = {GateSpec} | nested_models(GateSpec) | nested_models(MonitoringSettings)
    for stage in stages:
        nested |= nested_models(stage.params)
    names = [model.__name__ for model in nested]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:  # their headings, and the links to them, would collide
        raise RuntimeError(f"two parameter models share a name: {', '.join(duplicated)}")
    header = (
        "# Configuration reference\n\n"
        f"Generated from forgeml's models by `{REGENERATE}` "
        "(`python -m forgeml.configuration_reference --write docs/CONFIGURATION.md`); "
        "do not edit it by hand.\n\n"
        "- [Recipes](#recipes)\n- [Stages](#stages)\n"
        "- [Workspace settings: forgeml.yaml](#workspace-settings-forgemlyaml)\n"
        "- [Environment variables](#environment-variables)\n- [Nested types](#nested-types)"
    )
    sections = [
        header,
        recipes_section(),
        stages_section(stages),
        workspace_section(),
        environment_section(),
        nested_section(nested),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, metavar="PATH", help="Write here, atomically.")
    args = parser.parse_args(argv)
    text = render()
    if args.write is None:
        sys.stdout.write(text)
    elif write_text_if_changed(args.write, text):
        print(f"wrote {args.write}")
    else:
        print(f"{args.write} is up to date")


if __name__ == "__main__":
    main()
