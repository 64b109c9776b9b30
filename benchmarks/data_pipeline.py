"""End-to-end speed and quality of forgeml's data pipeline, against datatrove in the same run.

    .venv/bin/python benchmarks/data_pipeline.py [--docs 50000] [--small-docs 2500] [--seed 0] [--profile]

Generates a sharded jsonl corpus (8 files) whose truth is known: prose from Python's own
docstrings, 100-200 words a document, with injected PII of six types, PII look-alikes
(Luhn-invalid card numbers, bad IBAN checksums, dates, versions, order ids), exact and
near copies of earlier documents (true 5-shingle Jaccard >= 0.82), and "hard
negatives" that only resemble an earlier document (Jaccard 0.5-0.77). Then it runs:

- ours: forgeml `data.ingest` -> `data.assess` -> `data.clean` through `run_stage` in a
  temp workspace (2 detector workers), `data.clean` reusing the assessment's findings;
  on --small-docs (default --docs / 20) and --docs documents;
- before: the same, with the near-duplicate index forgeml had before
  (dedup_baseline.py: datasketch MinHashLSH, estimated Jaccard), on the same sizes;
- the reference: datatrove 0.10 with the same steps, 2 workers: jsonl reader, Gopher
  repetition + quality filters, PII formatter, writer, then MinHash dedup (5-grams,
  14 bands x 8 hashes: signatures, buckets, clusters, filter); it is ~10x slower, so
  on --docs / 40 and --docs / 20 documents (`--reference-docs N` for its larger size).

Runs are interleaved so that a change in machine load hits both. Each runs in its own
process: times exclude interpreter start-up and imports (CPU s: CPU time of the process
and its workers, which other jobs on the machine do not inflate); peak memory is the largest
sum of PSS over the process tree (sampled every 50 ms), and +MB is that above the
footprint after imports. Quality is scored from what each pipeline outputs, the same
way for both: near-duplicate recall over planted copies, false removals, and PII recall
(injected value gone from the output) and precision (placeholders that replaced one).
`--profile` adds a cProfile of ours (one process) on the smaller corpus.

datatrove conflicts with forgeml's dependencies (it pins trafilatura 1.x), so it lives in
its own virtual environment, next to the repository; this file runs itself there with
`--worker datatrove`:

    python3.11 -m venv ../.venv-datatrove
    ../.venv-datatrove/bin/pip install 'datatrove[processing]' spacy orjson psutil

(`--datatrove-python PATH` or $DATATROVE_PYTHON picks another interpreter.) Without it,
the output says why and shows only ours.

Measured with `--docs 50000 --small-docs 10000 --no-reference` (8 min; 2 CPU cores
shared with other jobs, so wall times move from run to run; CPU s less so):

    pipeline    docs  seconds  CPU s docs/s peak MB dup rec rec>=.85 dup FP PII rec PII prec
    forgeml   10,000     11.1   16.1    904     701   1.000    1.000      0  1.000    1.000
    forgeml   50,000     68.7   87.6    728     750   1.000    1.000      0  1.000    1.000
    before    10,000     15.0   19.1    666     770   0.977    0.997      0  1.000    1.000
    before    50,000    112.9   98.5    443     984   0.977    0.996      5  1.000    1.000

The index verifies candidates with the exact Jaccard of the shingle sets, so no hard
negative is removed (before: 5 of 977, from MinHash estimate noise) and no planted copy
is missed (before: 2.3%, mostly copies at 0.82-0.85 estimated below 0.8). Peak memory
grows by ~50 MB from 10k to 50k documents (before: ~210 MB): ~13 MB is the index
(~330 bytes a kept document, on-disk shingle sets aside), and the rest appears with no
duplicate index at all (measured with a null index: +33 MB in `data.assess`).

Earlier, with the default sizes and datatrove installed (the index then was `before`):

    pipeline     docs  seconds docs/s  MB/s peak MB  +MB dup rec dup FP PII rec PII prec
    forgeml     2,500      8.2    304  0.30     693  185   0.989      0  1.000    1.000
    forgeml    50,000     82.9    603  0.60   1,058  565   0.977      5  1.000    1.000
    datatrove   1,250     31.4     40  0.04     267  209   1.000      2  0.365    1.000
    datatrove   2,500     59.1     42  0.04     267  208   0.994      6  0.358    1.000

forgeml was 7.2x datatrove end to end on the same 2,500 documents (marginal rates 636
vs 45 docs/s). datatrove covers only e-mail and IP addresses (recall 1.0 on those) and
removes hard negatives its LSH flags (6 of 36); its dedup works on disk and stays flat.
cProfile of ours (`--profile`): language identification ~40% (py3langid's per-byte DFA
walk in Python), Gopher signals ~18%, the duplicate index and the writers ~20%, PII ~3%,
ingest ~4%.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATATROVE_PYTHON = ROOT.parent / ".venv-datatrove" / "bin" / "python"
SHARDS = 8
WORKERS = 2
DUPLICATE_RATE = 0.08  # share of documents that copy an earlier one (exactly or nearly)
HARD_NEGATIVE_RATE = 0.02  # share that resembles an earlier one, below the threshold
PII_RATE = 0.25
LOOKALIKE_RATE = 0.15
THRESHOLD = 0.8
PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|CREDIT_CARD|IBAN|IP_ADDRESS|US_SSN)>")
DATATROVE_PLACEHOLDERS = {"email": "<EMAIL>", "ip_address": "<IP_ADDRESS>"}


# --- the corpus --------------------------------------------------------------------------


def prose_sentences() -> list[str]:
    """Sentences of English prose from the standard library's docstrings and pydoc topics."""
    shape = re.compile(r"[A-Z][A-Za-z ,;:'()-]+[.!?]")
    texts = list(topics.values())
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                texts.append(ast.get_docstring(node) or "")
    sentences = set()
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 6 <= len(sentence.split()) <= 40 and shape.fullmatch(sentence):
                sentences.add(sentence)
    return sorted(sentences)


