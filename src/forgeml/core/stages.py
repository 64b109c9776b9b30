"""Stages: plain functions with a typed parameter model and declared artifact kinds.

    @stage("data.ingest", params=IngestParams, outputs={"dataset": "dataset"},
           sources=lambda p: p.paths)
    def ingest(ctx: StageContext, params: IngestParams) -> dict[str, StoredArtifact]: ...

`inputs` maps an input name to an artifact kind: "dataset" (exactly one),
"dataset?" (optional), "dataset[]" (one or more). `sources` names the raw files a stage
reads from outside the workspace; their hashes join the run key and the lineage.
`registry_sources` does the same for registry rows a stage reads (production feedback):
it returns source records (`path` naming the rows, `sha256` of their content, `size`),
so new rows mean a new run key instead of a stale reuse.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python

from forgeml.core.errors import InputError
from forgeml.core.hashing import sha256_file, sha256_json

# Modules whose import registers the built-in stages, by stage-name prefix. Imported
# lazily, by name, so the core never depends on the stage packages, and a command that
# runs a data stage does not pay for importing torch.
BUILTIN_STAGE_MODULES: dict[str, str] = {
    "data.": "forgeml.data.stages",
    "tokenizer.": "forgeml.train.stages",
    "train.": "forgeml.train.stages",
    "eval.": "forgeml.eval.stages",
    "export.": "forgeml.export.stages",
    "monitor.": "forgeml.monitor.stages",
}


class StageParams(BaseModel):
    """Base for every stage's parameters: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def content_dump(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The parameters as an artifact's own files record them: JSON, with every path
        reduced to its name.

        The same recipe on the same files must give the same bytes in any folder; where
        a file lay on this machine belongs in the run record (whose parameters keep the
        full path), and the file's content is hashed into the run key.
        """
        return _without_folders(self.model_dump(mode="python", exclude=exclude))


def _without_folders(value: Any) -> Any:
    if isinstance(value, Path):
        return value.name
    if isinstance(value, dict):
        return {key: _without_folders(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_folders(item) for item in value]
    return to_jsonable_python(value)


@dataclass(frozen=True)
class InputSpec:
    kind: str
    many: bool = False
    optional: bool = False

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        if text.endswith("[]"):
            return cls(text[:-2], many=True)
        if text.endswith("?"):
            return cls(text[:-1], optional=True)
        return cls(text)

    def describe(self) -> str:
        return self.kind + ("[]" if self.many else "?" if self.optional else "")


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[..., dict[str, Any]]
    params: type[StageParams]
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    sources: Callable[[Any], list[Path]] | None = None
    registry_sources: Callable[[Any, Any], list[dict[str, Any]]] | None = None
    description: str = ""
    # Trains on every process of a launch (torchrun, accelerate launch): under a launcher,
    # every rank runs it (rank 0 records the run); other stages run on rank 0 alone.
    every_rank: bool = False

    @property
    def code_sha256(self) -> str:
        """Hash of the code a stage runs: changed code means a new run key."""
        return library_code_sha256(self.fn)

    def validate_params(self, values: dict[str, Any] | BaseModel) -> StageParams:
        if isinstance(values, self.params):
            return values
        from pydantic import ValidationError

        if isinstance(values, BaseModel):
            values = values.model_dump()
        try:
            return self.params.model_validate(values)
        except ValidationError as exc:
            raise InputError(
                f"invalid parameters for stage {self.name}: " + format_validation_error(exc),
                hint=f"See `forgeml stages show {self.name}` for its parameters.",
            ) from exc


# The packages whose code decides what a stage produces. A stage's helpers live across
# them (a training stage uses models/ and data/), so all of them count; the CLI and the
# server do not shape artifacts and are left out, so editing them reuses finished runs.
LIBRARY_PACKAGES = ("core", "data", "models", "train", "eval", "export")


@cache
def _package_sha256(root: str) -> str:
    return sha256_json(
        [(p.relative_to(root).as_posix(), sha256_file(p)) for p in sorted(Path(root).rglob("*.py"))]
    )


def library_code_sha256(fn: Callable) -> str:
    """forgeml's library code, plus the stage's own module when it lives elsewhere."""
    forgeml_root = Path(__file__).resolve().parents[1]
    parts = [_package_sha256(str(forgeml_root / name)) for name in LIBRARY_PACKAGES]
    module = inspect.getsourcefile(fn)
    if module and not any(
        forgeml_root / name in Path(module).resolve().parents for name in LIBRARY_PACKAGES
    ):  # a stage outside those packages (monitor, a user's own) adds its module's code
        parts.append(sha256_file(module))
    return sha256_json(parts)


_STAGES: dict[str, Stage] = {}
_imported: set[str] = set()


def stage(
    name: str,
    *,
    params: type[StageParams],
    outputs: dict[str, str],
    inputs: dict[str, str] | None = None,
    sources: Callable[[Any], list[Path]] | None = None,
    registry_sources: Callable[[Any, Any], list[dict[str, Any]]] | None = None,
    every_rank: bool = False,
) -> Callable:
    def register(fn: Callable) -> Callable:
        _STAGES[name] = Stage(
            name=name,
            fn=fn,
            params=params,
            inputs={key: InputSpec.parse(kind) for key, kind in (inputs or {}).items()},
            outputs=outputs,
            sources=sources,
            registry_sources=registry_sources,
            description=(fn.__doc__ or "").strip().split("\n")[0],
            every_rank=every_rank,
        )
        return fn

    return register


def _import(module: str) -> None:
    if module in _imported:
        return
    _imported.add(module)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the module exists but a dependency of it is missing
            raise


def get_stage(name: str) -> Stage:
    if name not in _STAGES:
        for prefix, module in BUILTIN_STAGE_MODULES.items():
            if name.startswith(prefix):
                _import(module)
    if name not in _STAGES:
        known = ", ".join(stage.name for stage in list_stages()) or "none"
        raise InputError(f"unknown stage {name!r}", hint=f"Known stages: {known}.")
    return _STAGES[name]


def list_stages() -> list[Stage]:
    for module in BUILTIN_STAGE_MODULES.values():
        _import(module)
    return [_STAGES[name] for name in sorted(_STAGES)]


def format_validation_error(exc: Any) -> str:
    """One line per pydantic error: `field.path: message (got VALUE)`."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        got = error.get("input")
        shown = "" if error["type"] in ("missing",) else f" (got {got!r})"
        lines.append(f"{location}: {error['msg']}{shown}")
    return "; ".join(lines)
