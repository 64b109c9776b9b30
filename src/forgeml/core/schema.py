"""Registry tables (SQLAlchemy 2). The alembic migrations in `migrations/` create them.

lineage is two kinds of node (artifacts, runs) joined by `lineage_edges`: a run reads
input artifacts and writes output artifacts. Every question about where a model came
from, or what a dataset touched, is a walk over these edges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def unix_time(when: datetime) -> int:
    """Seconds since the epoch; SQLite gives datetimes back without their (UTC) zone."""
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Artifact(Base):
    """An immutable, content-addressed directory in the store."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("kind", "sha256", name="uq_artifacts_kind_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))  # relative to the workspace root
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)  # first producer
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set by `forgeml data forget`: this artifact was, or derives from, data to be deleted.
    forgotten_at: Mapped[datetime | None]
    forgotten_reason: Mapped[str | None] = mapped_column(Text)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.sha256[:12]}"


class Tombstone(Base):
    """What is left of bytes erased by a data-deletion request: never the content itself."""

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # an artifact kind, or "file" (an upload)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    ref: Mapped[str] = mapped_column(String(255))  # dataset/3fa2b1c0a9d4, file-...
    reason: Mapped[str] = mapped_column(Text)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_by: Mapped[str] = mapped_column(String(255))


class Run(Base):
    """One execution of a stage; one row per run key, retried attempts included."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    stage: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sources: Mapped[list[Any]] = mapped_column(default=list)  # raw files read: path, sha256, size
    recipe: Mapped[str | None] = mapped_column(String(255))
    step: Mapped[str | None] = mapped_column(String(128))
    forgeml_version: Mapped[str] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class LineageEdge(Base):
    """A run read (`input`) or wrote (`output`) an artifact, under a named role."""

    __tablename__ = "lineage_edges"
    __table_args__ = (
        UniqueConstraint("run_id", "artifact_id", "direction", "role", "position", name="uq_edge"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # "input" | "output"
    role: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)  # order within a list input


class RunEvent(Base):
    """Status changes, log lines, metrics and checkpoints of a run, in order."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))  # status | log | metric | checkpoint | warning
    step: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Version(Base):
    """A named, numbered version of an artifact: model versions, named datasets."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    description: Mapped[str] = mapped_column(Text, default="")


class Alias(Base):
    """A movable label (`prod`, `candidate`) on one version of a name."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("name", "alias", name="uq_aliases_name_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """One move of an alias, oldest first: what `forgeml models rollback` walks back over."""

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))  # where it moved to
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"))
    action: Mapped[str] = mapped_column(String(16))  # set | rollback
    time: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")


class Deployment(Base):
    """A model being (or having been) served."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(255))
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    engine: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiKey(Base):
    """An API key, stored as a sha256 of the secret (keys are random, so no salt needed)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown to humans
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # inference | viewer | admin
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Feedback(Base):
    """A rating or correction of one completion, from production."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    completion_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(255), default="")
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    corrected_output: Mapped[str | None] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to what, when. Append-only: updates and deletes are refused."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class StoredFile(Base):
    """A file uploaded through the API (`/v1/files`), kept under `files/` in the workspace."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # file-<hex>
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))  # relative to the workspace root
    status: Mapped[str] = mapped_column(String(16), default="processed")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # validation summary
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class FineTuningJob(Base):
    """A fine-tuning job from the API; the worker turns it into stage runs."""

    __tablename__ = "fine_tuning_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ftjob-<hex>
    method: Mapped[str] = mapped_column(String(16))  # supervised | dpo | reinforcement
    base_model: Mapped[str] = mapped_column(String(255))
    # Training files, hyperparameters, suffix, seed, as normalised by the API layer.
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(24), index=True)  # forgeml run statuses
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker holding it (host:pid:token) and until when; it renews the lease while it
    # works, so a job whose worker died or hung is taken up again (or failed, see attempts).
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims by a worker
    run_ids: Mapped[list[Any]] = mapped_column(default=list)  # every run the job started


class ConsoleSession(Base):
    """A console login: the cookie's token is stored only as its sha256."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # the API key that logged in
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Batch(Base):
    """A batch of API requests run offline (OpenAI's /v1/batches, `forgeml batch run`)."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # batch_<hex>
    endpoint: Mapped[str] = mapped_column(String(64))  # /v1/chat/completions, ...
    input_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    # queued, in_progress, completed, failed, cancelling, cancelled (OpenAI's names)
    status: Mapped[str] = mapped_column(String(24), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))  # runs as it
    # metadata, completion_window, the default model, the input's sha256, errors
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The process running it and until when (renewed while it runs): a batch whose
    # runner died is taken up again and goes on from its results file.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]


class RequestLog(Base):
    """One served request: metadata always, prompt and output text only when enabled."""

    __tablename__ = "request_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    completion_id: Mapped[str] = mapped_column(String(64), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model: Mapped[str] = mapped_column(String(255), index=True)
    route: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    ttft_ms: Mapped[float | None]
    finish_reason: Mapped[str | None] = mapped_column(String(24))
    # Which version answered (NAME:N) and the alias the request reached it through, if any:
    # what `forgeml monitor usage --by version|alias` compares (a canary against prod).
    version: Mapped[str | None] = mapped_column(String(255), index=True)
    alias: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)  # text only when enabled
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