def luhn_digit(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


def iban(rng: random.Random, valid: bool = True) -> str:
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18)])
    if country == "GB":
        bban = "NWBK" + "".join(rng.choice("0123456789") for _ in range(length - 8))
    elif country == "NL":
        bban = "ABNA" + "".join(rng.choice("0123456789") for _ in range(length - 8))
    else:
        bban = "".join(rng.choice("0123456789") for _ in range(length - 4))
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = check % 97 + 1 if check < 98 else 2  # any other pair is wrong
    plain = f"{country}{check:02d}{bban}"
    return " ".join(plain[i : i + 4] for i in range(0, len(plain), 4))


def pii_value(rng: random.Random, kind: str) -> str:
    digits = "0123456789"
    if kind == "email":
        first = rng.choice(["ana", "li", "sam", "noor", "kofi", "marta", "jun", "olga"])
        last = rng.choice(["diaz", "chen", "okafor", "berg", "rossi", "silva", "kim"])
        domain = rng.choice(["example.org", "acme-corp.com", "mail.example.net", "uni.edu"])
        return f"{first}.{last}{rng.randint(1, 999)}@{domain}"
    if kind == "phone":
        style = rng.randrange(3)
        if style == 0:
            return f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}"
        if style == 1:
            return f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        return f"+49 30 {rng.randint(1000000, 9999999)}"
    if kind == "credit_card":
        body = rng.choice(["4", "51", "55"]) + "".join(rng.choice(digits) for _ in range(13))
        number = body[:15] + luhn_digit(body[:15])
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    if kind == "iban":
        return iban(rng)
    if kind == "ip_address":
        while True:  # public addresses only: datatrove leaves private ones alone, by design
            address = ".".join(str(rng.randint(1, 254)) for _ in range(4))
            if ipaddress.ip_address(address).is_global:
                return address
    assert kind == "us_ssn"
    return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


PII_SENTENCES = {
    "email": "Questions about this module go to {} and are answered within a week.",
    "phone": "You can reach the maintainers on {} during office hours.",
    "credit_card": "The licence was paid with the card {} last spring.",
    "iban": "Donations are welcome on the account {} of the foundation.",
    "ip_address": "The build server answers at {} on the internal network.",
    "us_ssn": "The contributor agreement lists the SSN {} for the author.",
}


def lookalike_sentence(rng: random.Random) -> str:
    """Text that resembles PII but is not: a careful detector leaves it alone."""
    kind = rng.randrange(5)
    if kind == 0:
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        wrong = str((int(luhn_digit(body)) + rng.randint(1, 9)) % 10)
        number = body + wrong
        return f"The parcel tracking number is {' '.join(number[i : i + 4] for i in range(0, 16, 4))} today."
    if kind == 1:
        return f"Release {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} shipped on 2023-{rng.randint(1, 12):02d}-{rng.randint(10, 28)}."
    if kind == 2:
        return f"The order ORD-{rng.randint(100000, 999999)} was filed under case {rng.randint(1000, 9999)}."
    if kind == 3:
        return f"The old account {iban(rng, valid=False)} was closed years ago."
    return f"Form 000-{rng.randint(10, 99)}-{rng.randint(1000, 9999)} is only a template number."


