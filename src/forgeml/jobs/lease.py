"""A claimed job's lease, renewed from a thread while the worker runs the job.

    with LeaseKeeper(workspace, job.id, owner):
        run_job(workspace, job)

The lease is how other workers (and `cancel`) tell a working worker from a dead or hung
one: every `LEASE_SECONDS / 4` it is pushed `LEASE_SECONDS` ahead. When a cancel has
been asked and the job is still running `CANCEL_GRACE_SECONDS` later (a run stuck
where it does not look for cancels), the keeper ends the job as `cancelled` itself and
stops renewing: the job ends whatever the run does, and the worker's late outcome is
not recorded over it (`queue.finish` checks the owner).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from forgeml.jobs import queue

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.jobs")


class LeaseKeeper:
    def __init__(self, workspace: Workspace, job_id: str, owner: str) -> None:
        self.workspace = workspace
        self.job_id = job_id
        self.owner = owner
        self.lost = False  # the job ended or another worker took it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forgeml-job-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        cancel_seen: float | None = None
        while not self._stop.wait(queue.LEASE_SECONDS / 4):
            try:
                job = queue.renew_lease(self.workspace, self.job_id, self.owner)
                if job is None:
                    self.lost = True
                    log.warning(
                        "%s: no longer this worker's; its outcome will not be kept", self.job_id
                    )
                    return
                if job.cancel_requested:
                    cancel_seen = cancel_seen or time.monotonic()
                    if time.monotonic() - cancel_seen >= queue.CANCEL_GRACE_SECONDS:
                        log.warning(
                            "%s: cancelled, and its run did not stop; ending it", self.job_id
                        )
                        queue.finish(self.workspace, self.job_id, "cancelled", owner=self.owner)
                        self.lost = True
                        return
            except SQLAlchemyError:  # the database is away: the lease may lapse; keep trying
                log.exception("%s: could not renew the job's lease", self.job_id)
