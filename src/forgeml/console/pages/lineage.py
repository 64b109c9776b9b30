"""Lineage: up from any artifact or model to the raw files and their hashes, or down
from a dataset to every artifact, model version and deployment made from it. The same
`core.lineage` queries as `forgeml lineage`; forgotten artifacts are marked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from forgeml.console.render import ConsoleRoute, page
from forgeml.core.lineage import downstream, flatten, upstream
from forgeml.core.schema import Artifact, Deployment

router = APIRouter(route_class=ConsoleRoute)


@router.get("/ui/lineage")
def lineage_index(request: Request, ref: str | None = None):
    workspace = request.app.state.workspace
    if ref:
        from fastapi.responses import RedirectResponse

        return RedirectResponse(f"/ui/lineage/{ref.strip()}", status_code=303)
    named = workspace.registry.list_versions(kind=None)
    datasets = workspace.registry.list_artifacts("dataset", limit=50)
    return page(request, "lineage_index.html", active="lineage", named=named, datasets=datasets)


def _forgotten(workspace, refs: set[str]) -> dict[str, str]:
    with workspace.registry.reading() as session:
        rows = session.scalars(select(Artifact).where(Artifact.forgotten_at.is_not(None)))
        return {a.ref: a.forgotten_reason or "" for a in rows if a.ref in refs}


def _deployments(workspace, refs: set[str]) -> list[dict[str, Any]]:
    with workspace.registry.reading() as session:
        rows = session.execute(
            select(Deployment, Artifact).join(Artifact, Deployment.artifact_id == Artifact.id)
        ).all()
        return [
            {
                "ref": a.ref,
                "name": d.model_ref,
                "status": d.status,
                "endpoint": d.endpoint,
                "started_at": d.started_at,
            }
            for d, a in rows
            if a.ref in refs
        ]


@router.get("/ui/lineage/{ref:path}")
def lineage(request: Request, ref: str, direction: str = "up"):
    workspace = request.app.state.workspace
    artifact = workspace.registry.resolve(ref)  # looking is allowed even when forgotten
    down = direction == "down"
    tree = downstream(workspace, artifact) if down else upstream(workspace, artifact)
    nodes = flatten(tree, "used_by" if down else "inputs")
    refs = {n["ref"] for n in nodes}
    return page(
        request,
        "lineage.html",
        active="lineage",
        ref=ref,
        artifact=artifact,
        down=down,
        tree=tree,
        affected=[n for n in nodes if n["ref"] != artifact.ref],
        forgotten=_forgotten(workspace, refs),
        deployments=_deployments(workspace, refs) if down else [],
    )
