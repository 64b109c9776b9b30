"""Quality and speed of the data detectors (PII, near-duplicates, quality, language).

    .venv/bin/python benchmarks/data_detectors.py [--seed 0] [--dedup-docs 10000 50000]

Builds corpora whose truth is known, then prints tables:
- PII: precision and recall per type on documents of real prose (Python's own docs,
  which hold versions, dates and code) with injected PII and injected look-alikes
  (Luhn-invalid cards, IBANs with wrong check digits, unissuable SSNs, dates, order ids,
  version numbers) that must not be flagged.
- Near-duplicates, at two corpus sizes: recall by true 5-shingle Jaccard bucket, false
  removals (documents removed whose true Jaccard with the kept one is below 0.8; the
  adversarial set is the copies edited to below 0.8), docs/s and peak RSS, each method
  in its own process: forgeml's index, the index it replaced (datasketch MinHashLSH
  16 x 8, candidates checked by estimated Jaccard; dedup_baseline.py) and plain
  datasketch (MinHash.bulk + MinHashLSH with its default bands, no check).
- Speed: docs/s per detector, one process, with datasketch's per-shingle `update` loop
  measured in the same run as the baseline.

Near duplicates, measured with the defaults (2 CPU cores shared with other jobs):

    method                                 docs  >=.85  .80-.85  false   docs/s  peak MB  +MB
    forgeml (21x6 bands, exact Jaccard)   10000  1.000   1.000  0/1577   3,371      126    9
    before: datasketch LSH 16x8, estimate 10000  1.000   0.759 35/1577   3,036      182   65
    datasketch defaults, no check         10000  0.920   0.584 77/1577     956      150   32
    forgeml (21x6 bands, exact Jaccard)   50000  1.000   1.000  0/7824   3,287      249   30
    before: datasketch LSH 16x8, estimate 50000  0.998   0.777 198/7824  3,473      537  318
    datasketch defaults, no check         50000  0.928   0.549 382/7824  1,771      388  168
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from pydoc_data.topics import topics

from datasketch import MinHash, MinHashLSH

from forgeml.data.dedup import MinHasher, NearDuplicateIndex, words_of
from forgeml.data.language import detect_language
from forgeml.data.pii import PII_TYPES, find_pii, luhn_valid
from forgeml.data.quality import failed_filters, quality_signals

SHINGLE = 5
THRESHOLD = 0.8


def timed(function: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of `repeat` runs: the machine is shared, the minimum is the signal."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def prose_chunks(words_per_chunk: int = 250) -> list[str]:
    words = " ".join(topics.values()).split()
    step = words_per_chunk
    return [" ".join(words[i : i + step]) for i in range(0, len(words) - step, step)]


# --- PII ---------------------------------------------------------------------------


def card_number(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "55", "37", "6011"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    check = next(d for d in "0123456789" if luhn_valid(body + d))
    digits = body + check
    if rng.random() < 0.5:
        return digits
    separator = rng.choice(" -")
    if length == 15:
        return separator.join([digits[:4], digits[4:10], digits[10:]])
    return separator.join(digits[i : i + 4] for i in range(0, 16, 4))


def bad_card_number(rng: random.Random) -> str:
    digits = card_number(rng).replace(" ", "").replace("-", "")
    wrong = str((int(digits[-1]) + rng.randint(1, 9)) % 10)
    return digits[:-1] + wrong


def iban(rng: random.Random, valid: bool = True) -> str:
    country, bban = rng.choice(
        [
            ("DE", "".join(rng.choice("0123456789") for _ in range(18))),
            ("GB", "NWBK" + "".join(rng.choice("0123456789") for _ in range(14))),
            ("FR", "".join(rng.choice("0123456789") for _ in range(23))),
            ("NL", "ABNA" + "".join(rng.choice("0123456789") for _ in range(10))),
        ]
    )
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:  # any other value in 02-98 except check + 97 (equal mod 97)
        check = rng.choice([c for c in range(2, 99) if c % 97 != check % 97])
    text = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    return text


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def phone(rng: random.Random) -> str:
    area = str(rng.randint(200, 999))
    return rng.choice(
        [
            f"+44 20 7946 {digits(rng, 4)}",
            f"+1 ({area}) {rng.randint(200, 999)}-{digits(rng, 4)}",
            f"({area}) {rng.randint(200, 999)}-{digits(rng, 4)}",
            f"{area}-{rng.randint(200, 999)}-{digits(rng, 4)}",
            f"020 7946 {digits(rng, 4)}",
            f"07700 900{digits(rng, 3)}",
            f"+33 1 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            f"+49 30 {digits(rng, 8)}",
            f"01 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
        ]
    )


def email(rng: random.Random) -> str:
    name = rng.choice(["ana", "li.wei", "j_doe", "marie-claire", "ops+alerts", "k.smith"])
    domain = rng.choice(["example.com", "corp.example.org", "mail.example.co.uk", "ex.io"])
    return f"{name}{rng.randint(1, 99)}@{domain}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8::" + ":".join(groups[:3])
    return ":".join(groups)


def ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


GENERATORS = {"email": email, "phone": phone, "credit_card": card_number, "iban": iban}
GENERATORS |= {"ip_address": ip, "us_ssn": ssn}
LOOK_ALIKES: list[Callable[[random.Random], str]] = [
    bad_card_number,
    lambda rng: iban(rng, valid=False),
    lambda rng: f"{rng.choice(['000', '666', '912'])}-{rng.randint(10, 99)}-{digits(rng, 4)}",
    lambda rng: f"{rng.randint(100, 899)}-00-{digits(rng, 4)}",
    lambda rng: f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    lambda rng: f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2023",
    lambda rng: f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/2023",
    lambda rng: f"ORD-{digits(rng, 5)}",
    lambda rng: f"INV-2024-{digits(rng, 7)}",
    lambda rng: f"version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
    lambda rng: f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.1.1",
    lambda rng: f"${rng.randint(1, 999)},{digits(rng, 3)}.{digits(rng, 2)}",
    lambda rng: (
        f"ISBN 978-{rng.randint(0, 9)}-{digits(rng, 2)}-{digits(rng, 6)}-{rng.randint(0, 9)}"
    ),
]


def pii_corpus(rng: random.Random, count: int) -> tuple[list[str], list[set]]:
    """Prose with injected PII and look-alikes; truth is the set of (type, start, end)."""
    prose = prose_chunks(120)
    documents, truths = [], []
    for _ in range(count):
        pieces = [rng.choice(prose)]
        truth = set()
        position = len(pieces[0])
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.6:
                pii_type = rng.choice(PII_TYPES)
                value = GENERATORS[pii_type](rng)
                lead = rng.choice([" Contact: ", " see ", " value ", " (ref "])
                truth.add((pii_type, position + len(lead), position + len(lead) + len(value)))
            else:
                value = rng.choice(LOOK_ALIKES)(rng)
                lead = rng.choice([" on ", " id ", " ref ", " noted "])
            piece = lead + value + rng.choice([". ", ", ", ") ", " and more. "])
            pieces.append(piece)
            position += len(piece)
        documents.append("".join(pieces))
        truths.append(truth)
    return documents, truths


def pii_report(documents: list[str], truths: list[set]) -> list[tuple]:
    hits, predicted, actual = Counter(), Counter(), Counter()
    for text, truth in zip(documents, truths, strict=True):
        found = {(m.type, m.start, m.end) for m in find_pii(text)}
        for pii_type, *_ in found:
            predicted[pii_type] += 1
        for pii_type, *_ in truth:
            actual[pii_type] += 1
        for pii_type, *_ in found & truth:
            hits[pii_type] += 1
    rows = []
    for pii_type in PII_TYPES:
        precision = hits[pii_type] / predicted[pii_type] if predicted[pii_type] else 1.0
        recall = hits[pii_type] / actual[pii_type] if actual[pii_type] else 1.0
        rows.append((pii_type, actual[pii_type], predicted[pii_type], precision, recall))
    return rows


# --- near-duplicates ---------------------------------------------------------------


def shingle_set(text: str) -> set[tuple[bytes, ...]]:
    words = words_of(text)
    return {tuple(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def jaccard(first: set, second: set) -> float:
    return len(first & second) / len(first | second)


def dedup_corpus(rng: random.Random, docs: int) -> tuple[list[tuple[str, str]], dict]:
    """Originals of ~300 Zipf-distributed words, then copies edited into a Jaccard spread.

    `docs` documents, a fifth of them copies. Returns the documents in order and, for
    each copy, (source id, true Jaccard).
    """
    originals = docs * 4 // 5
    vocabulary = sorted(set(re.findall(r"[a-z]{2,}", " ".join(topics.values()).lower())))
    rng.shuffle(vocabulary)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    sample = rng.choices
    documents = []
    texts = {}
    for index in range(originals):
        text = " ".join(sample(vocabulary, weights, k=rng.randint(150, 450)))
        documents.append((f"orig-{index}", text))
        texts[f"orig-{index}"] = text
    truth = {}
    for index in range(docs - originals):
        source = f"orig-{rng.randrange(originals)}"
        words = texts[source].split()
        # 0-30 substituted words: true Jaccard from 1.0 down to ~0.5.
        for position in rng.sample(range(len(words)), rng.randint(0, 30)):
            words[position] = rng.choice(vocabulary)
        if rng.random() < 0.3:
            words = words[: int(len(words) * rng.uniform(0.85, 1.0))]  # truncated copy
        text = " ".join(words)
        truth[f"copy-{index}"] = (source, jaccard(shingle_set(text), shingle_set(texts[source])))
        documents.append((f"copy-{index}", text))
    return documents, truth


RECALL_BUCKETS = [(0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01), (0.85, 1.01)]


def score_dedup(flagged: dict[str, str], documents: list[tuple[str, str]], truth: dict) -> dict:
    """Recall per true-Jaccard bucket; false removals (true Jaccard with the document it
    was matched to below the threshold, or an original removed) and the adversarial
    set they come from (copies below the threshold)."""
    texts = dict(documents)
    recall = {}
    for low, high in RECALL_BUCKETS:
        members = [doc for doc, (_, value) in truth.items() if low <= value < high]
        recall[(low, high)] = sum(doc in flagged for doc in members) / max(1, len(members))
    false_removals = sum(
        doc.startswith("orig")
        or jaccard(shingle_set(texts[doc]), shingle_set(texts[original])) < THRESHOLD
        for doc, original in flagged.items()
    )
    adversarial = sum(value < THRESHOLD for _, value in truth.values())
    return {"recall": recall, "false": false_removals, "adversarial": adversarial}


def datasketch_plain(documents: list[tuple[str, str]], bulk: bool) -> dict[str, str]:
    """The usual datasketch pipeline: SHA-1 MinHash per document, default LSH, first hit kept."""
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    flagged: dict[str, str] = {}
    shingles = ([b" ".join(s) for s in shingle_set(text)] for _, text in documents)
    if bulk:
        minhashes = MinHash.generator(shingles, num_perm=128, seed=1)
    else:

        def one_by_one():
            for shingle_list in shingles:
                minhash = MinHash(num_perm=128, seed=1)
                for shingle in shingle_list:
                    minhash.update(shingle)
                yield minhash

        minhashes = one_by_one()
    for (doc_id, _), minhash in zip(documents, minhashes, strict=True):
        candidates = lsh.query(minhash)
        if candidates:
            flagged[doc_id] = candidates[0]
        else:
            lsh.insert(doc_id, minhash)
    return flagged


def speed(name: str, documents: list[str], detector: Callable[[str], object]) -> tuple:
    return name, len(documents) / timed(lambda: [detector(d) for d in documents])


def pii_section(rng: random.Random, count: int) -> list[tuple]:
    print("## PII (injected truth; look-alikes must not be flagged)\n")
    documents, truths = pii_corpus(rng, count)
    print(f"{'type':<12} {'true':>6} {'found':>6} {'precision':>10} {'recall':>8}")
    for pii_type, actual, predicted, precision, recall in pii_report(documents, truths):
        print(f"{pii_type:<12} {actual:>6} {predicted:>6} {precision:>10.3f} {recall:>8.3f}")
    return [
        speed("find_pii (injected docs, ~0.9 KB)", documents, find_pii),
        speed("find_pii (prose, ~2 KB)", prose_chunks(300), find_pii),
    ]


DEDUP_METHODS = {
    "forgeml": "forgeml (21x6 bands, exact Jaccard)",
    "datasketch-lsh": "before: datasketch LSH 16x8, estimate",
    "datasketch-plain": "datasketch defaults, no check",
}


def dedup_worker(method: str, corpus: Path, out: Path) -> None:
    """One method on one corpus, in its own process: what it flagged, its time and memory."""
    import psutil
    from dedup_baseline import DatasketchIndex

    documents = pickle.loads(corpus.read_bytes())
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    nbytes = None
    if method == "datasketch-plain":
        flagged = datasketch_plain(documents, bulk=True)
    else:
        index = NearDuplicateIndex() if method == "forgeml" else DatasketchIndex()
        flagged = {}
        for doc_id, text in documents:
            if match := index.add(doc_id, text):
                flagged[doc_id] = match.original_id
        nbytes = getattr(index, "nbytes", None)
    seconds = time.perf_counter() - start
    peak[0] = max(peak[0], process.memory_info().rss)
    stop.set()
    sampler.join()
    result = {"flagged": flagged, "seconds": seconds, "nbytes": nbytes}
    result |= {"rss_before_mb": before / 2**20, "peak_mb": peak[0] / 2**20}
    out.write_text(json.dumps(result))


def run_dedup(method: str, corpus: Path, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--dedup-worker", method]
    command += ["--corpus", str(corpus), "--out", str(out)]
    source = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": source})
    return json.loads(out.read_text())


def dedup_section(rng: random.Random, sizes: list[int]) -> None:
    print(f"\n## Near duplicates at Jaccard >= {THRESHOLD} (5-word shingles, 128 permutations)\n")
    print("Each method runs in its own process on the same corpus; sizes interleaved.")
    print("recall by true Jaccard of planted copies; false: removed although the true Jaccard")
    print("is below the threshold, of the copies below it (adversarial) and % of all docs;")
    print("peak/+MB: RSS during indexing, and above the RSS before it (corpus loaded).\n")
    header = (
        f"{'method':<38} {'docs':>6} {'.80-.85':>7} {'.85-.90':>7} {'.90-.95':>7}"
        f" {'.95-1':>6} {'>=.85':>6} {'false':>10} {'% docs':>7} {'docs/s':>7}"
        f" {'peak MB':>8} {'+MB':>6} {'B/doc':>6}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="forgeml-dedup-") as temp:
        for docs in sizes:
            documents, truth = dedup_corpus(rng, docs)
            corpus = Path(temp) / f"corpus-{docs}.pickle"
            corpus.write_bytes(pickle.dumps(documents))
            for method, label in DEDUP_METHODS.items():
                result = run_dedup(method, corpus, Path(temp) / f"{method}-{docs}.json")
                scores = score_dedup(result["flagged"], documents, truth)
                recall = " ".join(
                    f"{scores['recall'][bucket]:>{7 if bucket[0] < 0.95 else 6}.3f}"
                    for bucket in RECALL_BUCKETS
                )
                false = f"{scores['false']}/{scores['adversarial']}"
                growth = result["peak_mb"] - result["rss_before_mb"]
                per_doc = f"{result['nbytes'] / docs:>6.0f}" if result["nbytes"] else f"{'':>6}"
                print(
                    f"{label:<38} {docs:>6} {recall} {false:>10}"
                    f" {scores['false'] / docs:>7.3%} {docs / result['seconds']:>7,.0f}"
                    f" {result['peak_mb']:>8,.0f} {growth:>6,.0f} {per_doc}",
                    flush=True,
                )
    print("\nB/doc: the index's own `nbytes` per document (ids aside).")


def dedup_speed(rng: random.Random) -> list[tuple]:
    documents, _ = dedup_corpus(rng, 2000)
    texts = [text for _, text in documents]
    subset = documents[:500]  # the update loop is slow: time it on a slice
    start = time.perf_counter()
    datasketch_plain(subset, bulk=False)
    update_time = time.perf_counter() - start
    return [
        speed("forgeml MinHasher.signature only", texts, MinHasher().signature),
        ("datasketch MinHash.update loop + LSH (baseline)", len(subset) / update_time),
    ]


def quality_and_language_section(rng: random.Random) -> list[tuple]:
    print("\n## Quality filters (Gopher defaults)\n")
    good = prose_chunks(300)
    junk = junk_documents(rng, len(good))
    kept = sum(not failed_filters(quality_signals(d)) for d in good)
    removed = sum(bool(failed_filters(quality_signals(d))) for d in junk)
    print(f"prose kept: {kept}/{len(good)} ({kept / len(good):.1%}); "
          f"crafted junk removed: {removed}/{len(junk)} ({removed / len(junk):.1%})")  # fmt: skip

    print("\n## Language (py3langid)\n")
    detect_language("warm up the model")
    english = sum(detect_language(d)[0] == "en" for d in good)
    print(f"English prose labelled 'en': {english}/{len(good)} ({english / len(good):.1%})")
    return [
        speed("quality_signals (prose, ~2 KB)", good, quality_signals),
        speed("detect_language (prose, ~2 KB)", good, detect_language),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pii-docs", type=int, default=3000)
    parser.add_argument(
        "--dedup-docs",
        type=int,
        nargs=2,
        default=[10_000, 50_000],
        metavar=("SMALL", "LARGE"),
        help="the two corpus sizes of the near-duplicate table",
    )
    parser.add_argument("--dedup-worker", choices=sorted(DEDUP_METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dedup_worker:
        dedup_worker(args.dedup_worker, args.corpus, args.out)
        return
    rng = random.Random(args.seed)
    speeds = pii_section(rng, args.pii_docs)
    dedup_section(rng, args.dedup_docs)
    speeds += dedup_speed(rng)
    speeds += quality_and_language_section(rng)
    print("\n## Speed (one process; best of 3 except the datasketch row)\n")
    print(f"{'detector':<50} {'docs/s':>10}")
    for name, rate in speeds:
        print(f"{name:<50} {rate:>10,.0f}")


def junk_documents(rng: random.Random, count: int) -> list[str]:
    """Boilerplate that Gopher's rules exist to catch: menus, tables, repeats, lorem ipsum."""
    makers = [
        lambda: "\n".join(
            f"- {rng.choice(['Home', 'Shop', 'Cart', 'Login', 'Help'])}" for _ in range(80)
        ),
        lambda: "\n".join(
            " ".join(digits(rng, rng.randint(1, 6)) for _ in range(8)) for _ in range(20)
        ),
        lambda: ("Buy cheap watches online today best price guaranteed " * 30).strip(),
        lambda: (
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12
            + "The end of the page."
        ),
        lambda: " ".join(["#tag"] * 40 + ["the", "and", "of"] * 10),
    ]
    return [rng.choice(makers)() for _ in range(count)]


if __name__ == "__main__":
    main()
