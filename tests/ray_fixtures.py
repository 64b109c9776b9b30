"""A Ray cluster for the tests: a head with its dashboard (the Jobs API) on loopback, and
Ray's own client to follow a job to its end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from forgeml.data.ray_executor import grpc_ready


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def own_ports() -> list[str]:
    """Free ports for what Ray would otherwise put on fixed ones (the dashboard agent's
    HTTP server on 52365, the client server on 10001): two clusters on one machine (test
    files side by side under xdist) would collide, and a cluster whose agent cannot bind
    answers every job submission "No available agent"."""
    flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port"]  # fmt: skip
    return [part for flag in flags for part in (flag, str(free_port()))]


@contextmanager
def ray_head(log_dir: Path, dashboard: bool) -> Iterator[tuple[str, str]]:
    """A one-node Ray cluster of 2 CPUs on loopback (`ray start --head`), as a platform
    team runs one: (its GCS address, its Jobs API URL or ""). Run in a session of its own
    so that stopping it stops only it (`ray stop` would stop every Ray on the machine,
    another test file's too). A head that exits while starting (a port taken between
    choosing it and Ray binding it, as test files start side by side) is started again
    on other ports."""
    for attempt in range(3):
        log = log_dir / f"head-{attempt}.log"
        port, head, jobs = _start_head(log, dashboard)
        try:
            if _came_up(head, port, jobs, log):
                yield f"127.0.0.1:{port}", jobs
                return
        finally:
            _stop(head)
    raise AssertionError(f"no Ray head started in 3 tries: {log.read_text()[-3000:]}")


def _start_head(log: Path, dashboard: bool) -> tuple[int, subprocess.Popen, str]:
    from forgeml.data.ray_executor import LOCAL_RAY_ENVIRONMENT

    env = {**os.environ, **LOCAL_RAY_ENVIRONMENT, "OMP_NUM_THREADS": "1"}
    port, dashboard_port = free_port(), free_port()
    ui = ["--include-dashboard", "false"]
    if dashboard:
        ui = ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
              "--dashboard-port", str(dashboard_port)]  # fmt: skip
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
             "--port", str(port), "--num-cpus", "2", *ui, "--disable-usage-stats",
             *own_ports()],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    return port, head, f"http://127.0.0.1:{dashboard_port}" if dashboard else ""


def _came_up(head: subprocess.Popen, port: int, jobs: str, log: Path) -> bool:
    """Whether the head is up: `ray start` said so (it does once its processes run), its
    GCS port completes a gRPC handshake (a port merely open may be someone else's), and
    its Jobs API answers if it has one. False if it exited first."""
    deadline = time.monotonic() + 180
    while not (
        "Ray runtime started" in log.read_text(errors="replace")
        and grpc_ready(f"127.0.0.1:{port}", 5)
        and (not jobs or _jobs_api_answers(jobs))
    ):
        if head.poll() is not None:
            return False
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    return True


def _stop(head: subprocess.Popen) -> None:
    # `ray start --block` answers SIGTERM by stopping its processes one by one with
    # grace periods (~35 s here); a test cluster has nothing to save, so after a
    # short grace the whole session goes at once.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A Ray head with its dashboard: the URL of its Jobs API."""
    with ray_head(tmp_path_factory.mktemp("ray-head"), dashboard=True) as (_, jobs):
        yield jobs


def _jobs_api_answers(address: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{address}/api/version", timeout=5).status_code in (200, 401)
    except httpx.TransportError:
        return False


def token_auth() -> dict[str, str]:
    """What a user of a cluster with token authentication sets for Ray's CLI (the head
    made one in ~/.ray/auth_token, or a fresh machine's head runs without)."""
    return {"RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").is_file() else {}


def wait_for(address: str, submission_id: str) -> tuple[str, str]:
    """The job's end state and its log, through Ray's own client."""
    from forgeml.data.ray_executor import _offline_local_ray, use_token_if_given

    use_token_if_given()  # before Ray is imported: it reads RAY_AUTH_MODE then
    # Imported as ray_session imports Ray for a loopback cluster: Ray fixes this process's
    # node address when imported, and one imported outside would later connect a driver
    # here (test_ray_executor.py's plan test) to the machine's outward address instead of
    # the loopback head (measured: ray.init then timed out).
    with _offline_local_ray():
        from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + 600
    while (status := client.get_job_status(submission_id)) not in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED
    ):  # fmt: skip
        assert time.monotonic() < deadline, client.get_job_logs(submission_id)[-3000:]
        time.sleep(1)
    return str(status.value), client.get_job_logs(submission_id)
