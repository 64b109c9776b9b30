"""Registry look-ups for evaluations: which evals a model has, and what they say.

An evaluation is linked to its model by lineage, not by a column: the `eval.run` run
that made the eval artifact read the model under the input role `model`. So "the
latest eval of my-model:3" is a query over `lineage_edges`, and needs no migration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import InputError
from forgeml.core.schema import Artifact, LineageEdge, Run, Version

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

EVAL_STAGE = "eval.run"
EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class EvalRecord:
    artifact: Artifact
    run: Run
    data: dict[str, Any]  # eval.json

    @property
    def metrics(self) -> dict[str, float]:
        return self.data.get("metrics", {})


def artifact_label(workspace: Workspace, artifact: Artifact) -> str:
    """`name:version` of the artifact's newest name, else its ref."""
    with workspace.registry.session() as session:
        version = session.scalars(
            select(Version)
            .where(Version.artifact_id == artifact.id)
            .order_by(Version.created_at.desc(), Version.id.desc())
        ).first()
        return f"{version.name}:{version.version}" if version else artifact.ref


def read_eval(workspace: Workspace, artifact: Artifact) -> dict[str, Any]:
    path = workspace.local_path(artifact) / EVAL_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable evaluation: {exc}", path=path) from exc


def evals_of(workspace: Workspace, model: Artifact) -> list[EvalRecord]:
    """Every `eval.run` evaluation of `model` still in the store, newest first."""
    readers = select(LineageEdge.run_id).where(
        LineageEdge.artifact_id == model.id,
        LineageEdge.direction == "input",
        LineageEdge.role == "model",
    )
    with workspace.registry.session() as session:
        rows = session.execute(
            select(Run, Artifact)
            .join(LineageEdge, LineageEdge.run_id == Run.id)
            .join(Artifact, LineageEdge.artifact_id == Artifact.id)
            .where(
                Run.id.in_(readers),
                Run.stage == EVAL_STAGE,
                Run.status == "succeeded",
                LineageEdge.direction == "output",
                Artifact.kind == "eval",
            )
            .order_by(Run.finished_at.desc(), Artifact.id.desc())
        ).all()
    return [
        EvalRecord(artifact, run, read_eval(workspace, artifact))
        for run, artifact in rows
        if workspace.store.exists(artifact.kind, artifact.sha256)
    ]


def latest_eval(workspace: Workspace, model: Artifact) -> EvalRecord | None:
    found = evals_of(workspace, model)
    return found[0] if found else None


def suite_hashes(data: dict[str, Any]) -> list[str]:
    return sorted(suite["sha256"] for suite in data.get("suites", []))


def perplexity_data(data: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a perplexity was measured on, for telling comparable numbers apart."""
    measured = data.get("perplexity")
    if not measured:
        return None
    return (
        measured["data"]["sha256"],
        measured["data"]["split"],
        measured["context"],
        measured["stride"],
    )


def comparable_eval(
    workspace: Workspace, model: Artifact, like: dict[str, Any]
) -> EvalRecord | None:
    """The newest eval of `model` measured on what `like` was (same suites, same
    perplexity data); failing that, the newest on the same suites; else the newest."""
    found = evals_of(workspace, model)
    if not found:
        return None

    def fit(record: EvalRecord) -> tuple[bool, bool]:
        return (
            suite_hashes(record.data) == suite_hashes(like),
            perplexity_data(record.data) == perplexity_data(like),
        )

    # max keeps the first of equals, and `found` is newest first.
    return max(found, key=lambda record: (all(fit(record)), fit(record)[0]))
