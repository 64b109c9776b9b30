"""Publishing a workspace's existing artifacts and uploads to its shared store
(`forgeml artifacts publish`): what a workspace made before `artifact_store` was set, or
while the store was unreachable, becomes readable from the other machines. Each artifact
is checked against its manifest first, so a damaged local copy is reported, not shared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forgeml.core.errors import WorkspaceError
from forgeml.core.schema import Artifact, StoredFile

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace


def publish_workspace(workspace: Workspace) -> dict[str, Any]:
    """Copy every artifact and upload this folder holds, and the store lacks, to the
    store; counts of what was published, already there, and damaged (not published)."""
    remote = workspace.remote_store
    if remote is None:
        raise WorkspaceError(
            "this workspace has no shared store to publish to",
            hint="set artifact_store in forgeml.yaml (or FORGEML_ARTIFACT_STORE) first",
        )
    remote.check_writable()
    with workspace.registry.reading() as session:
        artifacts = list(session.scalars(select(Artifact).order_by(Artifact.id)))
        uploads = list(session.scalars(select(StoredFile).where(StoredFile.deleted_at.is_(None))))
    counts: dict[str, Any] = {"published": 0, "already_there": 0, "damaged": []}
    for artifact in artifacts:
        local = workspace.root / artifact.path
        if not workspace.store.exists(artifact.kind, artifact.sha256):
            continue  # erased, or never on this machine
        if remote.has(artifact.path):
            counts["already_there"] += 1
        elif problems := workspace.store.verify(artifact.kind, artifact.sha256):
            counts["damaged"].append({"ref": artifact.ref, "problems": problems})
        else:
            remote.publish_dir(local, artifact.path)
            counts["published"] += 1
    for upload in uploads:
        local = workspace.root / upload.path
        if not local.is_file():
            continue
        if remote.has_file(upload.path):
            counts["already_there"] += 1
        else:
            remote.publish_file(local, upload.path)
            counts["published"] += 1
    return counts
