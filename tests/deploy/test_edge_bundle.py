"""`forgeml deploy bundle --target edge`, through the installed CLI: what the bundle holds,
that the same model and flags give the same bytes, and the errors for bad requests."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from deploy_fixtures import MODEL, bundle_files, forgeml, import_artifact

from forgeml.core.forget import forget
from forgeml.core.workspace import Workspace
from forgeml.deploy.edge import RUNTIME_PINS

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (make gguf)",
    ),
]
FILES = bundle_files("f16")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def top_level_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def bundle(root: Path, output: Path, *args: str) -> subprocess.CompletedProcess:
    return forgeml(
        root, "--json", "deploy", "bundle", MODEL, "--target", "edge", "-o", str(output), *args
    )


def test_the_bundle_holds_every_promised_file_and_rebuilds_byte_for_byte(edge_workspace, tmp_path):
    made = bundle(edge_workspace, tmp_path / "a", "--quant", "f16")
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    directory = tmp_path / "a"
    assert {p.name for p in directory.iterdir()} == FILES
    manifest = json.loads((directory / "bundle.json").read_text())
    assert set(manifest["files"]) == FILES - {"bundle.json"}
    for name, entry in manifest["files"].items():
        assert sha256(directory / name) == entry["sha256"], name
        assert (directory / name).stat().st_size == entry["size_bytes"]
    assert report["size_bytes"] == sum(e["size_bytes"] for e in manifest["files"].values())
    assert os.access(directory / "serve", os.X_OK)
    imported = top_level_imports((directory / "serve").read_text())
    assert {"llama_cpp", "uvicorn"} <= imported and not {"forgeml", "torch"} & imported

    # What each file is: the export's GGUF, the model's template, card and lineage.
    workspace = Workspace.open(edge_workspace)
    try:
        model = workspace.registry.resolve(MODEL, purpose="be checked")
        export = workspace.registry.resolve(manifest["made_by"]["export"], purpose="be checked")
        model_dir, export_dir = workspace.root / model.path, workspace.root / export.path
    finally:
        workspace.close()
    assert sha256(directory / "model-f16.gguf") == sha256(export_dir / "model-f16.gguf")
    template = (model_dir / "chat_template.jinja").read_text()
    assert (directory / "chat_template.jinja").read_text() == template
    assert manifest["model"] | {"name": f"{MODEL}:1", "sha256": model.sha256} == manifest["model"]
    lineage = json.loads((directory / "lineage.json").read_text())
    assert lineage["model"]["sha256"] == model.sha256
    assert lineage["export"]["sha256"] == export.sha256
    assert f"# Model card: {MODEL}:1" in (directory / "MODEL_CARD.md").read_text()
    requirements = (directory / "requirements.txt").read_text().splitlines()
    assert requirements == [
        f"llama_cpp_python=={manifest['runtime']['llama_cpp_python']}",
        *RUNTIME_PINS,
    ]

    # The same model and flags: the same bytes, as a directory and as a tarball.
    assert bundle(edge_workspace, tmp_path / "b", "--quant", "f16").returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == {
        p.name: p.read_bytes() for p in directory.iterdir()
    }
    for name in ("one.tar.gz", "two.tgz"):
        result = bundle(edge_workspace, tmp_path / name, "--quant", "f16")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tgz").read_bytes()
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        assert {name.split("/", 1)[1] for name in members} == FILES
        for name, member in members.items():
            assert (
                tar.extractfile(member).read() == (directory / name.split("/", 1)[1]).read_bytes()
            )
        assert members[next(n for n in members if n.endswith("/serve"))].mode == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left"

    # ./serve --verify checks every file against the manifest (no llama.cpp needed).
    verify = subprocess.run([str(directory / "serve"), "--verify"], capture_output=True, text=True)
    assert verify.returncode == 0 and "bundle intact" in verify.stderr
    with open(directory / "model-f16.gguf", "r+b") as gguf:
        gguf.seek(-1, os.SEEK_END)
        last = gguf.read(1)
        gguf.seek(-1, os.SEEK_END)
        gguf.write(bytes([last[0] ^ 1]))
    verify = subprocess.run([str(directory / "serve"), "--verify"], capture_output=True, text=True)
    assert verify.returncode == 1 and "model-f16.gguf: sha256 differs" in verify.stderr


def test_bad_requests_get_a_clear_error_and_leave_nothing_behind(
    edge_workspace, edge_model_dir, tmp_path, workspace
):
    tmp_path = tmp_path / "out"  # the `workspace` fixture lives next to it
    tmp_path.mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "taken.tar.gz").write_text("mine")
    cases = [
        (["nosuch"], "no artifact or version named 'nosuch'"),
        ([MODEL, "--quant", "q3_k"], "unknown quantisation 'q3_k'"),
        ([MODEL, "-o", str(tmp_path / "full")], "exists and is not empty"),
        ([MODEL, "-o", str(tmp_path / "taken.tar.gz")], "already exists"),
        ([MODEL, "--target", "cloud"], "unknown target 'cloud'"),
    ]
    for args, message in cases:
        command = ["deploy", "bundle", *args]
        command += [] if "-o" in args else ["-o", str(tmp_path / "new")]
        command += [] if "--target" in args else ["--target", "edge"]
        result = forgeml(edge_workspace, *command)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "taken.tar.gz").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "taken.tar.gz"]

    # A model whose data was forgotten is refused, naming the deletion request.
    model = import_artifact(workspace, edge_model_dir, "model")
    forget(workspace, model, "GDPR #7")
    result = forgeml(
        workspace.root, "deploy", "bundle", model.ref, "--target", "edge", "-o", str(tmp_path / "x")
    )
    assert result.returncode == 2 and "GDPR #7" in result.stderr, result.stderr
    assert not (tmp_path / "x").exists()
