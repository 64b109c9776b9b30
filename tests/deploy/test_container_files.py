"""Checks of the container files that need no build: the CUDA variant (no GPU here) keeps
the CPU image's promises, and every forgeml setting either image sets is one the server
accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forgeml.serve.settings import ServeSettings, settings_from_environment

CONTAINER = Path(__file__).resolve().parents[2] / "deploy/container"


def environment(containerfile: str) -> dict[str, str]:
    """The final stage's ENV assignments."""
    text = (CONTAINER / containerfile).read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    pairs: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


@pytest.mark.parametrize("containerfile", ["Containerfile", "Containerfile.cuda"])
def test_the_image_settings_are_ones_the_server_accepts(containerfile):
    env = environment(containerfile)
    ServeSettings(**settings_from_environment(env))
    assert env["FORGEML_WORKSPACE"] == "/var/lib/forgeml/workspace"
    text = (CONTAINER / containerfile).read_text()
    for promise in ("USER 10001:10001", "HEALTHCHECK", "/health/ready", "requirements.lock",
                    'VOLUME ["/var/lib/forgeml/workspace"]'):  # fmt: skip
        assert promise in text, promise


def test_the_cuda_image_runs_vllm_from_its_own_environment():
    text = (CONTAINER / "Containerfile.cuda").read_text()
    assert environment("Containerfile.cuda")["FORGEML_SERVING_VLLM_COMMAND"] == "/opt/vllm/bin/vllm"
    assert "python3 -m venv /opt/vllm" in text and "COPY --from=build /opt/vllm /opt/vllm" in text
