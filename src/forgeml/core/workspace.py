"""A workspace: the directory that holds one organisation's artifacts, runs and registry.

forgeml-workspace/
  forgeml.yaml        workspace settings (database URL, gates, serving defaults)
  registry.db         SQLite registry (unless FORGEML_DATABASE_URL points elsewhere)
  artifacts/<kind>/<sha256>/   immutable artifacts, each with manifest.json (the working
                      copy of a shared `artifact_store`, if forgeml.yaml names one)
  runs/<run-id>/      a run's logs and checkpoints (what an interrupted run resumes from)
"""

from __future__ import annotations

import difflib
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from forgeml.core import database
from forgeml.core.atomic import write_text_atomic
from forgeml.core.errors import WorkspaceError
from forgeml.core.registry import Registry
from forgeml.core.remote_store import RemoteStore
from forgeml.core.store import ArtifactStore

CONFIG_FILE = "forgeml.yaml"
DEFAULT_WORKSPACE = "forgeml-workspace"
DATABASE_ENV = "FORGEML_DATABASE_URL"
# The top-level keys of forgeml.yaml (docs/CONFIGURATION.md documents each); a misspelt
# one is an error rather than a setting silently ignored.
SETTINGS_KEYS = (
    "forgeml_workspace", "database_url", "artifact_store", "serving", "gates", "monitoring",
)  # fmt: skip
WORKSPACE_ENV = "FORGEML_WORKSPACE"


class Workspace:
    def __init__(self, root: str | Path, database_url: str | None = None) -> None:
        self.root = Path(root).resolve()
        self._database_url = database_url

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def init(cls, root: str | Path, database_url: str | None = None) -> Workspace:
        """Create a workspace (or open an existing one) and bring its registry up to date."""
        workspace = cls(root, database_url)
        fresh = not workspace.config_path.exists()
        try:
            for folder in (workspace.artifacts_dir, workspace.runs_dir):
                folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise WorkspaceError(f"cannot create a workspace at {workspace.root}: {exc}") from exc
        workspace.close_to_others()
        if fresh:
            settings: dict[str, Any] = {"forgeml_workspace": 1}
            if database_url:
                settings["database_url"] = database_url
            write_text_atomic(workspace.config_path, yaml.safe_dump(settings, sort_keys=False))
        workspace.migrate()
        if fresh:
            with workspace.registry.session() as session:
                workspace.registry.audit(session, "workspace.init", str(workspace.root))
        return workspace

    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Workspace:
        """Open an existing workspace; with `create`, make it first if it is missing."""
        workspace = cls(root)
        if not workspace.config_path.exists():
            if create:
                return cls.init(root)
            raise WorkspaceError(
                f"no forgeml workspace at {workspace.root}",
                hint="Create one with `forgeml init`, or point --workspace / FORGEML_WORKSPACE at yours.",
            )
        workspace.migrate()
        workspace.store.clean_stale_temp()
        workspace.close_to_others()
        return workspace

    def close_to_others(self) -> None:
        """Artifacts, runs (checkpoints) and uploads are the team's (owner and group), not
        every account's on the machine: take other users' access to their folders away
        (folders made by an older forgeml, or under a lax umask). Best effort: a folder
        owned by another member of the team is left as it is."""
        for folder in (self.artifacts_dir, self.runs_dir, self.root / "files"):
            try:
                mode = folder.stat().st_mode
                if mode & 0o007:
                    folder.chmod(mode & 0o7770)
            except OSError:
                continue

    def migrate(self) -> None:
        database.upgrade(self.engine, lock_file=self.root / ".migrate.lock")

    # --- layout --------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @cached_property
    def settings(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return {}
        try:
            loaded = yaml.safe_load(self.config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise WorkspaceError(f"{self.config_path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise WorkspaceError(f"{self.config_path} must be a mapping of settings")
        for key in loaded:
            if key not in SETTINGS_KEYS:
                close = difflib.get_close_matches(str(key), SETTINGS_KEYS, n=1)
                guess = f" (did you mean {close[0]!r}?)" if close else ""
                raise WorkspaceError(
                    f"{self.config_path}: unknown setting {key!r}{guess}; "
                    f"known: {', '.join(SETTINGS_KEYS)}"
                )
        return loaded

    @property
    def database_url(self) -> str:
        return (
            self._database_url
            or os.environ.get(DATABASE_ENV)
            or self.settings.get("database_url")
            or f"sqlite:///{self.root / 'registry.db'}"
        )

    @cached_property
    def engine(self):
        return database.create_registry_engine(self.database_url)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.engine)

    @cached_property
    def remote_store(self) -> RemoteStore | None:
        """The shared store machines exchange artifacts and uploads through, if any."""
        return RemoteStore.from_settings(self.settings.get("artifact_store"))

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.artifacts_dir, self.remote_store)

    def local_path(self, record: Any) -> Path:
        """Where an artifact or uploaded file (a registry row with `path`) is on this
        machine, fetched from the shared store first if it is only there. Every read of
        stored bytes goes through here, so a workspace split across machines reads alike."""
        path = self.root / record.path
        if self.remote_store is None:
            return path
        if hasattr(record, "kind"):  # an Artifact
            return self.store.materialise(record.kind, record.sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            incoming = path.with_name(f".{path.name}.{os.getpid()}.fetch")
            try:
                self.remote_store.fetch_file(record.path, incoming, record.sha256)
                os.replace(incoming, path)
            finally:
                incoming.unlink(missing_ok=True)
        return path

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def default_workspace_path() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE))
