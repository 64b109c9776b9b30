"""`--executor ray` on data.ingest, data.assess and data.clean: files are read and the
detectors run as Ray tasks (a `ray start` cluster or a local Ray, 2 CPUs) and the
artifacts are byte-identical to the local executor's,
through the installed CLI as a user runs it. A Ray address that does not answer is an
error before anything is read, and so is one where something else answers. Duplicate
detection's Ray Data plan, driven in this process on the same kind of cluster, decides
as the local index on a corpus made to take every path."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from forgeml.data.dedup import NearDuplicateIndex
from forgeml.data.ray_dedup import (
    EXACT,
    HOT,
    NEEDED,
    PAIR,
)
from ray_fixtures import ray_head

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def forgeml(root, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), *args]
    try:  # under pytest's own timeout, so that a stuck command shows where it was
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    except subprocess.TimeoutExpired as exc:
        said = (
            (exc.stderr or b"").decode(errors="replace")
            if isinstance(exc.stderr, bytes)
            else exc.stderr
        )
        pytest.fail(
            f"forgeml {' '.join(args)} ran over 300 s; it had said:\n{(said or '')[-4000:]}"
        )
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2,600 documents (three scan batches): exact copies, near copies and PII among them."""
    rng = random.Random(7)
    words = [
        "claim",
        "policy",
        "refund",
        "invoice",
        "approval",
        "customer",
        "ticket",
        "region",
        "account",
    ]
    lines = []
    for index in range(2600):
        text = " ".join(rng.choice(words) for _ in range(40)) + f" case {index}."
        if index % 50 == 7:
            text = lines[index - 5]["text"]  # an exact copy of an earlier one
        elif index % 40 == 11:  # a near copy: one word of an earlier one changed
            earlier = lines[index - 3]["text"].split()
            earlier[5] = "escalation"
            text = " ".join(earlier)
        if index % 90 == 3:
            text += f" Write to agent{index}@example.com or call +44 20 7946 {index % 10000:04d}."
        lines.append({"text": text})
    folder = tmp_path_factory.mktemp("corpus")
    for part in range(4):  # four files (four read tasks), a text file and one unreadable
        chunk = lines[part * 650 : (part + 1) * 650]
        (folder / f"part-{part}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in chunk))
    (folder / "notes.txt").write_text("Escalations go to the regional lead within two days. " * 9)
    (folder / "scan.bin").write_bytes(b"\x00\x01 not a document")
    return folder


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster of 2 CPUs on loopback (`ray start --head`); its address."""
    with ray_head(tmp_path, dashboard=False) as (address, _):
        yield address


def test_ray_gives_the_local_executors_bytes(tmp_path, corpus, ray_cluster):
    """ingest and assess on a running cluster, clean on a local Ray started for the run:
    the local executor's artifacts every time."""
    root = tmp_path / "ws"
    forgeml(root, "init")
    local_ingest = json.loads(
        forgeml(root, "--json", "data", "ingest", str(corpus), "--name", "docs").stdout
    )
    read_on_ray = forgeml(root, "--debug", "--json", "data", "ingest", str(corpus), "--executor",
                          "ray", "--ray-address", ray_cluster)  # fmt: skip
    assert "6 Ray tasks ran read_file on 2 CPUs" in read_on_ray.stderr, read_on_ray.stderr[-2000:]
    ray_ingest = json.loads(read_on_ray.stdout)
    assert ray_ingest["outputs"] == local_ingest["outputs"]
    assert ray_ingest["metrics"] == local_ingest["metrics"]
    assert local_ingest["metrics"]["files"] == 5 and local_ingest["metrics"]["rejected"] == 1
    clean = ["data", "clean", "docs", "--no-quality", "--workers", "2"]
    assess = ["data", "assess", "docs", "--workers", "2"]
    local_clean = json.loads(forgeml(root, "--json", *clean).stdout)
    local_assess = json.loads(forgeml(root, "--json", *assess).stdout)
    on_ray = forgeml(root, "--debug", "--json", *clean, "--executor", "ray")
    assert "Ray tasks ran _inspect_batch on 2 CPUs" in on_ray.stderr, on_ray.stderr[-2000:]
    ray_clean = json.loads(on_ray.stdout)
    ray_assess = json.loads(forgeml(root, "--debug", "--json", *assess, "--executor", "ray",
                                    "--ray-address", ray_cluster).stdout)  # fmt: skip

    assert ray_clean["run_id"] != local_clean["run_id"]  # two runs ...
    assert ray_clean["outputs"] == local_clean["outputs"]  # ... one set of bytes
    assert ray_clean["metrics"] == local_clean["metrics"]
    assert local_clean["metrics"]["removed_documents"] > 0
    local_report = json.loads(forgeml(root, "--json", "artifacts", "show",
                                      local_assess["outputs"]["report"]).stdout)  # fmt: skip
    report = json.loads((Path(local_report["path"]) / "report.json").read_text())
    assert (
        report["near_duplicates"]["documents"] > 0 and report["exact_duplicates"]["documents"] > 0
    )
    assert local_clean["metrics"]["redacted_documents"] > 0
    findings = [
        (Path(json.loads(forgeml(root, "--json", "artifacts", "show", run["outputs"]["report"]).stdout)["path"]) / "documents.parquet").read_bytes()
        for run in (local_assess, ray_assess)
    ]  # fmt: skip
    assert findings[0] == findings[1]


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    """A web server on loopback: its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_ray_address_that_does_not_answer_is_said_before_reading(tmp_path, corpus):
    root = tmp_path / "ws"
    forgeml(root, "init")
    forgeml(root, "data", "ingest", str(corpus), "--name", "docs")
    started = time.monotonic()
    done = forgeml(root, "data", "clean", "docs", "--executor", "ray", "--ray-address",
                   "127.0.0.1:9", ok=False)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "the Ray cluster at 127.0.0.1:9 does not answer" in done.stderr, done.stderr
    assert time.monotonic() - started < 60
    with http_server() as port:  # a port that answers, but not as Ray does
        started = time.monotonic()
        done = forgeml(root, "data", "assess", "docs", "--executor", "ray", "--ray-address",
                       f"127.0.0.1:{port}", ok=False)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"something answers at 127.0.0.1:{port} but it is not a Ray cluster" in done.stderr
    assert time.monotonic() - started < 60, "Ray's own retries take about 14 minutes"
    bad = forgeml(root, "data", "clean", "docs", "--executor", "spark", ok=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "executor" in bad.stderr


WORDS = [
    "claim",
    "policy",
    "refund",
    "invoice",
    "approval",
    "customer",
    "ticket",
    "region",
    "account",
    "parcel",
]


def dedup_corpus(count: int = 3000) -> list[str]:
    rng = random.Random(3)
    texts: list[str] = []
    for index in range(count):
        draw = rng.random()
        if texts and draw < 0.05:
            texts.append("  " + rng.choice(texts).upper())  # an exact copy, folded
        elif texts and draw < 0.25:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)  # a near copy
            texts.append(" ".join(words))
        elif draw < 0.27:
            texts.append("!!! ...")  # no words: no bands
        elif draw < 0.45:  # one template: a few band keys shared by hundreds
            texts.append("the standard notice for a parcel " + " ".join(rng.choices(WORDS, k=3)))
        else:
            texts.append(" ".join(rng.choices(WORDS, k=30)) + f" case {index}")
    return texts


# The Ray side of the plan test, in a process of its own as a user's driver is: Ray fixes
# a process's node address when first imported, and this test process may have imported
# it already for another file's cluster (the driver then looked for the loopback head at
# the machine's outward address, or its Ray Data tasks never ran: seen in CI).
PLAN_ON_RAY = """
import dataclasses, json, sys
import pyarrow as pa
from forgeml.data.ray_dedup import PlannedDuplicateIndex, document_keys, duplicate_plan, plan_by_document
from forgeml.data.ray_executor import ray_session

address, corpus = sys.argv[1:3]
texts = json.loads(open(corpus).read())
ids = [f"doc-{index}" for index in range(len(texts))]
with ray_session(address, 2) as ray:
    keys = [ray.put(document_keys(texts[s : s + 500], s, 0.8)) for s in range(0, 3000, 500)]
    # Bands shared by more than 5 documents are HOT: both ways are taken.
    plan = duplicate_plan(ray, keys, partitions=3, hot_group=5).materialize()
    rows = pa.concat_tables(list(plan.iter_batches(batch_format="pyarrow")))
    planned = PlannedDuplicateIndex(plan_by_document(plan))
    got = [planned.add(doc_id, text) for doc_id, text in zip(ids, texts, strict=True)]
print(json.dumps({
    "got": [dataclasses.asdict(match) if match else None for match in got],
    "clusters": planned.clusters(),
    "kinds": rows["kind"].to_pylist(),
    "docs": rows["doc"].to_pylist(),
}))
"""


def test_a_ray_plan_decides_as_the_local_index(ray_cluster, tmp_path):
    """Duplicate detection planned by Ray Data (data/ray_dedup.py) decides every document
    as the local index does: exact copies (case and spacing folded), near copies, copies
    of near copies, texts without words, and band keys shared by too many documents to
    pair (resolved in the driver, as `HOT` rows)."""
    texts = dedup_corpus()
    ids = [f"doc-{index}" for index in range(len(texts))]
    local = NearDuplicateIndex()
    expected = [local.add(doc_id, text) for doc_id, text in zip(ids, texts, strict=True)]
    corpus = tmp_path / "texts.json"
    corpus.write_text(json.dumps(texts))
    done = subprocess.run([sys.executable, "-c", PLAN_ON_RAY, ray_cluster, str(corpus)],
                          capture_output=True, text=True, timeout=500, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])

    assert found["got"] == [dataclasses.asdict(match) if match else None for match in expected]
    assert found["clusters"] == local.clusters()
    kinds = Counter(match.kind for match in expected if match)
    assert kinds["exact"] > 100 and kinds["near"] > 50
    planned_kinds = Counter(found["kinds"])
    assert all(planned_kinds[kind] > 0 for kind in (EXACT, PAIR, HOT, NEEDED))
    assert found["docs"] == sorted(found["docs"])