def shingles(text: str, size: int = 5) -> set[tuple[str, ...]]:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def jaccard(first: str, second: str) -> float:
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass
class Truth:
    """What was planted: copies (id -> original id, true Jaccard), hard negatives, PII."""

    duplicates: dict[str, tuple[str, float]] = field(default_factory=dict)
    hard_negatives: dict[str, tuple[str, float]] = field(default_factory=dict)
    pii: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id -> (type, value)
    bytes: int = 0


def mutate(rng: random.Random, text: str, rate: float, vocabulary: list[str]) -> str:
    words = text.split(" ")
    for index in range(len(words)):
        if rng.random() < rate and "\n" not in words[index]:
            words[index] = rng.choice(vocabulary)
    return " ".join(words)


def make_document(rng: random.Random, sentences: list[str], truth: Truth, doc_id: str) -> str:
    target = rng.randint(100, 190)
    chosen: list[str] = []
    words = 0
    while words < target:
        sentence = sentences[rng.randrange(len(sentences))]
        chosen.append(sentence)
        words += len(sentence.split())
    if rng.random() < PII_RATE:
        planted = []
        for kind in rng.sample(sorted(PII_SENTENCES), rng.choice([1, 1, 2])):
            value = pii_value(rng, kind)
            planted.append((kind, value))
            chosen.insert(rng.randrange(len(chosen) + 1), PII_SENTENCES[kind].format(value))
        truth.pii[doc_id] = planted
    if rng.random() < LOOKALIKE_RATE:
        chosen.insert(rng.randrange(len(chosen) + 1), lookalike_sentence(rng))
    cuts = sorted(rng.sample(range(1, len(chosen)), min(2, len(chosen) - 1)))
    paragraphs = [chosen[a:b] for a, b in zip([0, *cuts], [*cuts, len(chosen)], strict=True)]
    return "\n\n".join(" ".join(paragraph) for paragraph in paragraphs)


def generate(docs: int, seed: int) -> tuple[list[tuple[str, str]], Truth]:
    """(id, text) pairs in corpus order, every copy after its original, and the truth.

    Near copies have a true Jaccard >= 0.82 with their original; hard negatives 0.5-0.77,
    where an LSH without verification (14 bands x 8 rows) still flags many. Generation is
    sequential, so the first N documents are the same for any `docs` >= N.
    """
    rng = random.Random(seed)
    sentences = prose_sentences()
    vocabulary = sorted({word for sentence in sentences for word in sentence.split()})
    truth = Truth()
    originals: list[tuple[str, str]] = []
    documents: list[tuple[str, str]] = []
    for index in range(docs):
        doc_id = f"doc-{index:07d}"
        roll = rng.random()
        if originals and roll < DUPLICATE_RATE + HARD_NEGATIVE_RATE:
            original_id, original = originals[rng.randrange(len(originals))]
            if roll >= DUPLICATE_RATE:
                for rate in (0.06, 0.05, 0.04, 0.12):
                    text = mutate(rng, original, rate, vocabulary)
                    if jaccard(text, original) < THRESHOLD - 0.03:
                        break
                truth.hard_negatives[doc_id] = (original_id, jaccard(text, original))
            elif rng.random() < 0.3:  # exact, up to whitespace
                text = original.replace(". ", ".  ") if rng.random() < 0.5 else original
            else:
                for rate in (0.02, 0.015, 0.01, 0.0):
                    text = mutate(rng, original, rate, vocabulary)
                    if jaccard(text, original) >= THRESHOLD + 0.02:
                        break
            if doc_id not in truth.hard_negatives:
                truth.duplicates[doc_id] = (original_id, jaccard(text, original))
            if original_id in truth.pii:
                truth.pii[doc_id] = [
                    (kind, value) for kind, value in truth.pii[original_id] if value in text
                ]
        else:
            text = make_document(rng, sentences, truth, doc_id)
            originals.append((doc_id, text))
        documents.append((doc_id, text))
    return documents, truth


