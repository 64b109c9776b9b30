"""The content-addressed artifact store: `artifacts/<kind>/<sha256>/`.

A stage writes into a private temp directory; `commit` hashes the files, adds
`manifest.json` and renames the directory into place in one step. A crash before the
rename leaves only a temp directory (cleaned on the next open); after it, a complete
artifact. Identical content is stored once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgeml import __version__
from forgeml.core.atomic import fsync_dir, write_json_atomic
from forgeml.core.errors import ForgeError, InputError, NotFoundError
from forgeml.core.hashing import sha256_file, tree_hash
from forgeml.core.schema import utcnow

if TYPE_CHECKING:
    from forgeml.core.remote_store import RemoteStore

MANIFEST = "manifest.json"
KIND_PATTERN = "abcdefghijklmnopqrstuvwxyz_"


@dataclass
class StoredArtifact:
    kind: str
    sha256: str
    path: Path
    size_bytes: int
    file_count: int
    meta: dict[str, Any] = field(default_factory=dict)


class ArtifactStore:
    """The workspace's `artifacts/` folder, and the shared store behind it if there is one
    (remote_store.py): commits are published there, reads fetch from it what is not here."""

    def __init__(self, root: Path, remote: RemoteStore | None = None) -> None:
        self.root = root
        self.tmp_root = root / ".tmp"
        self.remote = remote

    def _relative(self, path: Path) -> str:
        """`path` as the shared store names it: relative to the workspace folder."""
        return path.resolve().relative_to(self.root.resolve().parent).as_posix()

    def path_for(self, kind: str, sha256: str) -> Path:
        return self.root / kind / sha256

    def new_temp_dir(self) -> Path:
        # The pid in the name lets `clean_stale_temp` tell a crashed writer from a live one.
        path = self.tmp_root / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def commit(
        self, temp_dir: Path, kind: str, run_id: str | None, meta: dict[str, Any] | None = None
    ) -> StoredArtifact:
        if not kind or any(c not in KIND_PATTERN for c in kind):
            raise InputError(f"artifact kind {kind!r} must be lower-case letters and '_'")
        if (temp_dir / MANIFEST).exists():
            raise InputError(f"a stage may not write {MANIFEST} itself; forgeml writes it")
        sha256, files = tree_hash(temp_dir)
        for path in temp_dir.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        size = sum(entry["size"] for entry in files)

        manifest = {
            "kind": kind,
            "sha256": sha256,
            "size_bytes": size,
            "file_count": len(files),
            "files": files,
            "created_at": utcnow().isoformat(),
            "run_id": run_id,
            "forgeml_version": __version__,
            "meta": meta or {},
        }
        write_json_atomic(temp_dir / MANIFEST, manifest)
        final = self.path_for(kind, sha256)
        _place(temp_dir, final)
        if self.remote is not None:
            self.remote.publish_dir(final, self._relative(final))
        return StoredArtifact(kind, sha256, final, size, len(files), meta or {})

    def materialise(self, kind: str, sha256: str) -> Path:
        """The artifact's folder here, fetched from the shared store first if it is only
        there; a fetched copy takes its place only once its hashes match its address."""
        final = self.path_for(kind, sha256)
        if self.remote is None or (final / MANIFEST).exists():
            return final
        temp = self.new_temp_dir()
        try:
            manifest = self.remote.fetch_dir(self._relative(final), temp)
            actual, _ = tree_hash(temp, exclude=frozenset({MANIFEST}))
            if actual != sha256 or manifest.get("sha256") != sha256:
                raise ForgeError(
                    f"artifact {kind}/{sha256[:12]} in the store {self.remote.url} is corrupt: "
                    "its files do not hash to its address; it was not used"
                )
            _place(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return final

    def manifest(self, kind: str, sha256: str) -> dict[str, Any]:
        path = self.path_for(kind, sha256) / MANIFEST
        if not path.exists():
            raise NotFoundError(
                f"artifact {kind}/{sha256[:12]} is missing from the store at {path.parent}"
            )
        return json.loads(path.read_text())

    def exists(self, kind: str, sha256: str) -> bool:
        return (self.path_for(kind, sha256) / MANIFEST).exists()

    def holds(self, kind: str, sha256: str) -> bool:
        """The artifact's bytes are here or in the shared store (what erasure must reach)."""
        path = self.path_for(kind, sha256)
        return path.exists() or (self.remote is not None and self.remote.has(self._relative(path)))

    def verify(self, kind: str, sha256: str) -> list[str]:
        """Problems with a stored artifact: missing, extra or changed files. Empty if intact."""
        root = self.path_for(kind, sha256)
        if not root.exists():
            return [f"{kind}/{sha256[:12]} is missing from the store"]
        manifest = self.manifest(kind, sha256)
        problems = []
        recorded = {entry["path"]: entry for entry in manifest["files"]}
        actual, _ = tree_hash(root, exclude=frozenset({MANIFEST}))
        for rel, entry in recorded.items():
            path = root / rel
            if not path.exists():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"{rel}: content changed (sha256 differs from the manifest)")
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel != MANIFEST and rel not in recorded:
                problems.append(f"{rel}: not part of the artifact")
        if not problems and actual != sha256:
            problems.append("tree hash differs from the artifact's address")
        return problems

    def erase(self, path: Path) -> bool:
        """Delete a directory (an artifact, a run's scratch, an upload) for good.

        It is first renamed into the temp area, so a crash mid-delete leaves no
        half-erased artifact at its address; `clean_stale_temp` finishes the job. The
        shared store's copy goes too, whether or not this machine had one.
        """
        if self.remote is not None:
            self.remote.erase(self._relative(path))
        if not path.exists():
            return False
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        doomed = self.tmp_root / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.rename(path, doomed)
        fsync_dir(path.parent)
        shutil.rmtree(doomed)
        return True

    def clean_stale_temp(self) -> int:
        """Remove temp dirs left by writers on this host that are no longer alive."""
        if not self.tmp_root.exists():
            return 0
        removed = 0
        host = socket.gethostname()
        for path in self.tmp_root.iterdir():
            parts = path.name.rsplit("-", 2)
            if len(parts) != 3:
                continue
            name_host, pid_text, _ = parts
            if name_host != host or not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed


def _place(temp: Path, final: Path) -> None:
    """Rename a complete folder to its address in one step; if identical content is
    already there (content addressing: same address, same bytes), drop the new copy."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(temp, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        shutil.rmtree(temp)
    else:
        fsync_dir(final.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
