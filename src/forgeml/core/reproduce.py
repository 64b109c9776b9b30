"""Re-execute an artifact's recorded lineage in a scratch workspace and compare hashes.

Two things can break reproducibility, and the report names both: a re-executed run
whose output bytes differ (non-determinism, changed code or data), and a stored
artifact whose files no longer match its manifest (tampering or disk corruption).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.context import record_artifact
from forgeml.core.lineage import upstream_runs
from forgeml.core.runs import environment_record, run_stage
from forgeml.core.schema import Artifact, LineageEdge
from forgeml.core.stages import get_stage
from forgeml.core.store import StoredArtifact

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace


@dataclass
class ArtifactCheck:
    ref: str
    kind: str
    step: str
    recorded_sha256: str
    reproduced_sha256: str | None
    hash_matches: bool
    stored_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.hash_matches and not self.stored_problems


@dataclass
class ReproduceReport:
    target: str
    scratch: str
    checks: list[ArtifactCheck]
    environment_differences: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "scratch": self.scratch,
            "environment_differences": self.environment_differences,
            "artifacts": [{**asdict(c), "ok": c.ok} for c in self.checks],
        }


def _edges(workspace: Workspace, run_id: str, direction: str) -> list[tuple[str, Artifact]]:
    with workspace.registry.session() as session:
        return list(
            session.execute(
                select(LineageEdge.role, Artifact)
                .join(Artifact, LineageEdge.artifact_id == Artifact.id)
                .where(LineageEdge.run_id == run_id, LineageEdge.direction == direction)
                .order_by(LineageEdge.role, LineageEdge.position)
            ).all()
        )


def _import_given(workspace: Workspace, scratch: Workspace, artifact: Artifact) -> Artifact:
    """An artifact no run made (e.g. imported) is taken as given: copy it over."""
    source = workspace.local_path(artifact)
    target = scratch.store.path_for(artifact.kind, artifact.sha256)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)
    stored = StoredArtifact(
        artifact.kind,
        artifact.sha256,
        target,
        artifact.size_bytes,
        artifact.file_count,
        dict(artifact.meta or {}),
    )
    return record_artifact(scratch, stored, None)


def reproduce(
    workspace: Workspace, artifact: Artifact, scratch_dir: Path | None = None, quiet: bool = True
) -> ReproduceReport:
    from forgeml.core.workspace import Workspace

    workspace.registry.ensure_usable(artifact, "be reproduced")  # it would re-make the data
    scratch_dir = Path(scratch_dir or tempfile.mkdtemp(prefix="forgeml-reproduce-"))
    scratch = Workspace.init(scratch_dir, database_url=f"sqlite:///{scratch_dir / 'registry.db'}")
    reproduced: dict[tuple[str, str], Artifact] = {}
    checks: list[ArtifactCheck] = []
    env_diff: dict[str, Any] = {}
    now = environment_record()["packages"]
    for run in upstream_runs(workspace, artifact):
        for name, then in (run.environment or {}).get("packages", {}).items():
            if now.get(name) != then:
                env_diff[name] = {"recorded": then, "now": now.get(name)}
        stage = get_stage(run.stage)
        inputs: dict[str, Any] = {}
        for role, original in _edges(workspace, run.id, "input"):
            key = (original.kind, original.sha256)
            if key not in reproduced:
                reproduced[key] = _import_given(workspace, scratch, original)
            if stage.inputs[role].many:
                inputs.setdefault(role, []).append(reproduced[key])
            else:
                inputs[role] = reproduced[key]
        result = run_stage(scratch, run.stage, run.params, inputs, seed=run.seed, quiet=quiet)
        for role, original in _edges(workspace, run.id, "output"):
            again = result.outputs.get(role)
            if again is not None:
                reproduced[(original.kind, original.sha256)] = again
            checks.append(
                ArtifactCheck(
                    ref=original.ref,
                    kind=original.kind,
                    step=run.step or run.stage,
                    recorded_sha256=original.sha256,
                    reproduced_sha256=again.sha256 if again else None,
                    hash_matches=again is not None and again.sha256 == original.sha256,
                    stored_problems=workspace.store.verify(original.kind, original.sha256),
                )
            )
    return ReproduceReport(artifact.ref, str(scratch_dir), checks, env_diff)