def write_corpus(directory: Path, documents: list[tuple[str, str]], truth: Truth) -> Truth:
    """The documents in SHARDS jsonl files; the truth about them (and their size)."""
    ids = {doc_id for doc_id, _ in documents}
    kept = Truth(
        duplicates={k: v for k, v in truth.duplicates.items() if k in ids},
        hard_negatives={k: v for k, v in truth.hard_negatives.items() if k in ids},
        pii={k: v for k, v in truth.pii.items() if k in ids},
    )
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(documents) // SHARDS)
    for shard in range(SHARDS):
        rows = documents[shard * per_shard : (shard + 1) * per_shard]
        payload = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows)
        (directory / f"shard-{shard:03d}.jsonl").write_text(payload, encoding="utf-8")
        kept.bytes += len(payload.encode("utf-8"))
    return kept


# --- the pipelines, each run in its own process ---------------------------------------------


def datatrove_worker(corpus: Path, out: Path) -> dict:
    """The reference: datatrove's own blocks, configured as its MinHash example does."""
    import psutil
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    tasks = len(list(corpus.glob("*.jsonl")))
    logs = out / "logs"

    def executor(pipeline: list, tasks: int, name: str, depends=None):
        return LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(WORKERS, tasks),
            logging_dir=str(logs / name),
            depends=depends,
        )

    filtered = executor(
        [
            JsonlReader(str(corpus), glob_pattern="*.jsonl"),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            PIIFormatter(
                email_replacement=DATATROVE_PLACEHOLDERS["email"],
                ip_replacement=DATATROVE_PLACEHOLDERS["ip_address"],
            ),
            JsonlWriter(str(out / "filtered")),
        ],
        tasks,
        "filter",
    )
    signatures = executor(
        [
            JsonlReader(str(out / "filtered")),
            MinhashDedupSignature(output_folder=str(out / "signatures"), config=config),
        ],
        tasks,
        "signatures",
        filtered,
    )
    buckets = executor(
        [
            MinhashDedupBuckets(
                input_folder=str(out / "signatures"),
                output_folder=str(out / "buckets"),
                config=config,
            )
        ],
        config.num_buckets,
        "buckets",
        signatures,
    )
    clusters = executor(
        [
            MinhashDedupCluster(
                input_folder=str(out / "buckets"),
                output_folder=str(out / "remove_ids"),
                config=config,
            )
        ],
        1,
        "clusters",
        buckets,
    )
    final = executor(
        [
            JsonlReader(str(out / "filtered")),
            MinhashDedupFilter(input_folder=str(out / "remove_ids")),
            JsonlWriter(str(out / "final")),
        ],
        tasks,
        "final",
        clusters,
    )
    baseline = tree_memory(psutil.Process())
    start, cpu = time.perf_counter(), cpu_seconds()
    final.run()  # runs its dependencies first
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds() - cpu,
        "baseline_mb": baseline,
    }


