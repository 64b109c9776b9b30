"""The edge bundle's runtime pins: every package pinned, at the lock's version wherever
forgeml itself uses the package, for the llama-cpp-python the toolchain builds."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

from forgeml.deploy.edge import RUNTIME_PINS, RUNTIME_PINS_FOR, VISION_PINS

ROOT = Path(__file__).resolve().parents[2]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            found[canonicalize_name(name)] = version
    return found


def test_runtime_pins_are_exact_and_agree_with_the_lock():
    runtime = pins(RUNTIME_PINS + VISION_PINS)
    assert len(runtime) == len(RUNTIME_PINS + VISION_PINS), "a package pinned twice"
    assert {"fastapi", "uvicorn", "sse-starlette", "pydantic-settings", "numpy"} <= set(runtime)
    assert "pillow" in runtime  # a vision model's bundle decodes images
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    differ = {name: (v, lock[name]) for name, v in runtime.items() if lock.get(name, v) != v}
    assert not differ, f"bundle pins vs requirements.lock: {differ}"


def test_runtime_pins_are_for_the_llama_cpp_python_the_toolchain_builds():
    script = (ROOT / "scripts/install_gguf_toolchain.sh").read_text()
    assert re.search(r"^VERSION=(\S+)$", script, re.M)[1] == RUNTIME_PINS_FOR
