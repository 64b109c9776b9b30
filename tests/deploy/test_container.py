"""forgeml's CPU image, built from the lock on a locally made Debian base (no registry
here) and run as a platform runs it: non-root, read-only root filesystem, the workspace
on a volume, every setting by environment variable. The host asks it for an answer with
the OpenAI client; the image's HEALTHCHECK asks its readiness route.

The first build downloads the Python packages (~3.5 min, measured in deploy/README.md);
a rebuild reuses podman's layers (~20 s, ~1 min after a source edit)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from serving_fixtures import register_tiny_model

from forgeml.core.workspace import Workspace
from forgeml.serve.auth import create_key

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/forgeml:cpu-test"
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
IMAGE_UID = 10001

pytestmark = pytest.mark.slow


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {args[0]}: {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        pytest.skip("podman and debootstrap are not installed (.ci/run installs them)")
    started = time.monotonic()
    # One build at a time across test processes (pytest-xdist runs test_compose.py beside
    # this file): the second finds the first's layers cached instead of building again.
    with open(Path(tempfile.gettempdir()) / "forgeml-test-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build = subprocess.run([str(ROOT / "deploy/container/build-local.sh"), IMAGE],
                               capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"image build: {time.monotonic() - started:.0f} s")
    return IMAGE


@pytest.fixture
def team_workspace(tmp_path):
    """A workspace with a model and a key, owned by the image's user as on a volume."""
    workspace = Workspace.init(tmp_path / "ws")
    register_tiny_model(workspace, "tiny-chat")
    _, key = create_key(workspace, "container", "inference")
    workspace.close()
    subprocess.run(["chown", "-R", f"{IMAGE_UID}:{IMAGE_UID}", str(workspace.root)], check=True)
    return workspace.root, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_image_serves_from_a_volume_as_a_non_root_read_only_container(image, team_workspace):
    root, key = team_workspace
    port, name = free_port(), f"forgeml-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman("run", "-d", "--name", name, "--read-only", *LIMITS,
           "-v", f"{root}:/var/lib/forgeml/workspace", "-p", f"127.0.0.1:{port}:8000",
           "-e", "FORGEML_MODELS=tiny-chat", "-e", "FORGEML_SERVING_TORCH_THREADS=1",
           "-e", "FORGEML_SERVING_JOB_WORKERS=0", image, "serve")  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        deadline = time.monotonic() + 180
        while True:
            try:
                answer = client.chat.completions.create(
                    model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
                break
            except (openai.APIConnectionError, openai.InternalServerError):
                state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
                assert state == "running", podman("logs", name).stderr[-3000:]
                assert time.monotonic() < deadline, "no answer within 180 s"
                time.sleep(0.5)
        print(f"cold start to the first answer: {time.monotonic() - started:.1f} s")
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").json()["status"] == "ready"

        assert podman("healthcheck", "run", name, check=False).returncode == 0  # HEALTHCHECK
        assert podman("exec", name, "id", "-u").stdout.strip() == str(IMAGE_UID)
        denied = podman("exec", name, "touch", "/opt/forgeml/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert (root / "registry.db").stat().st_uid == IMAGE_UID  # state lives on the volume
    finally:
        podman("rm", "-f", "-v", "-t", "5", name, check=False)


def test_the_image_declares_what_a_platform_reads(image):
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert "/health/ready" in " ".join(inspected["Healthcheck"]["Test"])
    assert "/var/lib/forgeml/workspace" in config["Volumes"]
    assert "FORGEML_WORKSPACE=/var/lib/forgeml/workspace" in config["Env"]


def test_the_image_runs_any_cli_command_and_makes_a_workspace_on_an_empty_volume(image, tmp_path):
    volume = tmp_path / "empty"
    volume.mkdir()
    os.chown(volume, IMAGE_UID, IMAGE_UID)
    run = podman("run", "--rm", "--read-only", *LIMITS, "-v", f"{volume}:/var/lib/forgeml/workspace",
                 image, "--json", "models", "list")  # fmt: skip
    assert json.loads(run.stdout) == []
    assert (volume / "forgeml.yaml").exists() and (volume / "registry.db").exists()
    bad = podman("run", "--rm", *LIMITS, "-v", f"{volume}:/var/lib/forgeml/workspace",
                 "-e", "FORGEML_SERVING_MAX_BATCH_SIZE=0", image, "serve", "x", check=False)  # fmt: skip
    assert bad.returncode == 2 and "FORGEML_SERVING_MAX_BATCH_SIZE" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_build_without_room_says_so_before_it_starts():
    """Out of disk mid-build, podman reports a broken tar pipe; the script checks first."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/run installs it)")
    build = subprocess.run([str(ROOT / "deploy/container/build-local.sh"), "localhost/forgeml:never"],
                           env={**os.environ, "FORGEML_BUILD_NEEDS_GB": "1000000"},
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert build.returncode == 1
    assert "an image build needs about 1000000 GB" in build.stderr
    assert "STEP" not in build.stdout + build.stderr  # nothing was built