def ours_worker(corpus: Path, out: Path, before: bool = False) -> dict:
    """forgeml: ingest -> assess -> clean (with the assessment's findings) in a workspace.

    `before`: with the near-duplicate index forgeml had before (dedup_baseline.py), the
    baseline for the index's recall, false removals and memory.
    """
    import psutil

    from forgeml.core.runs import run_stage
    from forgeml.core.stages import list_stages
    from forgeml.core.workspace import Workspace

    if before:
        from dedup_baseline import DatasketchIndex

        import forgeml.data.scan

        forgeml.data.scan.NearDuplicateIndex = DatasketchIndex
    list_stages()  # import every stage module now: start-up is not pipeline time
    baseline = tree_memory(psutil.Process())
    workspace = Workspace.init(out / "workspace")
    times = {}
    start, cpu = time.perf_counter(), cpu_seconds()
    ingest = run_stage(
        workspace, "data.ingest", {"paths": [str(corpus)], "metadata_fields": ["id"]}
    )
    times["ingest"] = time.perf_counter() - start
    dataset = ingest.outputs["dataset"]
    report = run_stage(workspace, "data.assess", {"workers": WORKERS}, {"dataset": dataset})
    times["assess"] = time.perf_counter() - start - sum(times.values())
    cleaned = run_stage(
        workspace,
        "data.clean",
        {"workers": WORKERS},
        {"dataset": dataset, "report": report.outputs["report"]},
    )
    times["clean"] = time.perf_counter() - start - sum(times.values())
    root = workspace.root
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds() - cpu,
        "baseline_mb": baseline,
        "stages": times,
        "cleaned": str(root / cleaned.outputs["dataset"].path),
        "rejects": str(root / cleaned.outputs["rejects"].path),
        "metrics": cleaned.metrics,
    }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: unlike wall time, it does not
    grow when other jobs load the machine."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def tree_memory(process) -> float:
    """MB of memory a process and its children use: PSS (shared pages apportioned) when the
    platform reports it, so forked workers sharing their parent's pages are not counted twice."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except Exception:  # the process ended between listing and reading it
            continue
    return total / 2**20


def run_worker(python: str, kind: str, corpus: Path, out: Path) -> dict:
    """Run one pipeline in a child process; its result, wall time and peak memory."""
    import psutil

    out.mkdir(parents=True)
    command = [python, str(Path(__file__).resolve()), "--worker", kind]
    command += ["--corpus", str(corpus), "--out", str(out)]
    ours = kind != "datatrove"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")} if ours else dict(os.environ)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watched = psutil.Process(process.pid)
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_memory(watched))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{kind} pipeline failed:\n{stderr.decode()[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    result["peak_mb"] = peak[0]
    return result


def worker_main(kind: str, corpus: Path, out: Path) -> None:
    if kind == "datatrove":
        result = datatrove_worker(corpus, out)
    else:
        result = ours_worker(corpus, out, before=kind == "before")
    (out / "result.json").write_text(json.dumps(result))


# --- scoring, the same way for both pipelines ------------------------------------------------


@dataclass
class Outcome:
    """What a pipeline did to the corpus: ids kept (with text), removed as duplicates,
    removed by the filters."""

    kept: dict[str, str]
    duplicates: set[str]
    filtered: set[str]


def ours_outcome(result: dict) -> Outcome:
    from forgeml.data.dataset import iter_records
    from forgeml.data.rejects import iter_rejects

    kept = {row["metadata"]["id"]: row["text"] for row in iter_records(Path(result["cleaned"]))}
    duplicates, filtered = set(), set()
    for row in iter_rejects(Path(result["rejects"])):
        if row["action"] != "removed":
            continue
        corpus_id = row["metadata"]["id"]
        if any(reason.endswith("_duplicate") for reason in row["reasons"]):
            duplicates.add(corpus_id)
        if any(not reason.endswith("_duplicate") for reason in row["reasons"]):
            filtered.add(corpus_id)
    return Outcome(kept, duplicates, filtered)


def _jsonl_gz(folder: Path) -> dict[str, str]:
    rows = {}
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            for line in stream:
                row = json.loads(line)
                rows[row["id"]] = row["text"]
    return rows


def datatrove_outcome(out: Path, corpus_ids: list[str]) -> Outcome:
    after_filters = _jsonl_gz(out / "filtered")
    kept = _jsonl_gz(out / "final")
    filtered = set(corpus_ids) - set(after_filters)
    return Outcome(kept, set(after_filters) - set(kept), filtered)


def score(truth: Truth, outcome: Outcome) -> dict[str, float]:
    """Near-duplicate recall and false removals; PII recall and precision, overall and for
    the two types datatrove covers (email, IP)."""
    eligible = [
        doc
        for doc, (original, _) in truth.duplicates.items()
        if doc not in outcome.filtered and original not in outcome.filtered
    ]
    found = sum(doc in outcome.duplicates for doc in eligible)
    close = [doc for doc in eligible if truth.duplicates[doc][1] >= 0.85]
    false_removals = outcome.duplicates - set(truth.duplicates)
    scores = {
        "dup_recall": found / len(eligible) if eligible else float("nan"),
        "dup_recall_85": (
            sum(doc in outcome.duplicates for doc in close) / len(close) if close else float("nan")
        ),
        "dup_false": len(false_removals),
        "hard_negatives_removed": len(false_removals & set(truth.hard_negatives)),
        "hard_negatives": sum(
            doc not in outcome.filtered and original not in outcome.filtered
            for doc, (original, _) in truth.hard_negatives.items()
        ),
    }
    for label, types in (("all", None), ("email_ip", {"email", "ip_address"})):
        planted = caught = placeholders = 0
        for doc, text in outcome.kept.items():
            values = [v for kind, v in truth.pii.get(doc, []) if types is None or kind in types]
            planted += len(values)
            caught += sum(value not in text for value in values)
            placeholders += sum(
                1
                for match in PLACEHOLDER.finditer(text)
                if types is None or match.group(1).lower() in types
            )
        scores[f"pii_recall_{label}"] = caught / planted if planted else float("nan")
        scores[f"pii_precision_{label}"] = (
            min(caught, placeholders) / placeholders if placeholders else float("nan")
        )
    return scores


# --- the run ---------------------------------------------------------------------------------


def datatrove_python(requested: str | None) -> tuple[str | None, str]:
    """An interpreter that can import datatrove, or None and why not."""
    candidates = [requested] if requested else []
    candidates += [
        os.environ.get("DATATROVE_PYTHON"),
        sys.executable,
        str(DEFAULT_DATATROVE_PYTHON),
    ]
    tried = []
    for python in filter(None, candidates):
        if not Path(python).exists():
            tried.append(f"{python} (missing)")
            continue
        check = subprocess.run(
            [python, "-c", "import datatrove, spacy, orjson, psutil"], capture_output=True
        )
        if check.returncode == 0:
            return python, ""
        tried.append(f"{python} (cannot import datatrove, spacy, orjson and psutil)")
    return None, "datatrove is not available: tried " + "; ".join(tried)


def row(name: str, docs: int, truth: Truth, result: dict, outcome: Outcome) -> dict:
    seconds = result["seconds"]
    return {
        "pipeline": name,
        "docs": docs,
        "mb": truth.bytes / 1e6,
        "seconds": seconds,
        "cpu_seconds": result["cpu_seconds"],
        "docs_per_s": docs / seconds,
        "mb_per_s": truth.bytes / 1e6 / seconds,
        "peak_mb": result["peak_mb"],
        "growth_mb": result["peak_mb"] - result["baseline_mb"],
        **score(truth, outcome),
    }


def print_table(rows: list[dict]) -> None:
    columns = [
        ("pipeline", "{:<10}"), ("docs", "{:>7,}"), ("mb", "{:>6.1f}"), ("seconds", "{:>8.1f}"),
        ("cpu_seconds", "{:>7.1f}"),
        ("docs_per_s", "{:>8,.0f}"), ("mb_per_s", "{:>6.2f}"), ("peak_mb", "{:>8,.0f}"),
        ("growth_mb", "{:>8,.0f}"), ("dup_recall", "{:>7.3f}"), ("dup_recall_85", "{:>8.3f}"),
        ("dup_false", "{:>6}"),
        ("pii_recall_all", "{:>8.3f}"), ("pii_precision_all", "{:>8.3f}"),
        ("pii_recall_email_ip", "{:>8.3f}"), ("pii_precision_email_ip", "{:>8.3f}"),
    ]  # fmt: skip
    titles = ["pipeline", "docs", "MB", "seconds", "CPU s", "docs/s", "MB/s", "peak MB", "+MB",
              "dup rec", "rec>=.85", "dup FP", "PII rec", "PII prec", "e/IP rec", "e/IP prc"]  # fmt: skip
    widths = [len(fmt.format(rows[0][key])) if rows else 8 for key, fmt in columns]
    print(" ".join(f"{title:>{width}}" for title, width in zip(titles, widths, strict=True)))
    for item in rows:
        print(" ".join(fmt.format(item[key]) for key, fmt in columns))


def profile_ours(corpus: Path, directory: Path) -> None:
    """cProfile of our pipeline in this process, workers=1 so every call is seen."""
    import cProfile
    import pstats

    from forgeml.core.stages import list_stages

    global WORKERS
    WORKERS = 1
    list_stages()  # imports are not pipeline time
    profiler = cProfile.Profile()
    profiler.runcall(ours_worker, corpus, directory)
    print("\n## Profile of ours (one process), by own time\n")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=50_000, help="documents in the larger corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-docs",
        type=int,
        default=None,
        help="largest corpus datatrove runs on (default: --docs / 20; it is ~10x slower)",
    )
    parser.add_argument("--no-reference", action="store_true", help="run only ours")
    parser.add_argument("--datatrove-python", default=None, help="interpreter with datatrove")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of ours")
    parser.add_argument(
        "--small-docs", type=int, default=None, help="the smaller corpus (default: --docs / 20)"
    )
    parser.add_argument("--worker", choices=["ours", "before", "datatrove"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.corpus, args.out)
        return

    small = args.small_docs or max(1000, args.docs // 20)
    ours_sizes = [small, args.docs]
    reference = args.reference_docs or small
    python, why_not = (None, "skipped (--no-reference)") if args.no_reference else (None, "")
    if not args.no_reference:
        python, why_not = datatrove_python(args.datatrove_python)
    reference_sizes = [reference // 2, reference] if python else []
    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as temp:
        root = Path(temp)
        started = time.perf_counter()
        documents, truth = generate(max(ours_sizes), args.seed)
        truths = {
            docs: write_corpus(root / f"corpus-{docs}", documents[:docs], truth)
            for docs in sorted({*ours_sizes, *reference_sizes})
        }
        print(f"corpora generated in {time.perf_counter() - started:.0f} s")
        # Interleaved, so a change in machine load during the run hits both pipelines.
        plan = [("datatrove", n) for n in reference_sizes[:1]]
        plan += [("before", ours_sizes[0]), ("ours", ours_sizes[0])]
        plan += [("datatrove", n) for n in reference_sizes[1:]]
        plan += [("before", ours_sizes[1]), ("ours", ours_sizes[1])]
        rows = []
        for kind, docs in plan:
            corpus, out = root / f"corpus-{docs}", root / f"{kind}-{docs}"
            print(f"running {kind} on {docs:,} documents ...", flush=True)
            if kind != "datatrove":
                result = run_worker(sys.executable, kind, corpus, out)
                name = "forgeml" if kind == "ours" else "before"
                rows.append(row(name, docs, truths[docs], result, ours_outcome(result)))
                print(
                    "  stages (s): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result["stages"].items())
                )
            else:
                result = run_worker(python, "datatrove", corpus, out)
                ids = [f"doc-{index:07d}" for index in range(docs)]
                rows.append(
                    row("datatrove", docs, truths[docs], result, datatrove_outcome(out, ids))
                )
        print(f"\n## ingest -> assess -> clean, {WORKERS} workers, {os.cpu_count()} CPUs\n")
        order = {"forgeml": 0, "before": 1, "datatrove": 2}
        print_table(sorted(rows, key=lambda item: (order[item["pipeline"]], item["docs"])))
        both = {item["pipeline"]: item for item in rows if item["docs"] == reference}
        if "datatrove" in both and "forgeml" in both:
            ratio = both["forgeml"]["docs_per_s"] / both["datatrove"]["docs_per_s"]
            print(
                f"\nforgeml is {ratio:.1f}x datatrove end to end on the same {reference:,} documents."
            )
        marginal = {}
        for name in ("forgeml", "before", "datatrove"):
            pair = sorted(
                (item for item in rows if item["pipeline"] == name), key=lambda i: i["docs"]
            )
            if len(pair) == 2:
                extra = pair[1]["seconds"] - pair[0]["seconds"]
                marginal[name] = (pair[1]["docs"] - pair[0]["docs"]) / extra if extra > 0 else 0.0
        if marginal:
            print(
                "marginal docs/s between each pipeline's two sizes (fixed start-up costs cancel): "
                + ", ".join(f"{name} {rate:,.0f}" for name, rate in marginal.items())
            )
        print(
            "before: the same pipeline with the near-duplicate index forgeml had before"
            " (benchmarks/dedup_baseline.py:\ndatasketch MinHashLSH 16 x 8, estimated Jaccard,"
            " ~6.5 KB per kept document); records stream."
        )
        hard = {
            item["pipeline"]: item
            for item in rows
            if item["docs"] == max(i["docs"] for i in rows if i["pipeline"] == item["pipeline"])
        }
        print(
            "hard negatives (true Jaccard 0.5-0.77) removed as duplicates: "
            + ", ".join(
                f"{name} {item['hard_negatives_removed']} of {item['hard_negatives']}"
                for name, item in hard.items()
            )
        )
        if why_not:
            print(f"\nreference: {why_not}")
        print(
            "\npeak MB: largest memory of the pipeline's process tree (PSS); +MB: above its"
            " start-up\nfootprint. dup rec: planted copies (true Jaccard >= 0.8) removed, of"
            " those whose\noriginal passed the filters (rec>=.85: those at 0.85 or more);"
            " dup FP: removed as\nduplicates but not planted.\nPII rec/prec: injected values gone from the output / placeholders that"
            " replaced one;\ne/IP: the same for e-mail and IP addresses only (what datatrove's"
            " PIIFormatter covers)."
        )
        if args.profile:
            profile_ours(root / f"corpus-{small}", root / "profile")


if __name__ == "__main__":
    main()
