"""Uploaded files (`/v1/files`): stored under `files/` in the workspace, validated on upload.

A fine-tuning file is checked line by line before it is accepted, so a bad line is
reported at upload (file:line and what was expected), not an hour into training.

The client's file name is kept as a label only: the bytes are stored as
`files/<id>/data.jsonl` (fine-tune) or `files/<id>/data` (other purposes), so no name
can pick the reader that opens them, or a path. A gzip-compressed fine-tuning file
(known by its first bytes) is decompressed here, as a stream, at most
`MAX_DECOMPRESSED_BYTES` and lines of at most `MAX_LINE_BYTES`, and stored plain: the
worker never decompresses anything a client sent. Uploads are readable by the
workspace's owner and group only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import secrets
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import select

from forgeml.core.atomic import fsync_dir
from forgeml.core.errors import InputError, NotFoundError
from forgeml.core.schema import StoredFile, utcnow
from forgeml.core.store import _pid_alive
from forgeml.data.formats import validate_jsonl

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

PURPOSES = ("fine-tune", "batch", "assistants", "evals", "user_data")
PRODUCED_PURPOSES = ("batch_output",)  # files forgeml writes (a batch's results), not uploads
MAX_BYTES = 512 * 1024 * 1024
MAX_DECOMPRESSED_BYTES = 2 * 1024**3  # a compressed fine-tuning file, once decompressed
MAX_LINE_BYTES = 16 * 1024 * 1024  # one record of a fine-tuning file
GZIP_MAGIC = b"\x1f\x8b"
INCOMING = ".incoming-"  # files/.incoming-HOST-PID-FILE_ID/: an upload being written
FILE_MODE, DIRECTORY_MODE = 0o640, 0o750  # nothing for other users of the machine


def store_file(
    workspace: Workspace,
    filename: str,
    content: bytes,
    purpose: str,
    audit: dict[str, Any] | None = None,
    *,
    produced: bool = False,
) -> StoredFile:
    """Validate and store an upload; `audit` adds details to its audit entry (the key).
    `produced`: a file forgeml made itself, which may have a PRODUCED_PURPOSES purpose."""
    if purpose not in PURPOSES + (PRODUCED_PURPOSES if produced else ()):
        raise InputError(
            f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}", field="purpose"
        )
    name = upload_name(filename)
    if len(content) > MAX_BYTES:
        raise InputError(f"{name} is {len(content)} bytes; the limit is {MAX_BYTES}", field="file")
    file_id = "file-" + secrets.token_hex(12)
    # Written in an incoming folder named after this process, moved into place whole: a
    # server killed mid-upload leaves only an incoming folder, which the next start removes.
    incoming = _private_directory(
        workspace, f"{INCOMING}{socket.gethostname()}-{os.getpid()}-{file_id}"
    )
    directory = incoming.parent / file_id
    stored_name = "data.jsonl" if purpose == "fine-tune" else "data"
    try:
        with tempfile.NamedTemporaryFile(dir=incoming, prefix=".upload.", delete=False) as temp:
            temp_path = Path(temp.name)
            if purpose == "fine-tune":
                size, digest = _write_lines(content, name, temp)
            else:
                temp.write(content)
                size, digest = len(content), hashlib.sha256(content).hexdigest()
            temp.flush()
            os.fsync(temp.fileno())
        details = _validate_training_file(name, temp_path) if purpose == "fine-tune" else {}
        temp_path.chmod(FILE_MODE)
        os.replace(temp_path, incoming / stored_name)
        os.replace(incoming, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)  # nothing of a refused upload stays
        raise
    relative = Path("files") / file_id / stored_name
    try:
        if workspace.remote_store is not None:  # other machines' workers read it from there
            workspace.remote_store.publish_file(directory / stored_name, relative.as_posix())
        return _record_upload(
            workspace, file_id, name, purpose, size, digest, relative, details, audit
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _record_upload(
    workspace: Workspace, file_id: str, name: str, purpose: str, size: int, digest: str,
    relative: Path, details: dict, audit: dict[str, Any] | None,
) -> StoredFile:  # fmt: skip
    with workspace.registry.session() as session:
        stored = StoredFile(
            id=file_id,
            filename=name,
            purpose=purpose,
            bytes=size,
            sha256=digest,
            path=relative.as_posix(),
            details=details,
        )
        session.add(stored)
        workspace.registry.audit(
            session, "file.upload", file_id, filename=name, purpose=purpose, **(audit or {})
        )
        return stored


def clean_interrupted_uploads(workspace: Workspace, min_age_seconds: float = 3600.0) -> int:
    """Remove what uploads cut short left: incoming folders of processes on this host that
    are gone, and folders no file row names (killed between the move and the row) once
    they are older than `min_age_seconds` (a live upload on another host may be between
    the two). Called when a server or a job worker starts."""
    files_root = workspace.root / "files"
    if not files_root.is_dir():
        return 0
    with workspace.registry.reading() as session:
        known = set(session.scalars(select(StoredFile.id)))
    host, removed, now = socket.gethostname(), 0, time.time()
    for path in files_root.iterdir():
        if path.name.startswith(INCOMING):
            writer_host, _, rest = (
                path.name[len(INCOMING) :].rpartition("-file-")[0].rpartition("-")
            )
            gone = writer_host == host and rest.isdigit() and not _pid_alive(int(rest))
        else:
            gone = path.name not in known and now - path.stat().st_mtime > min_age_seconds
        if gone and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def upload_name(filename: str | None) -> str:
    """The client's file name as a label: its last path part, which must say something."""
    name = Path((filename or "").replace("\\", "/")).name.strip()
    if name in ("", ".", "..") or len(name) > 255 or not name.isprintable():
        raise InputError(
            f"the uploaded file needs a name (got {filename!r})",
            field="file",
            hint="Send it as a multipart file with a filename such as train.jsonl.",
        )
    return name


