"""One record per completion served, in the registry's `request_log` table: what drift
reports and the next training round read.

Metadata only by default (model, key, token counts, latency, time to first token,
finish reasons); the prompt and the output only when `ServeSettings.log_prompts` is
on, because they may hold personal data. Rows older than `request_log_days` are
deleted when the server starts and every hour while it runs.

A request never waits on the database: `record` puts the record on a queue, and a
background thread writes whatever is queued in one transaction every second. If the
database is unreachable the records wait (up to `max_pending`, oldest dropped first)
and go in with the next write that succeeds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from forgeml.core.schema import RequestLog as RequestLogRow
from forgeml.core.schema import utcnow

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.serve")

PRUNE_SECONDS = 3600.0


@dataclass
class RequestRecord:
    id: str  # the completion id returned to the client (chatcmpl-..., cmpl-...)
    endpoint: str  # chat.completions | completions
    model: str  # as served
    artifact: str  # model/<sha256 prefix>
    api_key: str  # the key's shown prefix, never the secret
    status: int
    stream: bool
    api_key_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    version: str | None = None  # NAME:N that answered (traffic.py)
    alias: str | None = None  # the alias the request reached it through
    time: datetime = field(default_factory=utcnow)
    signals: dict[str, Any] | None = None  # drift signals (monitor.signals), never text
    request: dict[str, Any] | None = None  # only with log_prompts
    response: list[str] | None = None  # only with log_prompts

    def to_row(self) -> RequestLogRow:
        """The table has columns for what reports filter on; the rest goes to JSON."""
        request = {"stream": self.stream, "artifact": self.artifact, "api_key": self.api_key}
        if self.signals is not None:
            request["signals"] = self.signals
        response: dict[str, Any] = {"finish_reasons": self.finish_reasons, "error": self.error}
        if self.request is not None:
            request.update(self.request)
        if self.response is not None:
            response["outputs"] = self.response
        return RequestLogRow(
            completion_id=self.id,
            time=self.time,
            model=self.model,
            route=self.endpoint,
            status=self.status,
            api_key_id=self.api_key_id,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            finish_reason=(self.finish_reasons[0] or None) if self.finish_reasons else None,
            version=self.version or None,
            alias=self.alias or None,
            request=request,
            response=response,
        )


class RequestLog(Protocol):
    def record(self, entry: RequestRecord) -> None: ...

    def close(self) -> None: ...


class RegistryRequestLog:
    """Writes records to the registry in batches, from its own thread."""

    def __init__(
        self,
        workspace: Workspace,
        retention_days: int,
        *,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
    ) -> None:
        self.workspace = workspace
        self.retention_days = retention_days
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.dropped = 0
        self._queue: queue.SimpleQueue[RequestRecord] = queue.SimpleQueue()
        self._pending: list[RequestRecord] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forgeml-request-log", daemon=True)
        self._thread.start()

    def record(self, entry: RequestRecord) -> None:
        self._queue.put(entry)  # SimpleQueue.put never blocks

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        self.prune()
        pruned_at = time.monotonic()
        while not self._stop.wait(self.flush_seconds):
            self.flush()
            if time.monotonic() - pruned_at >= PRUNE_SECONDS:
                self.prune()
                pruned_at = time.monotonic()
        self.flush()

    def flush(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not self._pending:
            return
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            self.dropped += excess
            log.warning("request log: the database is behind; %d records dropped", excess)
            del self._pending[:excess]
        try:
            with self.workspace.registry.session() as session:
                session.add_all([entry.to_row() for entry in self._pending])
        except SQLAlchemyError:
            log.exception("request log: could not write %d records; retrying", len(self._pending))
            return
        self._pending = []

    def prune(self) -> int:
        """Delete rows older than the retention period; returns how many."""
        cutoff = utcnow() - timedelta(days=self.retention_days)
        try:
            with self.workspace.registry.session() as session:
                deleted = session.execute(
                    delete(RequestLogRow).where(RequestLogRow.time < cutoff)
                ).rowcount
        except SQLAlchemyError:
            log.exception("request log: could not delete rows older than %s", cutoff)
            return 0
        if deleted:
            log.info(
                "request log: %d rows older than %d days deleted", deleted, self.retention_days
            )
        return deleted or 0
