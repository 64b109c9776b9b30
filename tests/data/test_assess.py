"""data.assess: a report whose counts match a corpus with planted duplicates, PII and oddities.

`write_planted_corpus` is shared with test_clean.py and test_data_cli.py.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace
from forgeml.data.readiness import TOKENS_PER_PARAMETER, parameters, readiness

NOUNS = [
    "report",
    "system",
    "customer",
    "invoice",
    "contract",
    "engineer",
    "manager",
    "office",
    "product",
    "market",
    "budget",
    "service",
    "network",
    "server",
    "database",
    "schedule",
    "policy",
    "meeting",
    "project",
    "quality",
    "process",
    "analysis",
    "supplier",
    "warehouse",
    "shipment",
    "order",
    "account",
    "payment",
    "balance",
    "region",
    "team",
    "partner",
    "document",
    "release",
    "feature",
    "module",
    "interface",
    "license",
    "support",
    "ticket",
    "incident",
    "change",
    "review",
    "audit",
    "training",
    "course",
    "language",
    "model",
    "dataset",
    "pipeline",
    "record",
    "section",
    "chapter",
    "window",
    "garden",
    "river",
    "mountain",
    "village",
    "harbour",
    "station",
    "bridge",
    "library",
    "museum",
    "theatre",
    "kitchen",
    "machine",
    "engine",
    "battery",
    "sensor",
    "signal",
    "camera",
    "printer",
    "folder",
    "letter",
    "message",
    "answer",
    "question",
    "problem",
    "solution",
]
VERBS = [
    "describes",
    "explains",
    "shows",
    "lists",
    "covers",
    "tracks",
    "measures",
    "compares",
    "improves",
    "reduces",
    "supports",
    "requires",
    "includes",
    "connects",
    "replaces",
    "extends",
    "protects",
    "delivers",
    "prepares",
    "confirms",
]
ADJECTIVES = [
    "new",
    "old",
    "large",
    "small",
    "quick",
    "careful",
    "early",
    "late",
    "clear",
    "simple",
    "complex",
    "annual",
    "monthly",
    "weekly",
    "local",
    "global",
    "private",
    "public",
    "internal",
    "external",
    "regional",
    "central",
    "green",
]
PII = {
    "email": "ana.diaz@example.org",
    "phone": "+44 20 7946 0958",
    "credit_card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ip_address": "203.0.113.195",
    "us_ssn": "123-45-6789",
}
CHAT_EMAIL = "bob.stone@example.com"
FRENCH = (
    "Le rapport annuel de la société montre une croissance régulière des ventes dans "
    "toutes les régions. Les équipes ont amélioré la qualité du service et réduit les "
    "délais de livraison. Nous remercions nos clients pour leur confiance et nous "
    "préparons de nouveaux produits pour l'année prochaine, avec une attention "
    "particulière à la sécurité des données et au respect de la vie privée."
)
# Which documents copy which (ids are the `doc` field; see write_planted_corpus).
EXACT = {"doc-30": "doc-03", "doc-31": "doc-05"}
NEAR = {"doc-32": "doc-07", "doc-33": "doc-11"}
PII_DOCS = {f"doc-{12 + index}": kind for index, kind in enumerate(PII)}


def sentence(rng: random.Random) -> str:
    """A sentence with English stop words around random content words: distinct documents
    share no 5-word shingles, and every document passes Gopher's filters."""
    pick = rng.choice
    return (
        f"The {pick(ADJECTIVES)} {pick(NOUNS)} {pick(VERBS)} the {pick(NOUNS)} of "
        f"the {pick(ADJECTIVES)} {pick(NOUNS)} and {pick(NOUNS)} {pick(NOUNS)} with "
        f"{pick(ADJECTIVES)} {pick(NOUNS)}."
    )


def prose(seed: int, sentences: int = 9) -> str:
    rng = random.Random(seed)
    return " ".join(sentence(rng) for _ in range(sentences))


