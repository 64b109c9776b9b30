"""A workspace shared by several machines: the registry on PostgreSQL and the artifacts in
an S3-compatible store (moto's server on loopback). Each "machine" is its own workspace
folder driven by the installed CLI, as a user on another node would; nothing is shared
but the database and the bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s3_server import BUCKET, machine_env

pytestmark = pytest.mark.postgres


def forgeml(root: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def new_machine(root: Path, env: dict, store: dict | None) -> None:
    forgeml(root, env, "init")
    if store is not None:
        settings = yaml.safe_load((root / "forgeml.yaml").read_text())
        (root / "forgeml.yaml").write_text(yaml.safe_dump({**settings, "artifact_store": store}))


def corpus(directory: Path) -> Path:
    directory.mkdir()
    for index in range(6):
        (directory / f"note-{index}.txt").write_text(
            f"Policy note {index}. Claims over {index * 1000} euros need two approvals. " * 20
        )
    return directory


def shown(root: Path, env: dict, ref: str) -> dict:
    return json.loads(forgeml(root, env, "--json", "artifacts", "show", ref).stdout)


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_machines_share_artifacts_through_the_store_with_hashes_checked(
    tmp_path, s3_endpoint, bucket, postgres_url
):
    env = machine_env(s3_endpoint, postgres_url)
    url = f"s3://{BUCKET}/team"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    new_machine(a, env, {"url": url, "endpoint_url": s3_endpoint})  # in forgeml.yaml
    by_env = {**env, "FORGEML_ARTIFACT_STORE": url, "AWS_ENDPOINT_URL": s3_endpoint}
    new_machine(b, by_env, None)  # FORGEML_ARTIFACT_STORE and AWS's own endpoint variable
    new_machine(c, by_env, None)

    made = json.loads(forgeml(a, env, "--json", "data", "ingest", str(corpus(tmp_path / "docs")),
                              "--name", "docs").stdout)  # fmt: skip
    dataset = shown(a, env, made["outputs"]["dataset"])
    relative = f"artifacts/dataset/{dataset['sha256']}"
    published = bucket.find(f"{BUCKET}/team/{relative}")
    assert f"{BUCKET}/team/{relative}/manifest.json" in published and len(published) >= 2

    # Machine B has never seen the dataset: assessing it fetches it, hashes checked.
    assert not (b / relative).exists()
    assessed = json.loads(forgeml(b, by_env, "--json", "data", "assess", "docs").stdout)
    assert files_under(b / relative) == files_under(a / relative)
    report = shown(b, by_env, assessed["outputs"]["report"])
    assert bucket.exists(
        f"{BUCKET}/team/artifacts/{report['kind']}/{report['sha256']}/manifest.json"
    )

    # Tampered bytes in the store are refused and never placed on machine C.
    shard = next(p for p in published if not p.endswith("manifest.json"))
    bucket.pipe(shard, b'{"text": "not what was ingested"}\n')
    refused = forgeml(c, by_env, "data", "clean", "docs", ok=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "is corrupt" in refused.stderr and "it was not used" in refused.stderr, refused.stderr
    assert not (c / relative).exists()

    # Erasure on a machine that never held the bytes still erases the store's copy.
    forgeml(c, by_env, "data", "forget", "docs", "--reason", "ticket-7")
    bucket.invalidate_cache()
    assert bucket.find(f"{BUCKET}/team/{relative}") == []
    forgeml(a, env, "data", "forget", "docs", "--reason", "ticket-7")
    assert not (a / relative).exists()


def test_a_store_that_cannot_be_written_is_said_before_work_starts(
    tmp_path, s3_endpoint, bucket, postgres_url
):
    env = machine_env(s3_endpoint, postgres_url)
    docs = corpus(tmp_path / "docs")
    for url, endpoint, said in [
        (f"s3://no-such-bucket-{os.getpid()}/team", s3_endpoint, "could not be written"),
        (f"s3://{BUCKET}/team", "http://127.0.0.1:9", "could not be written"),  # nobody there
    ]:
        root = tmp_path / f"ws-{len(said)}-{endpoint.rsplit(':', 1)[1]}"
        new_machine(root, env, {"url": url, "endpoint_url": endpoint})
        done = forgeml(root, env, "data", "ingest", str(docs), ok=False)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert f"the artifact store {url} {said}" in done.stderr, done.stderr
        runs = json.loads(forgeml(root, env, "--json", "runs", "list").stdout)
        assert runs == []  # refused before any run was recorded
        shutil.rmtree(root)


def test_a_misspelt_store_setting_is_named(tmp_path):
    root = tmp_path / "ws"
    env = {**os.environ}
    new_machine(root, env, {"url": "s3://x/y", "endpoint": "http://127.0.0.1:1"})
    done = forgeml(root, env, "artifacts", "list", ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "artifact_store: unknown setting 'endpoint'" in done.stderr, done.stderr


def test_a_shared_filesystem_path_is_a_store_too_and_older_work_is_published(tmp_path):
    """A workspace that worked alone, then shares: `forgeml artifacts publish` puts what it
    made before into the store (a shared folder here), and another machine reads it."""
    shared = tmp_path / "nfs" / "forgeml-artifacts"
    alone = {**os.environ, "FORGEML_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    env = {**alone, "FORGEML_ARTIFACT_STORE": str(shared)}
    a, b = tmp_path / "a", tmp_path / "b"
    new_machine(a, alone, None)
    made = json.loads(forgeml(a, alone, "--json", "data", "ingest", str(corpus(tmp_path / "docs")),
                              "--name", "docs").stdout)  # fmt: skip
    relative = f"artifacts/dataset/{shown(a, alone, made['outputs']['dataset'])['sha256']}"
    refused = forgeml(a, alone, "artifacts", "publish", ok=False)
    assert refused.returncode != 0 and "no shared store to publish to" in refused.stderr

    published = json.loads(forgeml(a, env, "--json", "artifacts", "publish").stdout)
    assert published == {"published": 1, "already_there": 0, "damaged": []}
    assert files_under(shared / relative) == files_under(a / relative)
    again = json.loads(forgeml(a, env, "--json", "artifacts", "publish").stdout)
    assert again == {"published": 0, "already_there": 1, "damaged": []}

    new_machine(b, env, None)
    forgeml(b, env, "data", "assess", "docs")
    assert files_under(b / relative) == files_under(a / relative)
