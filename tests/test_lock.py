"""requirements.lock is what installs use: it must satisfy pyproject.toml, and the
environment the tests run in must be the locked one (else a green run proves nothing
about what a fresh machine installs)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REFRESH = "refresh it with `make lock` after `make test` passes"


def locked_versions() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock:{number}: expected NAME==VERSION, got {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    return [Requirement(text) for text in declared]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = locked_versions()
    problems = []
    for requirement in declared_requirements():
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"pyproject.toml wants {requirement}, the lock has {pins[name]}")
    assert not problems, "; ".join(problems) + f": {REFRESH}"


def test_the_tests_run_in_the_locked_environment():
    problems = []
    for name, version in locked_versions().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is locked but not installed")
            continue
        if installed != version:
            problems.append(f"{name} {installed} is installed, the lock says {version}")
    assert not problems, "; ".join(problems) + f" (reinstall with `make setup`, or {REFRESH})"


def test_the_gguf_toolchain_builds_the_locked_llama_cpp_python():
    script = (ROOT / "scripts" / "install_gguf_toolchain.sh").read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.MULTILINE).group(1)
    assert locked_versions()[canonicalize_name("llama-cpp-python")] == Version(version)
