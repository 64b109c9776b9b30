"""The systemd units (deploy/systemd): checked by `systemd-analyze verify`, hardened as
the README promises, and their command lines run here with the settings the units give
them (systemd itself is not PID 1 on this machine, so `systemctl start` is not run)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_fixtures import register_tiny_model
from test_container import free_port

from forgeml.core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy/systemd"
INSTALLED = "/opt/forgeml/bin/forgeml"
FORGEML = str(Path(sys.executable).parent / "forgeml")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/forgeml",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "User": "forgeml",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
}


def service(name: str) -> dict[str, list[str]]:
    """The [Service] section: each key with every value it is given, in order."""
    values: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def verify(unit: Path) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(["systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("name", ["forgeml-server.service", "forgeml-worker.service"])
def test_systemd_accepts_the_unit(name, tmp_path):
    # The unit names the installed path; here forgeml lives in this venv.
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace(INSTALLED, FORGEML))
    result = verify(unit)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    for key, value in HARDENING.items():
        assert service(name)[key] == [value], key


def test_verify_catches_a_misspelt_option(tmp_path):  # the check above can fail
    unit = tmp_path / "forgeml-server.service"
    text = (UNITS / "forgeml-server.service").read_text().replace(INSTALLED, FORGEML)
    unit.write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert "NoNewPrivilege" in verify(unit).stderr


@pytest.mark.slow
def test_the_units_commands_serve_and_work_with_the_units_settings(tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    register_tiny_model(workspace, "support-bot")
    workspace.registry.set_alias("support-bot", "prod", 1)
    workspace.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEML_")}
    for unit in ("forgeml-server.service", "forgeml-worker.service"):
        for assignment in service(unit)["Environment"]:
            key, _, value = assignment.partition("=")
            env[key] = value
    for line in (UNITS / "forgeml.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env.update(FORGEML_WORKSPACE=str(workspace.root), FORGEML_PORT=str(port),
               FORGEML_SERVING_TORCH_THREADS="1", FORGEML_SERVING_ENGINE_PROCESS="false")  # fmt: skip

    def command(unit: str, key: str) -> list[str]:
        return shlex.split(service(unit)[key][0].replace(INSTALLED, FORGEML))

    subprocess.run(command("forgeml-server.service", "ExecStartPre"), env=env, check=True,
                   capture_output=True)  # fmt: skip
    server = subprocess.Popen(command("forgeml-server.service", "ExecStart"), env=env,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.3)
        worker = subprocess.run([*command("forgeml-worker.service", "ExecStart"), "--once"],
                                env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert worker.returncode == 0 and "0 jobs run" in worker.stdout, worker.stderr
        # KillSignal=SIGINT: the server stops cleanly on the unit's stop signal.
        assert service("forgeml-server.service")["KillSignal"] == ["SIGINT"]
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
