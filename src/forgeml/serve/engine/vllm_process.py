"""A `vllm serve` child process: started from its own environment, checked, stopped.

vLLM pins its own torch, so it cannot share forgeml's environment (FACTS.md); the
server runs it from the executable `serving.vllm_command` names (for example
`/opt/vllm/bin/vllm`) on a free loopback port:

    <vllm_command> serve <model dir> --host 127.0.0.1 --port <port>
        --served-model-name <id> <serving.vllm_args...>

Its output goes to a log file; every error names the command and that log, and quotes
the log's last lines, which is where vLLM says what went wrong.

No vLLM parsers are switched on by default: forgeml calls only /v1/completions and parses
reasoning and tool calls itself. `--tool-call-parser mistral --enable-auto-tool-choice`
would be harmless but unused; `--reasoning-parser mistral` stops vLLM from starting on
forgeml's Hugging Face tokenizers (it requires a mistral-common tokenizer).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import subprocess
import time
from pathlib import Path

import httpx

from forgeml.core.errors import ForgeError

log = logging.getLogger("forgeml.serve.engine")
LOG_TAIL_LINES = 20
POLL_SECONDS = 0.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(
    executable: str, model_dir: Path, port: int, served_name: str, args: list[str]
) -> list[str]:
    return [
        *shlex.split(executable),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        served_name,
        *args,
    ]


class VllmProcess:
    def __init__(self, command: list[str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def shown(self) -> str:
        return shlex.join(self.command)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s (log: %s)", self.shown, self.log_path)
        with open(self.log_path, "ab") as output:
            output.write(f"$ {self.shown}\n".encode())
            output.flush()
            try:
                self._process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
                )
            except OSError as error:
                raise ForgeError(
                    f"cannot run vLLM ({self.shown}): {error.strerror or error}",
                    hint="set serving.vllm_command to the `vllm` executable of the environment "
                    "vLLM is installed in (e.g. /opt/vllm/bin/vllm), or serving.vllm_url to a "
                    "running vLLM server",
                ) from error

    def check_running(self) -> None:
        """Raise if the process has exited (vLLM does not exit while it serves)."""
        if self._process is not None and self._process.poll() is not None:
            raise self.failure(f"exited with status {self._process.returncode}")

    def failure(self, what: str) -> ForgeError:
        return ForgeError(
            f"vLLM {what}: {self.shown}\n{self.tail()}",
            hint=f"vLLM's full output is in {self.log_path}",
        )

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Poll GET /health until vLLM answers 200; fail if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            if await healthy(client):
                return
            if time.monotonic() > deadline:
                await self.stop()
                raise self.failure(f"was not ready after {timeout:.0f} s")
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """SIGTERM (vLLM shuts its engine processes down), then SIGKILL after the grace."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, grace_seconds)
        except subprocess.TimeoutExpired:
            log.warning("vLLM did not stop within %.0f s; killing it", grace_seconds)
            process.kill()
            await asyncio.to_thread(process.wait)


async def healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health", timeout=5.0)).status_code == 200
    except httpx.TransportError:
        return False
