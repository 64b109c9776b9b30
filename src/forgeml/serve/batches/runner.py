"""Run a batch through the server's own API, in process, and resume it after a crash.

Each request goes through the app as an HTTP request would (httpx's ASGI transport: the
same validation, limits, engines, request log and accounting), authenticated as the
key that created the batch (auth.KeyChecker.acting_as), `concurrency` at a time so the
engine batches them. A 429 or 503 is retried after its Retry-After; any other answer is
the request's result.

Every result is appended to `batches/<id>/results.jsonl` in the workspace as it arrives
(flushed per line, fsynced every FSYNC_EVERY lines and at the end). A runner that starts
a batch reads that file first and asks only what it lacks, so a batch killed half way
never repeats a finished request; a torn last line is cut off. When every request has
an answer, the results are split, in input order, into the output file (status 200) and
the error file (the rest), stored as files with purpose `batch_output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgeml.core.atomic import fsync_dir
from forgeml.core.workspace import Workspace
from forgeml.jobs import files
from forgeml.jobs.queue import worker_id
from forgeml.serve.batches import store
from forgeml.serve.batches.requests import BatchRequest, read_requests

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("forgeml.serve")

PROGRESS_SECONDS = 0.5
FSYNC_EVERY = 64
MAX_RETRY_WAIT_SECONDS = 30.0
RETRIED = (429, 503)


class KeyRevoked(Exception):
    pass


def results_path(workspace: Workspace, batch_id: str) -> Path:
    return workspace.root / "batches" / batch_id / "results.jsonl"


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The results a runner wrote, by custom_id; a torn last line is cut off the file."""
    if not path.is_file():
        return {}
    found: dict[str, dict[str, Any]] = {}
    good = 0
    with path.open("rb") as lines:
        for raw in lines:
            if not raw.endswith(b"\n"):
                break
            try:
                result = json.loads(raw)
            except json.JSONDecodeError:
                break
            found[result["custom_id"]] = result
            good += len(raw)
    if good < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good)
    return found


