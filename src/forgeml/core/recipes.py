"""Recipes: YAML files naming the steps of a pipeline.

    name: quickstart
    seed: 0
    steps:
      - name: docs
        uses: data.ingest
        with: {paths: [corpus/], name: docs}
      - name: report
        uses: data.assess
        inputs: {dataset: docs}          # an earlier step, `step.output`, or any artifact ref

Everything is validated before anything runs; an error names the file, the line and
the field, and says what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.registry import NAME_PATTERN
from forgeml.core.runs import RunResult, find_reusable, launch_rank, prepare, run_stage
from forgeml.core.schema import Artifact
from forgeml.core.stages import get_stage

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace


class RecipeStep(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN.pattern, description="Unique step name.")
    uses: str = Field(description="The stage this step runs, e.g. data.ingest.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="Parameters.")
    inputs: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Input name -> earlier step, step.output, or artifact ref.",
    )
    seed: int | None = Field(default=None, description="Overrides the recipe's seed.")
    description: str = ""


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN.pattern)
    description: str = ""
    seed: int = Field(default=0, ge=0, description="Seed for every step unless a step sets one.")
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for `${name}` variables; `--var name=value` overrides them.",
    )
    steps: list[RecipeStep] = Field(min_length=1)


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    lines: dict[tuple, int]

    def line_of(self, *location: Any) -> int | None:
        """Line of the deepest part of `location` that the file spells out."""
        location = tuple(location)
        while location not in self.lines and location:
            location = location[:-1]
        return self.lines.get(location)

    def error(self, message: str, *location: Any, hint: str | None = None) -> InputError:
        return InputError(
            message,
            path=self.path,
            line=self.line_of(*location),
            field=_dotted(location),
            hint=hint,
        )


def _dotted(location: tuple) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_map(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            lines.update(_line_map(value_node, key_path))
            lines[key_path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_map(item, (*path, index)))
    return lines


def apply_overrides(raw: dict, overrides: list[str], path: Path) -> None:
    """`--set step.param=value` (value parsed as YAML) or `--set seed=3`."""
    for item in overrides:
        target, sep, value_text = item.partition("=")
        if not sep or not target:
            raise InputError(f"--set {item!r}: expected STEP.PARAM=VALUE or seed=N")
        value = yaml.safe_load(value_text)
        if "." not in target:
            raw[target] = value
            continue
        step_name, param = target.split(".", 1)
        steps = [
            s for s in raw.get("steps", []) if isinstance(s, dict) and s.get("name") == step_name
        ]
        if not steps:
            raise InputError(f"--set {item!r}: {path} has no step named {step_name!r}")
        steps[0].setdefault("with", {})[param] = value


def parse_variables(items: list[str]) -> dict[str, Any]:
    """`--var name=value` options (value parsed as YAML) as a mapping."""
    variables = {}
    for item in items:
        name, sep, value_text = item.partition("=")
        if not sep or not VARIABLE.fullmatch("${" + name + "}"):
            raise InputError(f"--var {item!r}: expected NAME=VALUE")
        variables[name] = yaml.safe_load(value_text)
    return variables


VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, variables: dict[str, Any], where: tuple, fail: Callable) -> Any:
    """Replace `${name}` in every string of the recipe. A string that is exactly one
    `${name}` takes the variable's value with its type (`max_steps: ${steps}` stays a
    number); inside longer text the value is written as text."""
    if isinstance(value, str):
        whole = VARIABLE.fullmatch(value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]

        def replace(match: re.Match) -> str:
            if match.group(1) not in variables:
                fail(
                    f"unknown variable ${{{match.group(1)}}}; known: {', '.join(sorted(variables))}",
                    where,
                )
            return str(variables[match.group(1)])

        return VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, variables, (*where, k), fail) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, (*where, i), fail) for i, v in enumerate(value)]
    return value


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, variables: dict[str, Any] | None = None
) -> LoadedRecipe:
    """Parse, substitute `${variables}`, apply overrides, validate.

    Variables come from the recipe's `vars:` defaults, then `variables` (the CLI's
    `--var`); `recipe_dir` is always set to the recipe's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the recipe: {exc}", path=path) from exc
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            path=path,
            line=mark.line + 1 if mark else None,
        ) from exc
    if not isinstance(raw, dict) or node is None:
        raise InputError("a recipe must be a mapping with `name` and `steps`", path=path, line=1)
    lines = _line_map(node)

    def fail(message: str, where: tuple) -> None:
        raise LoadedRecipe(Recipe.model_construct(), path, lines).error(message, *where)

    declared = raw.get("vars") or {}
    if not isinstance(declared, dict):
        fail("`vars` must be a mapping of name: default value", ("vars",))
    given = variables or {}
    known: dict[str, Any] = {"recipe_dir": str(path.resolve().parent), **given}
    for name, default in declared.items():  # a default may use recipe_dir and earlier vars
        if name not in given:
            known[name] = _substitute(default, known, ("vars", name), fail)
    raw = {k: v if k == "vars" else _substitute(v, known, (k,), fail) for k, v in raw.items()}
    apply_overrides(raw, overrides or [], path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        first = _most_telling(exc)
        loaded = LoadedRecipe(Recipe.model_construct(), path, lines)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise loaded.error(_describe(first) + more, *first["loc"]) from exc
    loaded = LoadedRecipe(recipe, path, lines)
    _check_steps(loaded)
    return loaded


def _most_telling(exc: ValidationError) -> dict:
    """A misspelt field shows up as unknown *and* as a missing one: name the misspelling."""
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _describe(error: dict) -> str:
    if error["type"] == "missing":
        return "this field is required"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return f"{error['msg']} (got {error.get('input')!r})"


def _check_steps(loaded: LoadedRecipe) -> None:
    seen: set[str] = set()
    for index, step in enumerate(loaded.recipe.steps):
        where = ("steps", index)
        if step.name in seen:
            raise loaded.error(f"step name {step.name!r} is used twice", *where, "name")
        try:
            stage = get_stage(step.uses)
        except ForgeError as exc:
            raise loaded.error(str(exc), *where, "uses", hint=exc.hint) from exc
        try:
            stage.params.model_validate(step.with_)
        except ValidationError as exc:
            first = _most_telling(exc)
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise loaded.error(
                f"{_describe(first)}; stage {stage.name} expects "
                f"{_expected(stage, first['loc'])}{more}",
                *where,
                "with",
                *first["loc"],
            ) from exc
        for input_name, value in step.inputs.items():
            if input_name not in stage.inputs:
                raise loaded.error(
                    f"stage {stage.name} has no input {input_name!r}; "
                    f"its inputs are: {', '.join(stage.inputs) or 'none'}",
                    *where,
                    "inputs",
                    input_name,
                )
            for ref in value if isinstance(value, list) else [value]:
                target = ref.split(".", 1)[0]
                later = {s.name for s in loaded.recipe.steps[index:]}
                if target in later and target not in seen:
                    raise loaded.error(
                        f"{ref!r} refers to step {target!r}, which does not come before this one",
                        *where,
                        "inputs",
                        input_name,
                    )
        missing = [
            name
            for name, spec in stage.inputs.items()
            if not spec.optional and name not in step.inputs
        ]
        if missing:
            raise loaded.error(
                f"stage {stage.name} needs input(s): {', '.join(missing)}", *where, "inputs"
            )
        seen.add(step.name)


def _expected(stage, loc: tuple) -> str:
    field_info = stage.params.model_fields.get(str(loc[0])) if loc else None
    if field_info is None:
        return "parameters: " + ", ".join(stage.params.model_fields)
    annotation = getattr(field_info.annotation, "__name__", str(field_info.annotation))
    return f"{loc[0]}: {annotation}" + (
        f" ({field_info.description})" if field_info.description else ""
    )


# --- planning and execution ---------------------------------------------------------------


@dataclass
class PlannedStep:
    name: str
    stage: str
    action: str  # "reuse" | "run"
    key: str | None = None
    detail: str = ""
    result: RunResult | None = None
    outputs: dict[str, Artifact] = field(default_factory=dict)


def _step_inputs(
    loaded: LoadedRecipe, index: int, outputs: dict[str, dict[str, Artifact]]
) -> tuple[dict[str, Any], list[str]]:
    """Inputs of a step as artifacts or refs, and the earlier steps still to run."""
    step = loaded.recipe.steps[index]
    stage = get_stage(step.uses)
    step_names = {s.name for s in loaded.recipe.steps[:index]}
    resolved: dict[str, Any] = {}
    waiting: list[str] = []
    for input_name, value in step.inputs.items():
        items = []
        for ref in value if isinstance(value, list) else [value]:
            step_name, _, output = ref.partition(".")
            if step_name not in step_names:
                items.append(ref)  # an artifact ref from the workspace
                continue
            if step_name not in outputs:
                waiting.append(step_name)
                continue
            produced = outputs[step_name]
            wanted_kind = stage.inputs[input_name].kind
            if output:
                if output not in produced:
                    raise loaded.error(
                        f"step {step_name!r} has no output {output!r} (it has {', '.join(produced)})",
                        "steps",
                        index,
                        "inputs",
                        input_name,
                    )
                items.append(produced[output])
            else:
                matching = [a for a in produced.values() if a.kind == wanted_kind]
                if len(matching) != 1:
                    raise loaded.error(
                        f"step {step_name!r} has {len(matching)} {wanted_kind} outputs; "
                        f"name one as {step_name}.OUTPUT",
                        "steps",
                        index,
                        "inputs",
                        input_name,
                    )
                items.append(matching[0])
        resolved[input_name] = items if isinstance(value, list) else (items[0] if items else None)
    return resolved, waiting


def plan(workspace: Workspace, loaded: LoadedRecipe) -> list[PlannedStep]:
    """What `execute` would do: which steps are reused and which run."""
    planned: list[PlannedStep] = []
    outputs: dict[str, dict[str, Artifact]] = {}
    for index, step in enumerate(loaded.recipe.steps):
        inputs, waiting = _step_inputs(loaded, index, outputs)
        if waiting:
            planned.append(
                PlannedStep(
                    step.name, step.uses, "run", detail=f"after {', '.join(sorted(set(waiting)))}"
                )
            )
            continue
        seed = step.seed if step.seed is not None else loaded.recipe.seed
        try:
            *_, key = prepare(workspace, step.uses, step.with_, inputs, seed)
        except ForgeError as exc:
            raise loaded.error(str(exc), "steps", index, hint=exc.hint) from exc
        reusable = find_reusable(workspace, key)
        if reusable:
            outputs[step.name] = reusable.outputs
            planned.append(
                PlannedStep(
                    step.name,
                    step.uses,
                    "reuse",
                    key,
                    f"from {reusable.run_id}",
                    outputs=reusable.outputs,
                )
            )
        else:
            planned.append(PlannedStep(step.name, step.uses, "run", key))
    return planned


def execute(
    workspace: Workspace,
    loaded: LoadedRecipe,
    *,
    on_step: Callable[[PlannedStep], None] | None = None,
    quiet: bool = False,
    force: bool = False,
) -> list[PlannedStep]:
    """Run the recipe's steps in order, reusing every step whose run already succeeded
    (unless `force`: then every step runs again, which also checks determinism)."""
    done: list[PlannedStep] = []
    outputs: dict[str, dict[str, Artifact]] = {}
    run = run_stage
    launched = launch_rank()[1] > 1
    if launched:  # torchrun / accelerate launch: every process runs this recipe
        from forgeml.train.distributed import run_step_on_this_rank

        if force:
            raise InputError("a recipe reruns its steps (force) in one process, not a launch")
        run = run_step_on_this_rank
    for index, step in enumerate(loaded.recipe.steps):
        inputs, _ = _step_inputs(loaded, index, outputs)
        seed = step.seed if step.seed is not None else loaded.recipe.seed
        try:
            result = run(
                workspace,
                step.uses,
                step.with_,
                inputs,
                seed=seed,
                recipe=loaded.recipe.name,
                step=step.name,
                quiet=quiet,
                force=force,
            )
        except InputError as exc:
            if exc.path:  # already located in a data file: keep that location
                raise
            raise loaded.error(str(exc), "steps", index, hint=exc.hint) from exc
        outputs[step.name] = result.outputs
        planned = PlannedStep(
            step.name,
            step.uses,
            "reuse" if result.reused else "run",
            result.key,
            result=result,
            outputs=result.outputs,
        )
        done.append(planned)
        if on_step:
            on_step(planned)
    if launched:
        from forgeml.train.distributed import leave_process_group

        leave_process_group()
    return done