def write_planted_corpus(folder: Path) -> dict:
    """39 documents in 4 files (jsonl, jsonl, chat jsonl, txt) with known problems.

    doc-00..29 distinct prose; doc-12..17 each hold one PII value of a different type;
    doc-30/31 exact copies of doc-03/05 (doc-31 re-spaced and upper-cased); doc-32/33
    near copies of doc-07/11 (one word changed, one word added); doc-34 too short;
    doc-35 French; chat.jsonl: a conversation (with an e-mail) and a prompt-only record.
    """
    folder.mkdir(parents=True, exist_ok=True)
    docs = {f"doc-{index:02d}": prose(index) for index in range(30)}
    for doc_id, kind in PII_DOCS.items():
        docs[doc_id] += f" Contact the office at {PII[kind]} for the annual report."
    docs["doc-30"] = docs["doc-03"]
    docs["doc-31"] = "  ".join(docs["doc-05"].upper().split(" "))
    docs["doc-32"] = docs["doc-07"].replace(" with ", " without ", 1)
    docs["doc-33"] = docs["doc-11"] + " Thanks"
    docs["doc-34"] = "Click here. Buy now!"
    docs["doc-35"] = FRENCH
    ids = sorted(docs)
    for name, part in (("a.jsonl", ids[:20]), ("b.jsonl", ids[20:])):
        lines = [json.dumps({"text": docs[i], "doc": i}) for i in part]
        (folder / name).write_text("\n".join(lines) + "\n")
    chats = [
        {
            "messages": [
                {"role": "user", "content": "Who handles the invoices for the north region?"},
                {"role": "assistant", "content": f"Please write to {CHAT_EMAIL} about it."},
            ]
        },
        {"messages": [{"role": "user", "content": "Summarise the annual report."}]},
    ]
    (folder / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (folder / "notes.txt").write_text(prose(99, sentences=8) + "\n")
    return docs


def ingest_planted(workspace, tmp_path: Path):
    write_planted_corpus(tmp_path / "corpus")
    params = {"paths": [str(tmp_path / "corpus")], "metadata_fields": ["doc"]}
    return run_stage(workspace, "data.ingest", params).outputs["dataset"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace for the module: the same assessment is reused, as a user's rerun is."""
    shared = Workspace.init(tmp_path_factory.mktemp("assess") / "ws")
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def planted(workspace, tmp_path_factory):
    return ingest_planted(workspace, tmp_path_factory.mktemp("planted"))


def _assess(workspace, dataset, **params):
    result = run_stage(workspace, "data.assess", params, {"dataset": dataset})
    directory = workspace.root / result.outputs["report"].path
    return result, json.loads((directory / "report.json").read_text()), directory


def test_report_counts_match_the_planted_corpus(workspace, planted):
    result, report, _ = _assess(workspace, planted)
    for key in ("documents", "characters", "tokens", "by_source", "exact_duplicates",
                "near_duplicates", "pii", "languages", "quality", "structure", "readiness"):  # fmt: skip
        assert key in report, key
    assert report["documents"] == 39
    assert report["tokens"]["method"] == "estimate"
    assert report["tokens"]["total"] >= report["characters"] / 4
    assert report["exact_duplicates"]["documents"] == 2
    assert report["near_duplicates"]["documents"] == 2
    assert report["pii"]["by_type"] == {**dict.fromkeys(PII, 1), "email": 2}
    assert report["structure"] == {"text": 37, "chat": 1, "preference": 0, "prompt": 1}
    assert report["languages"]["documents"]["fr"] == 1
    assert report["languages"]["documents"]["en"] >= 36
    formats = report["by_source"]["formats"]
    assert formats["jsonl"]["documents"] == 38 and formats["txt"]["documents"] == 1
    assert len(report["by_source"]["files"]) == 4
    assert sum(f["characters"] for f in formats.values()) == report["characters"]
    # too short (doc-34, both chats), and French lacks English stop words
    assert report["quality"]["failures"]["min_words"] == 3
    assert report["quality"]["failures"]["stop_words"] >= 1
    assert result.metrics["near_duplicates"] == 2 and result.metrics["pii_matches"] == 7


def test_duplicate_samples_point_at_the_kept_document(workspace, planted):
    _, report, _ = _assess(workspace, planted)
    ids = {row["id"]: row["metadata"].get("doc") for row in _records(workspace, planted)}
    near = {ids[c["id"]]: ids[s["kept"]["id"]] for s in report["near_duplicates"]["samples"]
            for c in s["copies"]}  # fmt: skip
    exact = {ids[c["id"]]: ids[s["kept"]["id"]] for s in report["exact_duplicates"]["samples"]
             for c in s["copies"]}  # fmt: skip
    assert near == NEAR and exact == EXACT
    sample = report["near_duplicates"]["samples"][0]
    assert sample["kept"]["excerpt"] and sample["copies"][0]["excerpt"]
    assert 0.8 <= sample["copies"][0]["similarity"] < 1


def test_pii_is_redacted_everywhere_in_the_report(workspace, planted):
    _, report, directory = _assess(workspace, planted)
    examples = report["pii"]["examples"]
    assert set(examples) == set(PII)
    assert "<EMAIL>" in examples["email"][0]["excerpt"]
    for name in ("report.json", "report.html"):
        text = (directory / name).read_text()
        for value in [*PII.values(), CHAT_EMAIL]:
            assert value not in text, (name, value)


def test_html_is_self_contained_with_the_charts(workspace, planted):
    _, _, directory = _assess(workspace, planted)
    html = (directory / "report.html").read_text()
    assert html.count("<svg") >= 6  # lengths, formats, files, clusters, PII, languages, ...
    for chart in ("Documents by length in tokens", "Characters by format",
                  "Near-duplicate clusters by size", "PII matches by type"):  # fmt: skip
        assert chart in html
    assert "What to do next" in html and "forgeml data clean" in html
    # offline: nothing is fetched (the SVG namespace is an identifier, not a request)
    assert not re.search(r"<script|<link|<img|src=|url\(|@import", html)
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_readiness_verdicts_for_a_tiny_dataset(workspace, planted):
    _, report, _ = _assess(workspace, planted, size="tiny")
    verdicts = report["readiness"]
    assert verdicts["pretrain"]["verdict"] == "insufficient"
    assert verdicts["pretrain"]["tokens_needed"] == TOKENS_PER_PARAMETER * parameters("tiny")
    assert verdicts["continued_pretraining"]["verdict"] == "insufficient"
    assert verdicts["fine_tuning"]["verdict"] == "insufficient"
    assert verdicts["fine_tuning"]["chat_examples"] == 1
    assert all(v["reason"] and v["rule"] for v in verdicts.values())


def test_readiness_rules():
    needed = TOKENS_PER_PARAMETER * parameters("small")
    assert readiness(needed, 0, 0, "small", None)["pretrain"]["verdict"] == "ready"
    limited = readiness(needed // 3, 0, 0, "small", None)["pretrain"]
    assert limited["verdict"] == "limited" and "epochs" in limited["reason"]
    short = readiness(needed // 10, 0, 0, "small", None)["pretrain"]
    assert short["verdict"] == "insufficient" and short["largest_supported_size"] == "mini"
    assert (
        readiness(200_000_000, 0, 0, "small", None)["continued_pretraining"]["verdict"] == "ready"
    )
    assert (
        readiness(5_000_000, 0, 0, "small", None)["continued_pretraining"]["verdict"] == "limited"
    )
    assert readiness(0, 20_000, 0, "small", None)["fine_tuning"]["verdict"] == "ready"
    assert readiness(0, 2_000, 0, "small", None)["fine_tuning"]["verdict"] == "limited"


def test_real_token_counts_with_a_tokenizer(workspace, planted):
    mixture = run_stage(workspace, "data.mix", {}, {"datasets": [planted]}).outputs["mixture"]
    tokenizer = run_stage(
        workspace, "tokenizer.train", {"vocab_size": 400}, {"mixture": mixture}
    ).outputs["tokenizer"]
    result = run_stage(workspace, "data.assess", {}, {"dataset": planted, "tokenizer": tokenizer})
    report = json.loads(
        (workspace.root / result.outputs["report"].path / "report.json").read_text()
    )
    tokens = report["tokens"]
    assert tokens["method"] == "tokenizer" and tokens["tokenizer"] == tokenizer.ref
    assert tokens["vocab_size"] == 400
    assert tokens["total"] > 0 and 1.0 < tokens["characters_per_token"] < 8.0
    assert report["readiness"]["pretrain"]["parameters"] == parameters("small", 400)


def test_report_is_deterministic_and_findings_are_saved(workspace, planted):
    first = run_stage(workspace, "data.assess", {}, {"dataset": planted}).outputs["report"]
    again = run_stage(workspace, "data.assess", {}, {"dataset": planted}, force=True)
    assert again.outputs["report"].sha256 == first.sha256
    import pyarrow.parquet as pq

    findings = pq.read_table(workspace.root / first.path / "documents.parquet").to_pylist()
    assert len(findings) == 39
    assert sum(row["duplicate_of"] is not None for row in findings) == 4
    assert sum(len(row["pii"]) for row in findings) == 7


def _records(workspace, dataset):
    from forgeml.data.dataset import iter_records

    return list(iter_records(workspace.root / dataset.path))


def test_profile_keeps_excerpts_only_for_the_sampled_clusters():
    """Memory stays flat: no excerpt per kept document, only the samples' read back."""
    from forgeml.data.assessment import Profile
    from forgeml.data.dedup import DuplicateMatch
    from forgeml.data.quality import QualityThresholds, quality_signals
    from forgeml.data.scan import Batch, Finding

    count = 200
    ids = [f"id-{i}" for i in range(count)]
    texts = [f"Document {doc_id} is about the {NOUNS[i % len(NOUNS)]} of the team."
             for i, doc_id in enumerate(ids)]  # fmt: skip
    batch = Batch(ids, texts, ["a.jsonl"] * count, ["0"] * count, ["{}"] * count, [None] * count)
    findings = [
        Finding(
            "en",
            1.0,
            quality_signals(text),
            [],
            DuplicateMatch(ids[i], ids[i - 100], "near", 0.9) if i >= 100 else None,
        )
        for i, text in enumerate(texts)
    ]
    profile = Profile(QualityThresholds(), samples=2)
    profile.add(batch, findings, [12] * count)
    assert profile.excerpts == {}
    profile.add_kept_excerpts([batch])
    assert set(profile.excerpts) == {"id-0", "id-1"}
    near = profile.to_dict()["near_duplicates"]
    assert (near["documents"], near["clusters"], near["cluster_sizes"]) == (100, 100, {"2": 100})
    assert [sample["kept"]["id"] for sample in near["samples"]] == ["id-0", "id-1"]
    assert near["samples"][0]["kept"]["excerpt"].startswith("Document id-0 is about")
    assert near["samples"][0]["copies"][0]["id"] == "id-100"
