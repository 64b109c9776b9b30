"""A shared artifact store: the workspace's artifacts and uploads kept at a URL that many
machines reach (`s3://bucket/prefix` on any S3-compatible server, or a path on a shared
filesystem), through fsspec.

The workspace folder on each machine stays the working copy: a stage commits into the
local `artifacts/` as before and the artifact is then published under the same relative
path at the URL (its files first, `manifest.json` last, so a reader never trusts a half-
published artifact). Reading an artifact that is not here fetches it into the local
store, and only after every file's sha256 and the tree hash match its address does it
take its place: a corrupt or tampered copy is refused, never used. Erasing removes the
copy at the URL too.

Configured by `artifact_store` in forgeml.yaml or `FORGEML_ARTIFACT_STORE`; credentials
come from the store's own environment (`AWS_ACCESS_KEY_ID`, ... for S3), never from files.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from forgeml.core.errors import ForgeError, NotFoundError, WorkspaceError
from forgeml.core.hashing import sha256_file

STORE_ENV = "FORGEML_ARTIFACT_STORE"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# The settings of `artifact_store:` besides `url`, passed to the fsspec filesystem.
OPTION_KEYS = ("endpoint_url", "region_name")


class RemoteStore:
    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self._fs = None
        self._base = ""
        self._writable = False

    @classmethod
    def from_settings(cls, setting: Any) -> RemoteStore | None:
        """The store forgeml.yaml's `artifact_store` (or FORGEML_ARTIFACT_STORE) names."""
        setting = os.environ.get(STORE_ENV) or setting
        if not setting:
            return None
        if isinstance(setting, str):
            return cls(setting)
        if not isinstance(setting, dict) or not isinstance(setting.get("url"), str):
            raise WorkspaceError(
                "artifact_store must be a URL (s3://bucket/prefix, /shared/path) or a mapping "
                f"with `url` and optionally {', '.join(OPTION_KEYS)}"
            )
        unknown = sorted(set(setting) - {"url", *OPTION_KEYS})
        if unknown:
            raise WorkspaceError(
                f"artifact_store: unknown setting {unknown[0]!r}; known: url, "
                + ", ".join(OPTION_KEYS)
            )
        return cls(setting["url"], {key: setting[key] for key in OPTION_KEYS if key in setting})

    # --- the filesystem ------------------------------------------------------------------

    @property
    def fs(self):
        if self._fs is None:
            import fsspec  # late: a workspace without a shared store never imports it

            options = dict(self.options)
            if self.url.startswith("s3://"):
                # Offline by default: without keys botocore would ask the cloud's metadata
                # address for some. On a cloud with instance roles, set it to false.
                os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
            if self.url.startswith("s3://"):
                # Another machine publishes at any time: never answer from a cached listing.
                options["use_listings_cache"] = False
                if "endpoint_url" in options:
                    options["client_kwargs"] = {"endpoint_url": options.pop("endpoint_url")}
            try:
                self._fs, self._base = fsspec.core.url_to_fs(self.url, **options)
            except ImportError as exc:
                raise WorkspaceError(
                    f"the artifact store {self.url} needs a package that is not installed: {exc}",
                    hint="for s3:// install forgeml's `s3` extra (s3fs)",
                ) from exc
            except ValueError as exc:
                raise WorkspaceError(f"the artifact store {self.url} is not usable: {exc}") from exc
        return self._fs

    def _at(self, relative: str) -> str:
        self.fs  # noqa: B018 (opening the filesystem sets _base)
        return f"{self._base.rstrip('/')}/{relative}" if relative else self._base

    def _failed(self, doing: str, exc: Exception) -> ForgeError:
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        return ForgeError(
            f"the artifact store {self.url} could not {doing}: {reason}"[:2000],
            hint="check its URL, that the bucket or folder exists, the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3) and write permission",
        )

    def check_writable(self) -> None:
        """Before work starts: an object can be written and removed here."""
        if self._writable:
            return
        probe = self._at(f".forgeml-probe/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            self._mkdirs(probe)
            self.fs.pipe_file(probe, b"forgeml")
            self.fs.rm_file(probe)
        except ForgeError:
            raise
        except Exception as exc:  # fsspec backends raise their own types
            raise self._failed("be written", exc) from exc
        self._writable = True

    def _mkdirs(self, path: str) -> None:
        """A folder for `path` where folders exist (a shared filesystem; not S3)."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols:
            self.fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)

    # --- artifacts -----------------------------------------------------------------------

    def has(self, relative: str) -> bool:
        try:
            return self.fs.exists(self._at(f"{relative}/{MANIFEST}"))
        except Exception as exc:
            raise self._failed(f"be read ({relative})", exc) from exc

    def has_file(self, relative: str) -> bool:
        try:
            return self.fs.exists(self._at(relative))
        except Exception as exc:
            raise self._failed(f"be read ({relative})", exc) from exc

    def publish_dir(self, local: Path, relative: str) -> None:
        """Copy a committed artifact's folder to the store, its manifest last."""
        if self.has(relative):
            return
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST)
        try:
            for path in [*files, local / MANIFEST]:
                target = self._at(f"{relative}/{path.relative_to(local).as_posix()}")
                self._mkdirs(target)
                self.fs.put_file(str(path), target)
        except Exception as exc:
            raise self._failed(f"take artifact {relative}", exc) from exc

    def fetch_dir(self, relative: str, into: Path) -> dict[str, Any]:
        """Download an artifact's files into `into` (an empty private folder) and check
        each against the manifest; its manifest, for the caller to check the address."""
        manifest_at = self._at(f"{relative}/{MANIFEST}")
        try:
            if not self.fs.exists(manifest_at):
                raise NotFoundError(
                    f"artifact {relative} is neither in this workspace nor in the artifact "
                    f"store {self.url}"
                )
            if self.fs.size(manifest_at) > MAX_MANIFEST_BYTES:
                raise ForgeError(f"{self.url}/{relative}/{MANIFEST} is larger than a manifest")
            raw = self.fs.cat_file(manifest_at)
            manifest = json.loads(raw)
            for entry in manifest["files"]:
                rel = _safe_relative(entry["path"], relative)
                target = into / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._at(f"{relative}/{rel}"), str(target))
                if sha256_file(target) != entry["sha256"]:
                    raise ForgeError(
                        f"artifact {relative} in the store {self.url} is corrupt: {rel} does "
                        "not match its manifest's sha256; it was not used",
                        hint="restore the object from a backup or re-run the stage that made it",
                    )
        except (ForgeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ForgeError):
                raise
            raise ForgeError(
                f"{self.url}/{relative}/{MANIFEST} is not a forgeml manifest: {exc!r}"
            ) from exc
        except Exception as exc:
            raise self._failed(f"give artifact {relative}", exc) from exc
        (into / MANIFEST).write_bytes(raw)  # as published: the same bytes on every machine
        return manifest

    # --- single files (uploads) ----------------------------------------------------------

    def publish_file(self, local: Path, relative: str) -> None:
        try:
            target = self._at(relative)
            self._mkdirs(target)
            self.fs.put_file(str(local), target)
        except Exception as exc:
            raise self._failed(f"take {relative}", exc) from exc

    def fetch_file(self, relative: str, into: Path, sha256: str) -> None:
        """Download one stored file to `into`, refused unless its sha256 is `sha256`."""
        try:
            self.fs.get_file(self._at(relative), str(into))
        except FileNotFoundError as exc:
            raise NotFoundError(f"{relative} is neither here nor in the store {self.url}") from exc
        except Exception as exc:
            raise self._failed(f"give {relative}", exc) from exc
        if sha256_file(into) != sha256:
            into.unlink(missing_ok=True)
            raise ForgeError(
                f"{relative} in the store {self.url} is corrupt: its sha256 differs from the "
                "registry's; it was not used"
            )

    def erase(self, relative: str) -> None:
        """Remove a folder or file from the store for good (erasure, deletion)."""
        target = self._at(relative)
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
        except Exception as exc:
            raise self._failed(f"erase {relative}", exc) from exc


def _safe_relative(path: Any, artifact: str) -> str:
    """A manifest's file path, refused if it could leave the artifact's folder."""
    pure = PurePosixPath(str(path))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or str(path) == MANIFEST:
        raise ForgeError(f"the manifest of {artifact} names an unsafe file path {path!r}")
    return pure.as_posix()
