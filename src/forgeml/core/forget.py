"""Data deletion: forget a dataset, erase its bytes and block everything made from it.

    forgeml data forget helpdesk --reason "GDPR #42" [--purge-models] [--dry-run]

1. Every artifact derived from the dataset (lineage, downward) is marked forgotten, in
   one transaction: from then on `Registry.resolve(..., purpose=...)` and
   `Registry.ensure_usable` refuse it, naming the request, wherever it would be used
   (serve, promote, alias, export, eval, any stage's input, fine-tuning, reproduce).
2. The bytes are erased: the dataset and every derived artifact that holds data
   (datasets, mixtures, rejects, reports, evals), the uploads (`/v1/files`) it was
   ingested from, and the scratch directories of the runs that read it. Weights
   (models, adapters, exports, tokenizers) stay on disk, unusable, unless
   `purge_models`, which erases them and their training checkpoints too.
3. Each erased thing leaves a `tombstones` row (kind, sha256, size, reason, when,
   who), and the audit log records the request by artifact hashes and counts, never
   by the names or file names that may themselves be personal data.

Running it again finishes an interrupted erasure: marking comes first, and each step
skips what is already gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.lineage import downstream, flatten, upstream_runs
from forgeml.core.registry import current_actor
from forgeml.core.schema import Artifact, StoredFile, Tombstone, utcnow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

# Derived artifacts kept on disk (unusable) unless --purge-models: the rest hold data.
WEIGHT_KINDS = ("model", "adapter", "export", "tokenizer")


@dataclass
class ForgetPlan:
    """What a deletion request marks, erases and blocks (also what --dry-run shows)."""

    target: Artifact
    reason: str
    purge_models: bool
    marked: list[Artifact] = field(default_factory=list)  # newly marked forgotten
    blocked: list[Artifact] = field(default_factory=list)  # every derived artifact, refused
    erased: list[Artifact] = field(default_factory=list)  # artifacts whose bytes go
    uploads: list[StoredFile] = field(default_factory=list)  # uploads it came from
    run_ids: list[str] = field(default_factory=list)  # runs whose scratch directories go

    @property
    def erased_bytes(self) -> int:
        return sum(a.size_bytes for a in self.erased) + sum(f.bytes for f in self.uploads)

    def as_dict(self, dry_run: bool = False) -> dict[str, Any]:
        return {
            "forgotten": self.target.ref,
            "reason": self.reason,
            "dry_run": dry_run,
            "purge_models": self.purge_models,
            "affected": [a.ref for a in self.marked],
            "blocked": [a.ref for a in self.blocked],
            "erased": [a.ref for a in self.erased] + [f.id for f in self.uploads],
            "erased_bytes": self.erased_bytes,
            "kept_unusable": [
                a.ref for a in self.blocked if a.kind in WEIGHT_KINDS and a not in self.erased
            ],
            "run_dirs_erased": self.run_ids,
        }


def plan_forget(
    workspace: Workspace, artifact: Artifact, reason: str, purge_models: bool = False
) -> ForgetPlan:
    """Work out what forgetting `artifact` does, changing nothing."""
    tree = downstream(workspace, artifact)
    derived = {node["sha256"] + node["kind"] for node in flatten(tree, "used_by")}
    with workspace.registry.session() as session:
        rows = [a for a in session.scalars(select(Artifact)) if a.sha256 + a.kind in derived]
        session.expunge_all()
    plan = ForgetPlan(artifact, reason, purge_models)
    plan.blocked = sorted(rows, key=lambda a: a.id)
    plan.marked = [a for a in plan.blocked if a.forgotten_at is None]
    erasable = [a for a in plan.blocked if purge_models or a.kind not in WEIGHT_KINDS]
    plan.erased = [a for a in erasable if workspace.store.holds(a.kind, a.sha256)]
    plan.uploads = _uploads_behind(workspace, artifact)
    kept = {a.sha256 + a.kind for a in plan.blocked if a not in erasable}
    outputs = _run_outputs(tree)
    if artifact.run_id:  # the run that made the dataset: its scratch holds the data too
        outputs.setdefault(artifact.run_id, set()).add(artifact.sha256 + artifact.kind)
    plan.run_ids = sorted(
        run_id
        for run_id, made in outputs.items()
        if not made & kept and workspace.run_dir(run_id).exists()
    )
    return plan


def forget(
    workspace: Workspace,
    artifact: Artifact,
    reason: str,
    *,
    purge_models: bool = False,
    dry_run: bool = False,
) -> ForgetPlan:
    """Mark, erase and tombstone what `plan_forget` finds; with `dry_run`, only plan."""
    plan = plan_forget(workspace, artifact, reason, purge_models)
    if dry_run:
        return plan
    registry = workspace.registry
    with registry.session() as session:  # first: from this commit on, every use is refused
        for row in plan.marked:
            stored = session.get(Artifact, row.id)
            stored.forgotten_at, stored.forgotten_reason = (
                utcnow(),
                f"{reason} (via {artifact.ref})",
            )
            row.forgotten_at, row.forgotten_reason = stored.forgotten_at, stored.forgotten_reason
    for row in plan.erased:
        workspace.store.erase(workspace.root / row.path)
    for upload in plan.uploads:
        workspace.store.erase((workspace.root / upload.path).parent)  # files/<id>/
    for run_id in plan.run_ids:
        workspace.store.erase(workspace.run_dir(run_id))
    actor = current_actor()
    with registry.session() as session:
        for row in plan.erased:
            stored = session.get(Artifact, row.id)
            session.add(_tombstone(row.kind, row.sha256, row.size_bytes, row.ref, stored, actor))
        for upload in plan.uploads:
            stored = session.get(StoredFile, upload.id)
            stored.deleted_at = utcnow()
            stored.filename, stored.details = "(erased)", {}  # a file name can be personal data
            session.add(
                Tombstone(
                    kind="file",
                    sha256=upload.sha256,
                    size_bytes=upload.bytes,
                    ref=upload.id,
                    reason=f"{reason} (via {artifact.ref})",
                    erased_by=actor,
                )
            )
        registry.audit(  # by hashes and counts: names and file names may be personal data
            session,
            "data.forget",
            artifact.ref,
            reason=reason,
            affected=[a.ref for a in plan.marked],
            erased=[a.ref for a in plan.erased] + [f.id for f in plan.uploads],
            erased_bytes=plan.erased_bytes,
            run_dirs_erased=len(plan.run_ids),
            purge_models=purge_models,
        )
    return plan


def tombstones(workspace: Workspace, limit: int = 200) -> list[Tombstone]:
    query = select(Tombstone).order_by(Tombstone.id.desc()).limit(limit)
    with workspace.registry.session() as session:
        return list(session.scalars(query))[::-1]


def _tombstone(kind, sha256, size, ref, stored: Artifact, actor: str) -> Tombstone:
    return Tombstone(
        kind=kind,
        sha256=sha256,
        size_bytes=size,
        ref=ref,
        reason=stored.forgotten_reason or "",
        erased_by=actor,
    )


def _uploads_behind(workspace: Workspace, artifact: Artifact) -> list[StoredFile]:
    """Uploaded files (`/v1/files`) read by any run in the artifact's lineage."""
    hashes = {
        source["sha256"]
        for run in upstream_runs(workspace, artifact)
        for source in run.sources or []
        if source.get("sha256")
    }
    if not hashes:
        return []
    query = select(StoredFile).where(StoredFile.sha256.in_(hashes), StoredFile.deleted_at.is_(None))
    with workspace.registry.session() as session:
        uploads = list(session.scalars(query.order_by(StoredFile.created_at)))
        session.expunge_all()
    return uploads


def _run_outputs(tree: dict[str, Any]) -> dict[str, set[str]]:
    """{run id: sha256+kind of each output} for every run of a downstream tree."""
    outputs: dict[str, set[str]] = {}

    def visit(node: dict[str, Any]) -> None:
        for use in node.get("used_by") or []:
            made = outputs.setdefault(use["run"]["id"], set())
            for output in use["outputs"]:
                made.add(output["sha256"] + output["kind"])
                visit(output)

    visit(tree)
    return outputs
