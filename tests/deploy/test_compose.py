"""The team server (deploy/compose/compose.yaml) with podman-compose: PostgreSQL, the API
server and a jobs worker on named volumes. An empty deployment is filled by
`forgeml admin restore` from a backup made elsewhere, then serves the same model bytes
to the same key with the same answers; `down` then `up` keeps all of it.

No registry here: PostgreSQL runs from a local stand-in image (deploy/compose/
postgres-local) with the official image's variables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from serving_fixtures import register_tiny_model
from test_container import IMAGE, free_port, image  # noqa: F401  (the image fixture)

from forgeml.core.workspace import Workspace
from forgeml.serve.auth import create_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy/compose/compose.yaml"
POSTGRES_IMAGE = "localhost/forgeml-postgres:15"
FORGEML = str(Path(sys.executable).parent / "forgeml")
CHAT = {"model": "team-chat", "max_tokens": 8, "temperature": 0, "seed": 3,
        "messages": [{"role": "user", "content": "Where is my parcel?"}]}  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture
def compose(image, tmp_path):  # noqa: F811
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (.ci/run installs it)")
    build = subprocess.run(["podman", "build", "-q", "-f", "Containerfile", "-t", POSTGRES_IMAGE, "."],
                           cwd=ROOT / "deploy/compose/postgres-local", capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stderr
    project = f"forgeml-test-{os.getpid()}"
    port = free_port()
    env = {**os.environ, "FORGEML_IMAGE": image, "FORGEML_POSTGRES_IMAGE": POSTGRES_IMAGE,
           "FORGEML_DB_PASSWORD": "team-secret", "FORGEML_MODELS": "team-chat",
           "FORGEML_PORT": str(port), "FORGEML_TORCH_THREADS": "1"}  # fmt: skip

    def run(*args: str, timeout: float = 300, stdin: bytes | None = None):
        result = subprocess.run(
            ["podman-compose", "--podman-run-args=--runtime=runc --ulimit=nofile=1024:1024 "
             "--ulimit=nproc=4096:4096", "-p", project, "-f", str(COMPOSE_FILE), *args],
            env=env, capture_output=True, timeout=timeout, input=stdin,
        )  # fmt: skip
        stdout, stderr = result.stdout.decode(), result.stderr.decode()
        # podman-compose 1.0 exits 0 whatever the last command did; it prints each code.
        codes = [line for line in stdout.splitlines() if line.startswith("exit code:")]
        failed = result.returncode != 0 or (codes and codes[-1] != "exit code: 0")
        assert not failed, stdout[-3000:] + stderr[-3000:]
        return stdout

    run.port, run.project = port, project
    try:
        yield run
    finally:
        subprocess.run(["podman-compose", "-p", project, "-f", str(COMPOSE_FILE), "down", "-v"],
                       env=env, capture_output=True, timeout=300)  # fmt: skip
        subprocess.run(["podman", "network", "rm", f"{project}_default"], capture_output=True)


def ask(port: int, key: str) -> str:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    deadline = time.monotonic() + 240
    while True:
        try:
            answer = client.chat.completions.create(**CHAT)
            return answer.choices[0].message.content
        except (openai.APIConnectionError, openai.InternalServerError, openai.NotFoundError):
            assert time.monotonic() < deadline, "the team server did not answer"
            time.sleep(1)


def test_a_backup_restored_into_an_empty_deployment_serves_the_same_model(compose, tmp_path):
    original = Workspace.init(tmp_path / "original")
    artifact = register_tiny_model(original, "team-chat")
    _, key = create_key(original, "team-app", "inference")
    original.close()
    archive = tmp_path / "team.tar.gz"
    made = subprocess.run([FORGEML, "-w", str(original.root), "admin", "backup", str(archive)],
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr

    compose("up", "-d", "postgres")
    # podman-compose 1.0 does not wait for `condition: service_healthy`: wait here.
    deadline = time.monotonic() + 120
    while subprocess.run(["podman", "healthcheck", "run", f"{compose.project}_postgres_1"],
                         capture_output=True).returncode != 0:  # fmt: skip
        assert time.monotonic() < deadline, "PostgreSQL did not become ready"
        time.sleep(1)
    # The backup goes in on stdin, as from an operator's machine (deploy/README.md).
    restored = compose("run", "--rm", "-T", "-e", "FORGEML_INIT=0", "--entrypoint", "/bin/sh",
                       "server", "-c", "cat > /tmp/team.tar.gz && forgeml --json admin restore "
                       '/tmp/team.tar.gz --database-url "$FORGEML_DATABASE_URL"',
                       stdin=archive.read_bytes())  # fmt: skip
    assert '"verified_artifacts": 1' in restored
    compose("up", "-d")
    answer = ask(compose.port, key)
    shown = compose("run", "--rm", "--entrypoint", "forgeml", "server", "--json",
                    "artifacts", "show", "team-chat")  # fmt: skip
    assert f'"sha256": "{artifact.sha256}"' in shown

    compose("down")  # no -v: the volumes stay
    compose("up", "-d")
    assert ask(compose.port, key) == answer  # same key, same model, same answer
    # The console is the server's /ui: its login page answers without a key.
    login = httpx.get(f"http://127.0.0.1:{compose.port}/ui/login", timeout=30)
    assert login.status_code == 200 and "API key" in login.text
