"""Models: names, versions, aliases; promote and roll back through the gates; the card.

Promotion and rollback call `eval.promote.promote`, as `forgeml models promote` does:
the gates judge the version, a refusal is a page that lists them, and the audit log
records the attempt as the key that made it. A rollback is a promotion of the version
the alias held before.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from forgeml.console.actions import admin_action
from forgeml.console.render import ConsoleRoute, page
from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.schema import Artifact, AuditEntry, Version
from forgeml.eval.card import model_card
from forgeml.eval.history import latest_eval
from forgeml.eval.promote import promote

router = APIRouter(route_class=ConsoleRoute)


@router.get("/ui/models")
def models(request: Request):
    rows = request.app.state.workspace.registry.list_versions(kind="model")
    names: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = names.setdefault(row["name"], {"name": row["name"], "versions": 0, "aliases": []})
        entry["versions"] += 1
        entry["latest"] = row["version"]
        entry["aliases"] += [f"{a} → {row['version']}" for a in row["aliases"]]
    return page(request, "models.html", active="models", models=list(names.values()))


def _versions(workspace, name: str) -> list[dict[str, Any]]:
    rows = workspace.registry.list_versions(name)
    if not rows:
        raise NotFoundError(
            f"there is no model named {name!r} (it may have been renamed or never existed)",
            hint="Pick one from the Models page.",
        )
    with workspace.registry.reading() as session:
        artifacts = {
            a.ref: a
            for a in session.scalars(
                select(Artifact)
                .join(Version, Version.artifact_id == Artifact.id)
                .where(Version.name == name)
            )
        }
    for row in rows:
        artifact = artifacts[row["artifact"]]
        row["forgotten"] = artifact.forgotten_reason if artifact.forgotten_at else None
        record = None if row["forgotten"] else latest_eval(workspace, artifact)
        row["eval"] = record.artifact.ref if record else None
        row["metrics"] = dict(list(record.metrics.items())[:4]) if record else {}
    return rows


def _alias_history(workspace, name: str) -> dict[str, list[int]]:
    """alias -> versions it pointed at, oldest first (from the audit log)."""
    with workspace.registry.reading() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "alias.set", AuditEntry.target.like(f"{name}@%"))
            .order_by(AuditEntry.id)
        )
        history: dict[str, list[int]] = {}
        for entry in entries:
            history.setdefault(entry.target.split("@", 1)[1], []).append(entry.details["version"])
    return history


def _rollback_target(history: list[int]) -> int | None:
    current = history[-1] if history else None
    return next((v for v in reversed(history) if v != current), None)


@router.get("/ui/models/{name}")
def model(request: Request, name: str, event: int | None = None):
    workspace = request.app.state.workspace
    versions = _versions(workspace, name)
    history = _alias_history(workspace, name)
    aliases = [
        {"alias": alias, "version": v, "rollback_to": _rollback_target(history.get(alias, []))}
        for row in versions
        for alias, v in ((a, row["version"]) for a in row["aliases"])
    ]
    promotions = workspace.registry.audit_entries(50, action="model.promote", target=f"{name}@")
    outcome = next((e for e in promotions if e.id == event), None)
    return page(
        request,
        "model.html",
        active="models",
        name=name,
        versions=versions,
        aliases=sorted(aliases, key=lambda a: a["alias"]),
        promotions=promotions[::-1][:10],
        outcome=outcome,
    )


def _promote(request: Request, name: str, version: int, alias: str, force: bool, reason: str):
    workspace = request.app.state.workspace
    promotion = promote(workspace, f"{name}:{version}", alias.strip(), force=force, reason=reason)
    entry = workspace.registry.audit_entries(1, action="model.promote", target=f"{name}@{alias}")
    event = entry[-1].id if entry else ""
    return RedirectResponse(f"/ui/models/{promotion.name}?event={event}#outcome", status_code=303)


@router.post("/ui/models/{name}/promote")
def promote_version(
    request: Request,
    name: str,
    version: int = Form(...),
    alias: str = Form("prod"),
    force: bool = Form(False),
    reason: str = Form(""),
    csrf: str = Form(""),
):
    with admin_action(request, csrf):
        return _promote(request, name, version, alias, force, reason)


@router.post("/ui/models/{name}/rollback")
def rollback(
    request: Request,
    name: str,
    alias: str = Form(...),
    force: bool = Form(False),
    reason: str = Form(""),
    csrf: str = Form(""),
):
    with admin_action(request, csrf):
        workspace = request.app.state.workspace
        target = _rollback_target(_alias_history(workspace, name).get(alias, []))
        if target is None:
            raise InputError(
                f"{name}@{alias} has pointed at only one version: there is nothing to roll back to",
                hint="Promote a version instead.",
            )
        return _promote(request, name, target, alias, force, reason or f"roll back @{alias}")


@router.get("/ui/models/{name}/card")
def card(request: Request, name: str, version: int | None = None):
    workspace = request.app.state.workspace
    _versions(workspace, name)  # a clear page if the name is gone
    ref = f"{name}:{version}" if version else name
    return page(
        request,
        "card.html",
        active="models",
        name=name,
        ref=ref,
        markdown=model_card(workspace, ref),
    )
