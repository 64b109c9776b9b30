"""Find (and, at install time, unpack) the llama.cpp tools that GGUF export uses.

    python -m forgeml.export.toolchain install llama_cpp_python-0.3.36.tar.gz
    python -m forgeml.export.toolchain status

Two pieces, both from one llama-cpp-python release:

- the converter (`convert_hf_to_gguf.py`, its `conversion/` package and the `gguf-py`
  it was written against). PyPI ships it only inside llama-cpp-python's source package
  (`vendor/llama.cpp/`), so `install` unpacks those Python files from the sdist into
  `~/.cache/forgeml/llama.cpp-<version>/`. `FORGEML_LLAMA_CPP_SRC` overrides the
  location (a llama.cpp checkout, or an unpacked sdist).
- the `llama_cpp` module (the compiled library: quantizer and loader), installed from a
  wheel built once from the same sdist.

Nothing here downloads anything: the sdist is a file the install step already has.
At run time we only look for what was installed and say how to install what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from forgeml.core.errors import ForgeError
from forgeml.core.hashing import sha256_file
from forgeml.core.safe_tar import extract_plain
from forgeml.core.user_cache import cache_root

SOURCE_ENV = "FORGEML_LLAMA_CPP_SRC"
CONVERTER = "convert_hf_to_gguf.py"
SOURCE_RECORD = "SOURCE.json"
# The parts of vendor/llama.cpp the converter imports; the C++ tree is not needed.
CONVERTER_PARTS = (CONVERTER, "conversion", "gguf-py", "LICENSE")
SDIST_VENDOR = "vendor/llama.cpp"

INSTALL_HINT = (
    "Build the wheel once and cache it: `pip wheel --no-deps llama_cpp_python-<version>.tar.gz "
    "-w ~/.cache/forgeml-wheels` (about 10 minutes on 2 cores), then "
    "`pip install ~/.cache/forgeml-wheels/llama_cpp_python-*.whl`; unpack the converter from "
    "the same sdist with `python -m forgeml.export.toolchain install "
    "llama_cpp_python-<version>.tar.gz` (or set FORGEML_LLAMA_CPP_SRC to a llama.cpp checkout)."
)


@dataclass(frozen=True)
class Converter:
    """Where llama.cpp's converter lives and which release it came from."""

    root: Path  # holds convert_hf_to_gguf.py, conversion/ and gguf-py/
    release: str | None  # the llama-cpp-python version of the sdist, if known
    gguf_py: str | None  # version of the gguf-py next to it

    def versions(self) -> dict[str, str | None]:
        """What export.json records: versions, not this machine's path, so the same
        export made on two machines has the same bytes."""
        return {"llama_cpp_python_sdist": self.release, "gguf_py": self.gguf_py}

    def describe(self) -> dict[str, str | None]:
        return {"path": str(self.root), **self.versions()}


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python, without importing it (that loads the library)."""
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return None


def find_converter() -> Converter:
    """The converter to use: $FORGEML_LLAMA_CPP_SRC, else the one unpacked for the
    installed llama-cpp-python, else the newest one unpacked. Raises if none."""
    override = os.environ.get(SOURCE_ENV)
    if override:
        root = _converter_root(Path(override).expanduser())
        if root is None:
            raise ForgeError(
                f"{SOURCE_ENV}={override} holds no {CONVERTER}",
                hint="Point it at a llama.cpp checkout or an unpacked llama-cpp-python sdist.",
            )
        return _describe(root)
    unpacked = sorted(cache_root().glob("llama.cpp-*"), key=lambda p: _version_key(p.name))
    installed = llama_cpp_version()
    matching = [p for p in unpacked if p.name == f"llama.cpp-{installed}"]
    for root in matching + unpacked[::-1]:
        if (root / CONVERTER).is_file():
            return _describe(root)
    raise ForgeError(
        f"llama.cpp's GGUF converter is not installed (looked in ${SOURCE_ENV} and "
        f"{cache_root()}/llama.cpp-<version>/)",
        hint=INSTALL_HINT,
    )


def require_llama_cpp(purpose: str) -> str:
    """The installed llama-cpp-python version, or a ForgeError saying how to install it."""
    installed = llama_cpp_version()
    if installed is None:
        raise ForgeError(
            f"llama-cpp-python is not installed; it is needed to {purpose}", hint=INSTALL_HINT
        )
    return installed


def _converter_root(path: Path) -> Path | None:
    for candidate in (path, path / SDIST_VENDOR):
        if (candidate / CONVERTER).is_file():
            return candidate
    return None


def _describe(root: Path) -> Converter:
    record = root / SOURCE_RECORD
    if record.is_file():
        release = json.loads(record.read_text()).get("llama_cpp_python")
    elif root.parent.name == "vendor":  # an unpacked sdist: llama_cpp_python-<version>/vendor
        release = root.parent.parent.name.removeprefix("llama_cpp_python-")
    else:
        release = None  # a llama.cpp checkout: its version is its git commit
    return Converter(root=root, release=release, gguf_py=_gguf_py_version(root))


def _gguf_py_version(root: Path) -> str | None:
    pyproject = root / "gguf-py" / "pyproject.toml"
    if not pyproject.is_file():
        return None
    import tomllib

    return tomllib.loads(pyproject.read_text()).get("project", {}).get("version")


def _version_key(name: str) -> tuple:
    text = name.removeprefix("llama.cpp-")
    return tuple(int(part) if part.isdigit() else -1 for part in text.split("."))


# --- install time ------------------------------------------------------------------------


def install_converter(sdist: Path, destination: Path | None = None) -> Converter:
    """Unpack the converter's Python files from a llama-cpp-python sdist (atomically)."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise ForgeError(f"{sdist}: no such file")
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
        top = members[0].name.split("/")[0]  # llama_cpp_python-<version>
        release = top.removeprefix("llama_cpp_python-")
        vendor = f"{top}/{SDIST_VENDOR}/"
        wanted = [
            m
            for m in members
            if m.name.startswith(vendor)
            and m.name[len(vendor) :].split("/")[0] in CONVERTER_PARTS
            and (m.isfile() or m.isdir())
        ]
        if not any(m.name == vendor + CONVERTER for m in wanted):
            raise ForgeError(
                f"{sdist} holds no {SDIST_VENDOR}/{CONVERTER}: not a llama-cpp-python sdist?"
            )
        final = destination or cache_root() / f"llama.cpp-{release}"
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            extract_plain(archive, staging, wanted)
            unpacked = staging / vendor
            record = {
                "llama_cpp_python": release,
                "sdist": sdist.name,
                "sha256": sha256_file(sdist),
            }
            (unpacked / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(unpacked, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _describe(final)


def status() -> dict[str, object]:
    """What GGUF export would use right now, for `status` and bug reports."""
    try:
        converter: object = find_converter().describe()
    except ForgeError as error:
        converter = {"missing": str(error)}
    return {"converter": converter, "llama_cpp_python": llama_cpp_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m forgeml.export.toolchain", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser(
        "install", help="unpack the converter from a llama-cpp-python sdist"
    )
    install.add_argument("sdist", type=Path)
    install.add_argument(
        "--dest", type=Path, default=None, help="default: ~/.cache/forgeml/llama.cpp-<version>"
    )
    commands.add_parser("status", help="show what GGUF export would use")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(json.dumps(install_converter(args.sdist, args.dest).describe(), indent=2))
        else:
            print(json.dumps(status(), indent=2))
    except ForgeError as error:
        print(f"error: {error}" + (f"\n{error.hint}" if error.hint else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
