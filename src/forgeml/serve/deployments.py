"""`deployments` rows: which model the server held, from when to when.

A row is written when a model starts serving (at server start, or when a request
loads it on demand) and closed when it stops (server shutdown, or an on-demand model
unloaded to make room), so the registry knows what was in production when.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from forgeml.core.schema import Deployment, utcnow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace
    from forgeml.serve.served_models import ServedModel
    from forgeml.serve.settings import ServeSettings


def start_deployments(
    workspace: Workspace,
    models: Iterable[ServedModel],
    settings: ServeSettings,
    **config: Any,
) -> list[int]:
    """One running row per model; `config` adds to the recorded settings."""
    registry = workspace.registry
    ids = []
    with registry.session() as session:
        for served in models:
            deployment = Deployment(
                model_ref=served.id,
                artifact_id=served.artifact_id,
                engine=served.engine.name,
                endpoint=settings.endpoint,
                status="running",
                config={**settings.model_dump(mode="json"), **config},
            )
            session.add(deployment)
            session.flush()
            ids.append(deployment.id)
            registry.audit(
                session,
                "deployment.start",
                served.id,
                deployment=deployment.id,
                artifact=served.artifact_ref,
            )
    return ids


def stop_deployments(
    workspace: Workspace, ids: Iterable[int], status: str = "stopped", reason: str | None = None
) -> None:
    """End running rows: `stopped` (unloaded, server stopped) or `withdrawn` (its model was
    forgotten while served, `reason` the deletion request's). A row already ended keeps
    its status and time."""
    registry = workspace.registry
    with registry.session() as session:
        for deployment_id in ids:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None and deployment.status == "running":
                deployment.status, deployment.stopped_at = status, utcnow()
                details = {"reason": reason} if reason else {}
                registry.audit(
                    session,
                    f"deployment.{'stop' if status == 'stopped' else status}",
                    deployment.model_ref,
                    deployment=deployment_id,
                    **details,
                )
