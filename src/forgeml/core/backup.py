"""Backup and restore of a whole workspace: the registry and the bytes it names.

    forgeml -w ws admin backup ws-2026-12-04.tar.gz
    forgeml -w restored admin restore ws-2026-12-04.tar.gz [--database-url postgresql+psycopg://...]

A backup is one gzipped tar:

    forgeml-backup.json      format, forgeml version, schema revision, row counts
    forgeml.yaml             the workspace settings (its database_url is not restored)
    registry/<table>.jsonl   every row of every registry table, in primary-key order
    artifacts/<kind>/<sha>/  every artifact the registry names (immutable, content-addressed)
    files/<id>/              every upload the registry names

The rows are read in one read transaction, so they are consistent with each other;
artifacts are immutable, so copying them after the read is safe. Rows go through the
database's portable types (JSON, ISO times), so a SQLite workspace can be restored onto
PostgreSQL and back. Run scratch (`runs/`: checkpoints of finished runs) is not kept.

Restore makes a new workspace: the folder must be empty (or not exist) and its registry
empty; the schema revision must be the one this forgeml writes. Every artifact is
verified against its hash afterwards. The archive is written atomically and read with
core.safe_tar: no absolute paths, links out of the folder or device files.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import DateTime, Integer, func, select, text

from forgeml import __version__
from forgeml.core import database
from forgeml.core.errors import InputError, WorkspaceError
from forgeml.core.safe_tar import extract_plain
from forgeml.core.schema import Artifact, Base, StoredFile
from forgeml.core.workspace import CONFIG_FILE, Workspace

FORMAT = "forgeml.backup/1"
MANIFEST = "forgeml-backup.json"
BATCH = 1000


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def backup(workspace: Workspace, archive: Path) -> dict[str, Any]:
    """Write the workspace to `archive` (a .tar.gz); returns what it holds."""
    archive = Path(archive)
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write the backup: {exc}", path=archive) from exc
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=archive.parent))
    try:
        counts, artifact_paths, file_paths = _dump_registry(workspace, staging / "registry")
        manifest = {
            "format": FORMAT,
            "forgeml_version": __version__,
            "schema_revision": database.current_revision(workspace.engine),
            "tables": counts,
            "artifacts": len(artifact_paths),
            "files": len(file_paths),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        partial = archive.with_name(f".{archive.name}.partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(staging / MANIFEST, MANIFEST)
            if workspace.config_path.exists():
                tar.add(workspace.config_path, CONFIG_FILE)
            tar.add(staging / "registry", "registry")
            for relative in sorted(artifact_paths | file_paths):
                tar.add(workspace.root / relative, relative)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, archive)
        return manifest
    except OSError as exc:
        raise InputError(f"cannot write the backup: {exc}", path=archive) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dump_registry(workspace: Workspace, folder: Path) -> tuple[dict[str, int], set[str], set[str]]:
    folder.mkdir(parents=True)
    counts: dict[str, int] = {}
    with workspace.registry.reading() as session:  # one consistent snapshot of every table
        for table in Base.metadata.sorted_tables:
            query = select(table).order_by(*table.primary_key.columns)
            with open(folder / f"{table.name}.jsonl", "w", encoding="utf-8") as out:
                count = 0
                for row in session.execute(query.execution_options(yield_per=BATCH)).mappings():
                    out.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
                    count += 1
            counts[table.name] = count
        artifacts = {path for (path,) in session.execute(select(Artifact.path))}
        files = {path for (path,) in session.execute(select(StoredFile.path))}
    present = {p for p in artifacts if (workspace.root / p).is_dir()}  # erased ones are gone
    uploads = {str(Path(p).parent) for p in files if p and (workspace.root / p).is_file()}
    return counts, present, uploads


def restore(archive: Path, root: Path, database_url: str | None = None) -> dict[str, Any]:
    """Make a new workspace at `root` from `archive`; returns counts and verification."""
    archive, root = Path(archive), Path(root)
    if root.exists() and any(root.iterdir()):
        raise WorkspaceError(
            f"{root} is not empty: a restore makes a new workspace",
            hint="Restore into a new folder, then point --workspace at it.",
        )
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            extract_plain(tar, root)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise InputError(f"not a readable forgeml backup: {exc}", path=archive) from exc
    try:
        return _restore_into(root, archive, database_url)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # nothing half-restored stays
        raise


def _restore_into(root: Path, archive: Path, database_url: str | None) -> dict[str, Any]:
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("format") != FORMAT:
        raise InputError(f"not a forgeml backup (no {MANIFEST} of format {FORMAT})", path=archive)
    if manifest["schema_revision"] != database.head_revision():
        raise WorkspaceError(
            f"the backup's registry schema is revision {manifest['schema_revision']}; this "
            f"forgeml writes {database.head_revision()}",
            hint="Restore with the forgeml version that made the backup "
            f"({manifest['forgeml_version']}), then upgrade that workspace.",
        )
    settings = (
        yaml.safe_load((root / CONFIG_FILE).read_text()) if (root / CONFIG_FILE).exists() else {}
    )
    settings = {k: v for k, v in (settings or {}).items() if k != "database_url"}
    if database_url:
        settings["database_url"] = database_url
    (root / CONFIG_FILE).write_text(
        yaml.safe_dump(settings or {"forgeml_workspace": 1}, sort_keys=False)
    )
    for folder in ("artifacts", "runs"):
        (root / folder).mkdir(exist_ok=True)
    workspace = Workspace(root, database_url)
    try:
        workspace.migrate()
        _load_registry(workspace, root / "registry")
        problems = {}
        with workspace.registry.reading() as session:
            for artifact in session.scalars(select(Artifact)):
                if (root / artifact.path).is_dir():
                    found = workspace.store.verify(artifact.kind, artifact.sha256)
                    if found:
                        problems[artifact.ref] = found
        if problems:
            raise WorkspaceError(f"restored artifacts do not match their hashes: {problems}")
        with workspace.registry.session() as session:
            workspace.registry.audit(session, "workspace.restore", str(archive), **manifest)
    finally:
        workspace.close()
    shutil.rmtree(root / "registry")
    manifest_path.unlink()
    return {**manifest, "verified_artifacts": manifest["artifacts"], "workspace": str(root)}


def _load_registry(workspace: Workspace, folder: Path) -> None:
    with workspace.engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if connection.execute(select(func.count()).select_from(table)).scalar():
                raise WorkspaceError(
                    f"the registry at {database._redact(workspace.database_url)} is not empty "
                    f"(table {table.name})",
                    hint="Restore onto a new, empty database.",
                )
        for table in Base.metadata.sorted_tables:
            times = [c.name for c in table.columns if isinstance(c.type, DateTime)]
            path = folder / f"{table.name}.jsonl"
            if not path.exists():
                continue
            batch: list[dict[str, Any]] = []
            with open(path, encoding="utf-8") as rows:
                for line in rows:
                    row = json.loads(line)
                    for name in times:
                        if row.get(name):
                            row[name] = datetime.fromisoformat(row[name])
                    batch.append(row)
                    if len(batch) == BATCH:
                        connection.execute(table.insert(), batch)
                        batch = []
            if batch:
                connection.execute(table.insert(), batch)
        if connection.dialect.name == "postgresql":  # ids were given: move the counters on
            for table in Base.metadata.sorted_tables:
                key = list(table.primary_key.columns)
                if len(key) == 1 and isinstance(key[0].type, Integer):
                    connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                        f"COALESCE((SELECT MAX({key[0].name}) FROM {table.name}), 0) + 1, false) "
                        f"WHERE pg_get_serial_sequence('{table.name}', '{key[0].name}') IS NOT NULL"
                    ))  # fmt: skip
