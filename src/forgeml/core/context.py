"""What a stage sees while it runs: its inputs, a place for outputs, logging and metrics."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import ConflictError, RunCancelled
from forgeml.core.registry import forgotten_error
from forgeml.core.schema import Artifact, Run, RunEvent, Tombstone, utcnow
from forgeml.core.store import StoredArtifact

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.run")
CANCEL_POLL_SECONDS = 2.0


@dataclass
class ArtifactWriter:
    """A temp directory a stage fills; `StageContext.commit` turns it into an artifact."""

    kind: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


class StageContext:
    def __init__(
        self,
        workspace: Workspace,
        run: Run,
        inputs: dict[str, Any],
        *,
        quiet: bool = False,
    ) -> None:
        self.workspace = workspace
        self.run_id = run.id
        self.stage_name = run.stage
        self.key = run.key
        self.seed = run.seed
        self.attempt = run.attempt
        self.inputs = inputs
        self.quiet = quiet
        self.work_dir = workspace.run_dir(run.id)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._last_cancel_poll = 0.0

    @property
    def checkpoint_dir(self) -> Path:
        """Survives across attempts of the same run: resume from what is here."""
        path = self.work_dir / "checkpoints"
        path.mkdir(exist_ok=True)
        return path

    def input_path(self, name: str) -> Path:
        artifact = self.inputs[name]
        return self.workspace.local_path(artifact)

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.workspace.local_path(artifact)

    # --- outputs -------------------------------------------------------------------------

    def new_artifact(self, kind: str) -> ArtifactWriter:
        return ArtifactWriter(kind=kind, path=self.workspace.store.new_temp_dir())

    def commit(self, writer: ArtifactWriter) -> Artifact:
        stored = self.workspace.store.commit(writer.path, writer.kind, self.run_id, writer.meta)
        artifact = record_artifact(self.workspace, stored, self.run_id)
        if artifact.forgotten_at is not None:  # the very bytes a deletion request erased
            if _erased(self.workspace, artifact):
                self.workspace.store.erase(stored.path)
            raise forgotten_error(artifact.ref, artifact.forgotten_reason or "", "be made again")
        return artifact

    def name(self, artifact: Artifact, name: str | None) -> None:
        """Give an output a human name: `name` resolves to its newest version."""
        if name:
            with self.workspace.registry.session() as session:
                self.workspace.registry.add_version(session, name, artifact, self.run_id)

    def discard(self, writer: ArtifactWriter) -> None:
        shutil.rmtree(writer.path, ignore_errors=True)

    # --- events --------------------------------------------------------------------------

    def event(self, kind: str, message: str = "", step: int | None = None, **data: Any) -> None:
        with self.workspace.registry.session() as session:
            session.add(
                RunEvent(
                    run_id=self.run_id,
                    attempt=self.attempt,
                    kind=kind,
                    step=step,
                    message=message,
                    data=data,
                )
            )
            run = session.get(Run, self.run_id)
            run.heartbeat_at = utcnow()

    def log(self, message: str, **data: Any) -> None:
        log.info("%s: %s", self.run_id, message)
        self.event("log", message, **data)

    def warn(self, message: str, **data: Any) -> None:
        log.warning("%s: %s", self.run_id, message)
        self.event("warning", message, **data)

    def metric(self, step: int, **values: float) -> None:
        self.event("metric", step=step, **values)

    def set_metrics(self, **values: Any) -> None:
        """Final, summary metrics of the run (shown by `forgeml runs show`)."""
        with self.workspace.registry.session() as session:
            run = session.get(Run, self.run_id)
            run.metrics = {**(run.metrics or {}), **values}

    def cancelled(self) -> bool:
        now = time.monotonic()
        if now - self._last_cancel_poll < CANCEL_POLL_SECONDS:
            return False
        self._last_cancel_poll = now
        with self.workspace.registry.session() as session:
            return bool(session.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)))

    def check_source_unchanged(self, path: str, sha256: str, *, message: str, hint: str) -> None:
        """A registry source (rows a stage reads, hashed into the run key as `path`) read
        again while the stage runs must hash the same: rows arriving in between would make
        the output differ from its key."""
        with self.workspace.registry.session() as session:
            sources = session.get(Run, self.run_id).sources or []
        recorded = next((s["sha256"] for s in sources if s.get("path") == path), None)
        if recorded != sha256:
            raise ConflictError(message, hint=hint)

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise RunCancelled(f"run {self.run_id} was cancelled")


def _erased(workspace: Workspace, artifact: Artifact) -> bool:
    query = select(Tombstone.id).where(
        Tombstone.kind == artifact.kind, Tombstone.sha256 == artifact.sha256
    )
    with workspace.registry.session() as session:
        return session.scalars(query.limit(1)).first() is not None


def record_artifact(workspace: Workspace, stored: StoredArtifact, run_id: str | None) -> Artifact:
    """Register a stored artifact (idempotent: identical content is one row)."""
    with workspace.registry.session() as session:
        artifact = session.scalars(
            select(Artifact).where(Artifact.kind == stored.kind, Artifact.sha256 == stored.sha256)
        ).first()
        if artifact is None:
            artifact = Artifact(
                kind=stored.kind,
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                file_count=stored.file_count,
                path=stored.path.relative_to(workspace.root).as_posix(),
                run_id=run_id,
                meta=stored.meta,
            )
            session.add(artifact)
            session.flush()
            workspace.registry.audit(session, "artifact.create", artifact.ref, run_id=run_id)
        return artifact
