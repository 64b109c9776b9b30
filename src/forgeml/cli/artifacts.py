"""`forgeml artifacts`: list, show and verify what is in the store."""

from __future__ import annotations

import typer

from forgeml.cli.output import console, emit, options, short_time, table

app = typer.Typer(
    help="List, show and verify artifacts in the workspace's store.", no_args_is_help=True
)


@app.command("list")
def list_artifacts(
    ctx: typer.Context,
    kind: str | None = typer.Option(None, help="Only this kind (dataset, model, report, ...)."),
    limit: int = typer.Option(200, help="Show at most this many, newest last."),
) -> None:
    """List artifacts, oldest first."""
    workspace = options(ctx).open()
    rows = workspace.registry.list_artifacts(kind, limit)
    data = [
        {
            "ref": a.ref,
            "kind": a.kind,
            "sha256": a.sha256,
            "size_bytes": a.size_bytes,
            "files": a.file_count,
            "run_id": a.run_id,
            "created_at": a.created_at.isoformat(),
            "path": str(workspace.root / a.path),
        }
        for a in rows
    ]
    emit(
        ctx,
        data,
        lambda: table(
            None,
            ["ref", "kind", "size", "files", "made by", "created"],
            [
                [
                    a.ref,
                    a.kind,
                    _size(a.size_bytes),
                    a.file_count,
                    a.run_id or "-",
                    short_time(a.created_at),
                ]
                for a in rows
            ],
        ),
    )


@app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="KIND/SHA-PREFIX, NAME, NAME:N or NAME@ALIAS."),
) -> None:
    """Show an artifact's manifest and where it lives."""
    workspace = options(ctx).open()
    artifact = workspace.registry.resolve(ref)
    path = workspace.local_path(artifact)  # fetched from the shared store if only there
    manifest = workspace.store.manifest(artifact.kind, artifact.sha256)
    data = {**manifest, "ref": artifact.ref, "path": str(path)}

    def render() -> None:
        console.print(f"[bold]{artifact.ref}[/]  {data['path']}")
        console.print(
            f"sha256 {artifact.sha256}  {_size(artifact.size_bytes)} in {artifact.file_count} files"
        )
        console.print(f"made by {artifact.run_id or '(imported)'} at {manifest['created_at']}")
        if manifest.get("meta"):
            for key, value in manifest["meta"].items():
                console.print(f"  {key}: {value}", highlight=False, markup=False)
        table(
            None,
            ["file", "size", "sha256"],
            [[f["path"], _size(f["size"]), f["sha256"][:16]] for f in manifest["files"]],
        )

    emit(ctx, data, render)


@app.command("verify")
def verify(
    ctx: typer.Context, ref: str | None = typer.Argument(None, help="One artifact; default all.")
) -> None:
    """Re-hash stored artifacts and report any whose files no longer match their manifest."""
    workspace = options(ctx).open()
    targets = (
        [workspace.registry.resolve(ref)]
        if ref
        else workspace.registry.list_artifacts(limit=100000)
    )
    if ref:  # one artifact: fetched from the shared store first if it is only there
        workspace.local_path(targets[0])
    elsewhere = [a.ref for a in targets if not _here(workspace, a)]
    report = {
        a.ref: workspace.store.verify(a.kind, a.sha256) for a in targets if a.ref not in elsewhere
    }
    bad = {ref: problems for ref, problems in report.items() if problems}
    emit(
        ctx,
        {"checked": len(report), "problems": bad, "only_in_shared_store": len(elsewhere)},
        lambda: (
            console.print(
                f"{len(report)} artifacts checked, {len(bad)} with problems"
                + (
                    f"; {len(elsewhere)} only in the shared store (checked when fetched)"
                    if elsewhere
                    else ""
                )
            ),
            [console.print(f"[red]{r}[/]: " + "; ".join(p), markup=True) for r, p in bad.items()],
        ),
    )
    if bad:
        raise typer.Exit(1)


@app.command("publish")
def publish(ctx: typer.Context) -> None:
    """Copy this folder's artifacts and uploads that the shared store (artifact_store)
    lacks to it: what was made before the store was set, or while it was unreachable."""
    from forgeml.core.share import publish_workspace

    workspace = options(ctx).open()
    counts = publish_workspace(workspace)
    emit(
        ctx,
        counts,
        lambda: (
            console.print(
                f"{counts['published']} published, {counts['already_there']} already in "
                f"{workspace.remote_store.url}, {len(counts['damaged'])} damaged (not published)"
            ),
            [
                console.print(f"[red]{d['ref']}[/]: " + "; ".join(d["problems"]))
                for d in counts["damaged"]
            ],
        ),
    )
    if counts["damaged"]:
        raise typer.Exit(1)


def _here(workspace, artifact) -> bool:
    """In this workspace folder, or expected to be (no shared store to be elsewhere)."""
    return workspace.remote_store is None or workspace.store.exists(artifact.kind, artifact.sha256)


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
