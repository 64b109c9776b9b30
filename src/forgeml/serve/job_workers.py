"""The server's fine-tuning workers: `forgeml jobs worker` subprocesses.

    workers = JobWorkers(workspace, count=settings.job_workers)
    await workers.start()      # in the app's lifespan: only if jobs are waiting
    workers.ensure_started()   # when a job is queued
    await workers.stop()       # SIGTERM: a running job goes back to the queue

Training runs in its own process, so it never stalls the event loop or the models'
threads, and a crash in it cannot take the server down. Workers start with the first
queued job (a server that never fine-tunes runs none) and then stay; one that dies is
started again, after a growing pause if it keeps dying at once. The queue lives in the
registry, so jobs left queued or interrupted by a restart are taken up by the next
server's workers, and their runs resume from their checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select

from forgeml.core.schema import FineTuningJob
from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.serve")

POLL_SECONDS = 1.0  # how often an idle worker looks at the queue
WATCH_SECONDS = 2.0  # how often the server checks its workers are alive
STOP_SECONDS = 20.0  # grace after SIGTERM before SIGKILL
MAX_RESTART_DELAY = 60.0


@dataclass
class _Worker:
    process: subprocess.Popen
    started: float
    delay: float = 0.0  # pause before the next restart; doubles while it keeps dying fast
    restart_at: float | None = None  # set once its death is seen


class JobWorkers:
    def __init__(self, workspace: Workspace, count: int) -> None:
        self.workspace = workspace
        self.count = count
        self.log_path = workspace.root / "serving" / "job-workers.log"
        self._workers: list[_Worker] = []
        self._log: IO[bytes] | None = None
        self._watch: asyncio.Task | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "forgeml",
            "--workspace",
            str(self.workspace.root),
            "jobs",
            "worker",
            "--poll",
            str(POLL_SECONDS),
        ]

    async def start(self) -> None:
        """Start the workers if the queue holds jobs (left by an earlier server)."""
        if self.count and await asyncio.to_thread(self._has_work):
            self.ensure_started()

    def _has_work(self) -> bool:
        waiting = select(FineTuningJob.id).where(FineTuningJob.status.in_(("queued", "running")))
        with self.workspace.registry.session() as session:
            return session.scalars(waiting.limit(1)).first() is not None

    def ensure_started(self) -> None:
        """Start the workers unless they run (or are off); call from the event loop."""
        if self.count == 0 or self._workers:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (open for the server's lifetime)
        self._workers = [_Worker(self._spawn(), time.monotonic()) for _ in range(self.count)]
        self._watch = asyncio.get_running_loop().create_task(self._keep_alive())

    def _spawn(self) -> subprocess.Popen:
        process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        log.info("started job worker pid %d (log: %s)", process.pid, self.log_path)
        return process

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            now = time.monotonic()
            for worker in self._workers:
                code = worker.process.poll()
                if code is None:
                    continue
                if worker.restart_at is None:
                    quick = now - worker.started < 30  # likely to die again: back off
                    worker.delay = min(2 * worker.delay or WATCH_SECONDS, MAX_RESTART_DELAY)
                    worker.delay = worker.delay if quick else 0.0
                    worker.restart_at = now + worker.delay
                    log.warning(
                        "job worker pid %d exited with %s; restarting in %.0f s (see %s)",
                        worker.process.pid,
                        code,
                        worker.delay,
                        self.log_path,
                    )
                if now >= worker.restart_at:
                    worker.process, worker.started = self._spawn(), now
                    worker.restart_at = None

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.terminate()  # SIGTERM: the worker requeues its job
        for worker in self._workers:
            try:
                await asyncio.to_thread(worker.process.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("job worker pid %d did not stop; killing it", worker.process.pid)
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
        self._workers = []
        if self._log is not None:
            self._log.close()
            self._log = None