def _private_directory(workspace: Workspace, file_id: str) -> Path:
    files_root = workspace.root / "files"
    files_root.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
    mode = files_root.stat().st_mode
    if mode & 0o007:  # made by an older forgeml: close it to other users
        files_root.chmod(mode & 0o770)
    directory = files_root / file_id
    directory.mkdir(mode=DIRECTORY_MODE)
    return directory


def _write_lines(content: bytes, name: str, out: BinaryIO) -> tuple[int, str]:
    """Copy a fine-tuning file to `out` line by line, decompressing gzip, within the caps;
    returns the size and sha256 of what was written."""
    compressed = content[:2] == GZIP_MAGIC
    stream: BinaryIO = (
        gzip.GzipFile(fileobj=io.BytesIO(content)) if compressed else io.BytesIO(content)
    )  # type: ignore[assignment]
    digest, size, number = hashlib.sha256(), 0, 0
    try:
        while line := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise InputError(
                    f"{name}:{number}: the line is longer than {MAX_LINE_BYTES} bytes",
                    field="file",
                    hint="Split long records, or shorten them to fit the model's context.",
                )
            size += len(line)
            if size > MAX_DECOMPRESSED_BYTES:
                raise InputError(
                    f"{name} decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes",
                    field="file",
                    hint="Upload fine-tuning data in smaller files.",
                )
            digest.update(line)
            out.write(line)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{name} is not a readable gzip file: {error}", field="file") from None
    return size, digest.hexdigest()


def _validate_training_file(name: str, path: Path) -> dict:
    """Every line must be a chat, preference, prompt or classifier record; one format per
    file."""
    report = validate_jsonl(path)
    if not report.ok:
        shown = "; ".join(
            f"{name}:{error.line}: " + (f"{error.field}: " if error.field else "") + error.message
            for error in report.errors[:5]
        )
        more = f" (and {report.error_count - 5} more)" if report.error_count > 5 else ""
        raise InputError(
            f"not a valid fine-tuning file: {shown}{more}",
            field="file",
            hint="Each line must be a JSON object in the chat, preference (DPO), prompt or "
            'classifier ({"text", "labels"}) format.',
        )
    return {"counts": dict(report.counts)}


def get_file(workspace: Workspace, file_id: str) -> StoredFile:
    with workspace.registry.session() as session:
        stored = session.get(StoredFile, file_id)
    if stored is None or stored.deleted_at is not None:
        raise NotFoundError(f"no file {file_id!r}")
    return stored


def list_files(workspace: Workspace, purpose: str | None = None) -> list[StoredFile]:
    query = (
        select(StoredFile).where(StoredFile.deleted_at.is_(None)).order_by(StoredFile.created_at)
    )
    if purpose:
        query = query.where(StoredFile.purpose == purpose)
    with workspace.registry.session() as session:
        return list(session.scalars(query))


def file_content(workspace: Workspace, file_id: str) -> bytes:
    return (workspace.local_path(get_file(workspace, file_id))).read_bytes()


def delete_file(
    workspace: Workspace, file_id: str, audit: dict[str, Any] | None = None
) -> StoredFile:
    """Remove the bytes; keep the row (marked deleted) so lineage still names the file."""
    stored = get_file(workspace, file_id)
    (workspace.root / stored.path).unlink(missing_ok=True)
    if workspace.remote_store is not None:
        workspace.remote_store.erase(stored.path)
    with workspace.registry.session() as session:
        row = session.get(StoredFile, file_id)
        row.deleted_at = utcnow()
        workspace.registry.audit(session, "file.delete", file_id, **(audit or {}))
        return row
