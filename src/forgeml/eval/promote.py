"""Promotion: move an alias to a model version only when its gates pass (or by force).

    forgeml models promote my-model:4 --alias prod
    forgeml models promote my-model:4 --alias prod --force --reason "hotfix, evals pending"

The candidate's latest `eval.run` evaluation is checked against every gate (see
gates.py); the alias's current holder is judged by its eval most comparable to the
candidate's. Every attempt is audited: `model.promote` with the verdicts (and, when
forced, the reason and the gates overridden), or `model.promote.refused`. The alias
itself moves through `Registry.set_alias`, which audits `alias.set`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import InputError
from forgeml.core.schema import Alias, Version
from forgeml.eval.gates import (
    Baseline,
    GateFailed,
    GateResult,
    GateSpec,
    check_gates,
    failure_message,
    parse_gates,
)
from forgeml.eval.history import EvalRecord, comparable_eval, latest_eval

if TYPE_CHECKING:
    from forgeml.core.schema import Artifact
    from forgeml.core.workspace import Workspace


@dataclass
class Promotion:
    name: str
    version: int
    alias: str
    previous_version: int | None
    forced: bool
    reason: str
    eval_ref: str | None
    gates: list[GateResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": f"{self.name}:{self.version}",
            "alias": self.alias,
            "previous_version": self.previous_version,
            "forced": self.forced,
            "reason": self.reason,
            "eval": self.eval_ref,
            "gates": [g.to_dict() for g in self.gates],
        }


def resolve_version(workspace: Workspace, ref: str) -> tuple[str, int, Artifact]:
    """(name, version number, artifact) for NAME, NAME:N, NAME@ALIAS or KIND/SHA."""
    artifact = workspace.registry.resolve(ref, kind="model", purpose="be promoted")
    name = ref.split("@", 1)[0].split(":", 1)[0]
    with workspace.registry.session() as session:
        versions = list(
            session.scalars(
                select(Version)
                .where(Version.artifact_id == artifact.id)
                .order_by(Version.version.desc())
            )
        )
    mine = [v for v in versions if v.name == name] or versions
    names = sorted({v.name for v in mine})
    if not mine:
        raise InputError(
            f"{artifact.ref} has no name, so no alias can point at it",
            hint="Name models when training them (--name), then promote NAME:VERSION.",
        )
    if len(names) > 1:
        raise InputError(f"{artifact.ref} is named {', '.join(names)}: say which, as NAME:VERSION")
    return mine[0].name, mine[0].version, artifact


def alias_holder(workspace: Workspace, name: str, alias: str) -> tuple[int, Artifact] | None:
    """(version number, artifact) that NAME@ALIAS points at, or None if unset."""
    with workspace.registry.session() as session:
        row = session.scalars(select(Alias).where(Alias.name == name, Alias.alias == alias)).first()
        if row is None:
            return None
        version = session.get(Version, row.version_id)
    return version.version, workspace.registry.resolve(f"{name}:{version.version}")


def gate_specs(workspace: Workspace, candidate: EvalRecord | None) -> list[tuple[str, GateSpec]]:
    """(source, spec) of every gate set that applies: the workspace's and the eval step's."""
    specs = []
    if "gates" in workspace.settings:
        specs.append(
            ("forgeml.yaml", parse_gates(workspace.settings["gates"], str(workspace.config_path)))
        )
    if candidate is not None and candidate.run.params.get("gates"):
        where = f"{candidate.run.recipe or 'eval'} step {candidate.run.step or candidate.run.id}"
        specs.append((where, parse_gates(candidate.run.params["gates"], where)))
    return [(source, spec) for source, spec in specs if not spec.empty()]


def evaluate_promotion(
    workspace: Workspace, name: str, artifact: Artifact, alias: str
) -> tuple[EvalRecord | None, list[GateResult]]:
    """The candidate's latest eval and every gate's verdict on it (nothing is changed)."""
    candidate = latest_eval(workspace, artifact)
    specs = gate_specs(workspace, candidate)
    if not specs:
        return candidate, []
    if candidate is None:
        return None, [
            GateResult(
                "evaluation",
                "failed",
                f"{name} has no evaluation; run `forgeml eval run {artifact.ref} --suite ...`",
            )
        ]
    baselines: dict[str, Baseline] = {}

    def baseline_for(other_alias: str) -> Baseline:
        if other_alias not in baselines:
            holder = alias_holder(workspace, name, other_alias)
            if holder is None:
                baselines[other_alias] = None
            else:
                version, model = holder
                record = comparable_eval(workspace, model, candidate.data)
                baselines[other_alias] = (f"{name}:{version}", record.data if record else None)
        return baselines[other_alias]

    results: list[GateResult] = []
    for source, spec in specs:
        results += check_gates(spec, candidate.data, baseline_for, alias, source)
    return candidate, results


def promote(
    workspace: Workspace, ref: str, alias: str, *, force: bool = False, reason: str = ""
) -> Promotion:
    """Point NAME@ALIAS at the model REF names, if its gates pass (or `force`)."""
    if force and not reason.strip():
        raise InputError("--force needs --reason: the audit log records why gates were overridden")
    name, version, artifact = resolve_version(workspace, ref)
    holder = alias_holder(workspace, name, alias)
    candidate, results = evaluate_promotion(workspace, name, artifact, alias)
    failed = [r for r in results if r.status == "failed"]
    promotion = Promotion(
        name=name,
        version=version,
        alias=alias,
        previous_version=holder[0] if holder else None,
        forced=bool(failed) and force,
        reason=reason,
        eval_ref=candidate.artifact.ref if candidate else None,
        gates=results,
    )
    target = f"{name}@{alias}"
    if failed and not force:
        with workspace.registry.session() as session:
            workspace.registry.audit(
                session, "model.promote.refused", target, **promotion.to_dict()
            )
        raise GateFailed(
            f"not promoting {name}:{version} to @{alias}: " + failure_message(results), results
        )
    workspace.registry.set_alias(name, alias, version, reason)
    with workspace.registry.session() as session:
        details = promotion.to_dict()
        if failed:
            details["overridden"] = [r.gate for r in failed]
        workspace.registry.audit(
            session,
            "model.promote.forced" if promotion.forced else "model.promote",
            target,
            **details,
        )
    return promotion
