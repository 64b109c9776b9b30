"""`forgeml admin ...`: operating a workspace: backup and restore."""

from __future__ import annotations

from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options

app = typer.Typer(help="Operate a workspace: back it up, restore it.", no_args_is_help=True)


@app.command("backup")
def backup(
    ctx: typer.Context,
    archive: Path = typer.Argument(..., help="The .tar.gz to write (atomically)."),
) -> None:
    """Write the registry (every table, one consistent read) and every artifact and
    upload it names to one .tar.gz. Run scratch (checkpoints of finished runs) is left out."""
    from forgeml.core.backup import backup as write_backup

    manifest = write_backup(options(ctx).open(), archive)
    emit(
        ctx,
        {**manifest, "archive": str(archive)},
        lambda: console.print(
            f"wrote {archive}: {sum(manifest['tables'].values())} registry rows, "
            f"{manifest['artifacts']} artifacts, {manifest['files']} uploads"
        ),
    )


@app.command("restore")
def restore(
    ctx: typer.Context,
    archive: Path = typer.Argument(..., help="A .tar.gz made by `forgeml admin backup`."),
    database_url: str = typer.Option(
        None,
        "--database-url",
        help="An empty database for the registry (default: SQLite in the workspace).",
    ),
) -> None:
    """Make a new workspace at --workspace (an empty or new folder) from a backup: the
    registry rows, then every artifact verified against its hash. A SQLite backup can be
    restored onto PostgreSQL and back."""
    from forgeml.core.backup import restore as read_backup

    restored = read_backup(archive, options(ctx).workspace, database_url)
    emit(
        ctx,
        restored,
        lambda: console.print(
            f"restored {restored['workspace']}: {sum(restored['tables'].values())} registry "
            f"rows, {restored['verified_artifacts']} artifacts verified, {restored['files']} uploads"
        ),
    )
