"""`executor: ray` against the local executor on the same corpus, in one run.

    .venv/bin/python benchmarks/data_on_ray.py [--docs 20000] [--seed 0]
        [--configs local:1,local:2,ray:1,ray:2]

Generates data_pipeline.py's corpus (prose with PII, exact and near copies; 8 jsonl
files), then for each configuration runs `data.ingest` and `data.assess` in a fresh
process and temp workspace: the local executor with 1 and 2 detector processes, and a
local Ray (started for the run, as `--executor ray` does without a cluster) with 1 and 2
CPUs. Reports seconds per stage (Ray's start-up included: it is what a user waits for),
assess documents/s, the driver's peak RSS (flat when the corpus streams through it) and
the whole process tree's peak PSS, and whether the assessment's findings are the same
bytes as the local executor's. Ray's start-up (~10 s here) dominates at small sizes; the
scaling that matters is per added CPU on a real cluster, which this machine (2 cores)
cannot show.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from data_pipeline import generate, tree_memory, write_corpus

CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


class PhasePeaks(threading.Thread):
    """This process's peak private memory (RssAnon: its own heap, not the shared memory
    of Ray's object store that RSS also counts) in each phase, sampled every 20 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.phase = "start"
        self.peaks: dict[str, float] = {}

    def run(self) -> None:
        status = Path("/proc/self/status")
        while True:
            anon = int(status.read_text().split("RssAnon:")[1].split()[0]) / 2**10
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), anon)
            time.sleep(0.02)


def worker(corpus: Path, executor: str, workers: int, out: Path) -> None:
    """One configuration, in this process: ingest then assess; timings and hashes to `out`."""
    from forgeml.core.runs import run_stage
    from forgeml.core.workspace import Workspace

    workspace = Workspace.init(Path(tempfile.mkdtemp(prefix="ray-bench-")) / "ws")
    params = {"executor": executor}
    memory = PhasePeaks()
    memory.start()
    memory.phase = "ingest"
    started = time.perf_counter()
    ingest = run_stage(workspace, "data.ingest", {"paths": [str(corpus)], **params})
    read = time.perf_counter() - started
    memory.phase = "assess"
    started = time.perf_counter()
    assess = run_stage(workspace, "data.assess", {"workers": workers, **params},
                       {"dataset": ingest.outputs["dataset"].ref})  # fmt: skip
    assessed = time.perf_counter() - started
    findings = workspace.local_path(assess.outputs["report"]) / "documents.parquet"
    # Mixing has no executor: one process, whatever the row (see the table's mix column).
    memory.phase = "mix"
    started = time.perf_counter()
    mix = run_stage(workspace, "data.mix", {"tokens": 2 * ingest.metrics["characters"] // 4},
                    {"datasets": [ingest.outputs["dataset"].ref]})  # fmt: skip
    mixed = time.perf_counter() - started
    out.write_text(json.dumps({
        "ingest_s": read,
        "assess_s": assessed,
        "mix_s": mixed,
        "assess_private_mb": memory.peaks.get("assess", 0.0),
        "mix_private_mb": memory.peaks.get("mix", 0.0),
        "mixture": mix.outputs["mixture"].sha256,
        "documents": ingest.metrics["documents"],
        "dataset": ingest.outputs["dataset"].sha256,
        "findings": hashlib.sha256(findings.read_bytes()).hexdigest(),
    }))  # fmt: skip


def measure(corpus: Path, executor: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        command = [
            sys.executable,
            __file__,
            "--worker",
            executor,
            str(workers),
            str(corpus),
            str(out),
        ]
        child = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
        process = psutil.Process(child.pid)
        peaks = {"driver": 0.0, "tree": 0.0}

        def sample() -> None:
            while child.poll() is None:
                try:
                    peaks["driver"] = max(peaks["driver"], process.memory_info().rss / 2**20)
                    peaks["tree"] = max(peaks["tree"], tree_memory(process))
                except psutil.Error:
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        if child.wait() != 0:
            raise SystemExit(f"{executor} x{workers} failed")
        watcher.join()
        return {
            **json.loads(out.read_text()),
            "driver_mb": peaks["driver"],
            "tree_mb": peaks["tree"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default=",".join(f"{e}:{w}" for e, w in CONFIGS),
                        help="executor:CPUs, comma-separated; the first is the reference")  # fmt: skip
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        executor, workers, corpus, out = args.worker
        worker(Path(corpus), executor, int(workers), Path(out))
        return
    with tempfile.TemporaryDirectory() as scratch:
        documents, truth = generate(args.docs, args.seed)
        corpus = Path(scratch) / "corpus"
        truth = write_corpus(corpus, documents, truth)
        configs = [(name, int(cpus)) for name, _, cpus in
                   (config.partition(":") for config in args.configs.split(","))]  # fmt: skip
        rows = [
            (executor, workers, measure(corpus, executor, workers)) for executor, workers in configs
        ]
    reference = rows[0][2]
    print(f"{args.docs:,} documents, {truth.bytes / 2**20:.1f} MB of jsonl in 8 files\n")
    print(
        "executor  CPUs  ingest s  assess s  assess docs/s  mix s  driver MB  private MB "
        "(assess / mix)  tree MB  same bytes"
    )
    for executor, workers, result in rows:
        same = (
            result["dataset"] == reference["dataset"]
            and result["findings"] == reference["findings"]
            and result["mixture"] == reference["mixture"]
        )
        print(f"{executor:8s}  {workers:4d}  {result['ingest_s']:8.1f}  {result['assess_s']:8.1f}  "
              f"{result['documents'] / result['assess_s']:13,.0f}  {result['mix_s']:5.1f}  "
              f"{result['driver_mb']:9.0f}  {result['assess_private_mb']:9.0f} / "
              f"{result['mix_private_mb']:<7.0f}  "
              f"{result['tree_mb']:7.0f}  {'yes' if same else 'NO'}")  # fmt: skip


if __name__ == "__main__":
    main()