class BatchRunner:
    """Claims waiting batches for this server and runs them one at a time."""

    def __init__(self, app: Any, workspace: Workspace, concurrency: int, poll_seconds: float = 5.0):
        self.app = app
        self.workspace = workspace
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.owner = worker_id()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.running: str | None = None  # the batch being run now

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop at once; a batch half done is given back, to go on from its results file
        under the next runner (this server restarted, or another)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.running is not None:
            await asyncio.to_thread(store.release, self.workspace, self.running, self.owner)
            self.running = None

    def wake(self) -> None:
        """A batch was created: look now rather than at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                batch = await asyncio.to_thread(store.claim, self.workspace, self.owner)
                if batch is not None:
                    await self.run(batch)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:  # a registry hiccup must not end the loop
                log.exception("the batch runner failed; it tries again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def run(self, batch: Any) -> str:
        """Run a claimed batch to its end; returns its final status."""
        self.running = batch.id
        status = await self._run(batch)
        self.running = None
        return status

    async def _run(self, batch: Any) -> str:
        stored = await asyncio.to_thread(files.get_file, self.workspace, batch.input_file_id)
        default_model = (batch.details or {}).get("default_model")
        requests = await asyncio.to_thread(
            read_requests, self.workspace.local_path(stored), batch.endpoint, default_model
        )
        path = results_path(self.workspace, batch.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        done = await asyncio.to_thread(read_results, path)
        todo = [request for request in requests if request.custom_id not in done]
        run = _Run(self, batch, path, done)
        stopped = await run.ask(todo) if todo else None
        if stopped == "revoked":
            status, error = "failed", "the API key that created the batch was revoked"
        elif stopped == "cancelled":
            status, error = "cancelled", None
        else:
            status, error = "completed", None
        await asyncio.to_thread(store.finalizing, self.workspace, batch.id)
        output, errors, counts = await asyncio.to_thread(self._files, batch, requests, path)
        await asyncio.to_thread(
            store.finish, self.workspace, batch.id, status, completed=counts[0],
            failed=counts[1], output_file_id=output, error_file_id=errors, error=error,
        )  # fmt: skip
        return status

    def _files(
        self, batch: Any, requests: list[BatchRequest], path: Path
    ) -> tuple[str | None, str | None, tuple[int, int]]:
        results = read_results(path)
        good, bad = [], []
        for request in requests:
            result = results.get(request.custom_id)
            if result is None:
                continue  # cancelled before it was asked
            ok = result["response"] is not None and result["response"]["status_code"] == 200
            (good if ok else bad).append(json.dumps(result, ensure_ascii=False) + "\n")
        ids = []
        for lines, kind in ((good, "output"), (bad, "errors")):
            if not lines:
                ids.append(None)
                continue
            stored = files.store_file(
                self.workspace, f"{batch.id}_{kind}.jsonl", "".join(lines).encode(),
                "batch_output", {"batch": batch.id}, produced=True,
            )  # fmt: skip
            ids.append(stored.id)
        return ids[0], ids[1], (len(good), len(bad))


class _Run:
    """One runner's pass over a batch's remaining requests."""

    def __init__(self, runner: BatchRunner, batch: Any, path: Path, done: dict) -> None:
        self.runner, self.batch, self.path = runner, batch, path
        self.completed = sum(1 for r in done.values() if _ok(r))
        self.failed = len(done) - self.completed
        self.stop: str | None = None  # "cancelled" or "revoked"
        self.unsynced = 0

    async def ask(self, todo: list[BatchRequest]) -> str | None:
        keys = self.runner.app.state.keys
        secret = keys.acting_as(self.batch.api_key_id)
        queue: asyncio.Queue[BatchRequest] = asyncio.Queue()
        for request in todo:
            queue.put_nowait(request)
        import httpx  # here: a server that runs no batch never loads it (~4 MB)

        transport = httpx.ASGITransport(app=self.runner.app)
        try:
            with self.path.open("ab") as out:
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://forgeml-batch", timeout=None,
                    headers={"Authorization": f"Bearer {secret}"},
                ) as client:  # fmt: skip
                    workers = [
                        asyncio.create_task(self._work(client, queue, out))
                        for _ in range(max(1, min(self.runner.concurrency, len(todo))))
                    ]
                    watcher = asyncio.create_task(self._watch())
                    try:
                        await asyncio.gather(*workers)
                    finally:
                        watcher.cancel()
                        for worker in workers:
                            worker.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.gather(watcher, *workers, return_exceptions=True)
                        out.flush()
                        os.fsync(out.fileno())
            fsync_dir(self.path.parent)
        finally:
            keys.stop_acting(secret)
        return self.stop

    async def _work(self, client: httpx.AsyncClient, queue: asyncio.Queue, out) -> None:
        while self.stop is None:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                response = await self._send(client, request)
            except KeyRevoked:
                self.stop = "revoked"
                return
            if response is None:  # stopped while waiting to retry
                return
            self._write(out, request, response)

    async def _send(
        self, client: httpx.AsyncClient, request: BatchRequest
    ) -> httpx.Response | None:
        while self.stop is None:
            response = await client.post(self.batch.endpoint, json=request.body)
            if response.status_code == 401:
                raise KeyRevoked
            if response.status_code not in RETRIED:
                return response
            wait = _retry_after(response.headers.get("retry-after"))
            await asyncio.sleep(wait)
        return None

    def _write(self, out, request: BatchRequest, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:1000]}}
        ok = response.status_code == 200
        result = {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": request.custom_id,
            "response": {
                "status_code": response.status_code,
                "request_id": body.get("id", "") if isinstance(body, dict) else "",
                "body": body,
            },
            "error": None if ok else _error(body),
        }
        out.write((json.dumps(result, ensure_ascii=False) + "\n").encode())
        out.flush()
        self.unsynced += 1
        if self.unsynced >= FSYNC_EVERY:
            os.fsync(out.fileno())
            self.unsynced = 0
        if ok:
            self.completed += 1
        else:
            self.failed += 1

    async def _watch(self) -> None:
        """Report the counts, renew the lease, and notice a cancel."""
        runner = self.runner
        while self.stop is None:
            await asyncio.sleep(PROGRESS_SECONDS)
            cancelled = await asyncio.to_thread(
                store.progress, runner.workspace, self.batch.id, runner.owner, self.completed,
                self.failed,
            )  # fmt: skip
            if cancelled:
                self.stop = "cancelled"


def _ok(result: dict[str, Any]) -> bool:
    return result.get("response") is not None and result["response"]["status_code"] == 200


def _error(body: Any) -> dict[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return {"code": error.get("code") or error.get("type"), "message": error.get("message")}
    return {"code": "error", "message": str(body)[:1000]}


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.1), MAX_RETRY_WAIT_SECONDS)
    except ValueError:
        return 1.0
