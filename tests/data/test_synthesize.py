"""`forgeml data synthesize`: examples made from documents, as a user runs it.

Rules offline and a teacher endpoint; every example traced to the bytes of its passage;
filters (grounding, PII, duplicates) at work; the output assessed like any dataset and
forgotten with its documents; a teacher run stopped half way resumes without asking again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synth_fixtures import INVENTED, FakeTeacher, write_help_centre

from forgeml.core.workspace import Workspace
from forgeml.data.dataset import iter_records
from forgeml.data.synthesis.filters import grounding
from forgeml.data.synthesis.passages import passages
from forgeml.data.synthesis.rules import candidates


def forgeml(workspace: Path, *args: str, ok: bool = True, env: dict | None = None):
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def records(workspace: Path, ref: str) -> list[dict]:
    opened = Workspace.open(workspace)
    try:
        return list(iter_records(opened.root / opened.registry.resolve(ref).path))
    finally:
        opened.close()


def documents(workspace: Path, ref: str) -> dict[str, str]:
    return {row["id"]: row["text"] for row in records(workspace, ref)}


@pytest.fixture
def help_centre(tmp_path) -> Path:
    workspace = tmp_path / "ws"
    write_help_centre(tmp_path / "docs")
    forgeml(workspace, "data", "ingest", str(tmp_path / "docs"), "--name", "help-centre")
    return workspace


def test_passages_are_exact_slices_under_their_headings():
    text = "# Guide\n\nIntro line.\n\nSetup\n*****\nStep one is here.\n\n" + "word " * 400
    found = list(passages("doc", text, max_chars=300))
    assert all(text[p.start : p.end] == p.text and len(p.text) <= 300 for p in found)
    assert [p.heading for p in found[:2]] == ["Guide", "Setup"]
    assert found[1].text == "Step one is here."
    assert {p.title for p in found} == {"Guide"}
    assert sum(len(p.text.split()) for p in found[2:]) == 400


def test_rules_read_definitions_lists_headings_and_cloze():
    from synth_fixtures import RETURNS

    found = [c for p in passages("returns", RETURNS) for c in candidates(p, {"qa", "extract"})]
    by_question = {c.question: c.answer for c in found}
    assert by_question["What is a return label (from Returns policy)?"].startswith(
        "A return label is a prepaid shipping label"
    )
    assert by_question["What is Express (from Returns policy)?"] == (
        "delivered the next working day if ordered before noon"
    )
    extract = next(c for c in found if c.task == "extract")
    assert [item["name"] for item in json.loads(extract.answer)] == [
        "Standard",
        "Express",
        "Pickup",
    ]
    assert "What does Returns policy say about Refund times?" in by_question
    cloze = [c for p in passages("returns", RETURNS) for c in candidates(p, {"cloze"})]
    assert cloze and all("____" in c.question and c.answer in c.passage.text for c in cloze)
    assert grounding(INVENTED, RETURNS) < 0.3


def test_the_filters_drop_what_a_user_would_not_train_on():
    from synth_fixtures import RETURNS

    from forgeml.data.synthesis.filters import ExampleFilter
    from forgeml.data.synthesis.rules import Candidate

    passage = next(passages("returns", RETURNS))
    keep = ExampleFilter(max_answer_chars=200)
    examples = [
        Candidate("qa", "teacher", "What is a return label?", "A prepaid shipping label.", passage),
        Candidate("qa", "teacher", "what is a  RETURN label?", "A prepaid label.", passage),
        Candidate("qa", "teacher", "How much are bananas?", INVENTED, passage),
        Candidate("qa", "teacher", "Who owns it?", "Mail jane@example.org, the owner", passage),
        Candidate("qa", "teacher", "Everything?", "prepaid label " * 40, passage),
        Candidate("extract", "teacher", "List", '[{"name": "Bananas", "description": "x"}]',
                  passage),
    ]  # fmt: skip
    assert [keep.keep(example) for example in examples] == [True] + [False] * 5
    assert keep.dropped == {"duplicate": 1, "not_grounded": 2, "pii": 1, "answer_length": 1}


def test_rules_make_a_traceable_chat_dataset_through_the_cli(help_centre, tmp_path):
    made = json.loads(
        forgeml(help_centre, "--json", "data", "synthesize", "help-centre", "--name", "qa").stdout
    )
    metrics = made["metrics"]
    assert metrics["examples"] == sum(
        metrics[f"examples_{t}"] for t in ("qa", "summary", "extract", "cloze")
    )
    assert metrics["examples_extract"] >= 2 and metrics["examples_cloze"] >= 3
    assert metrics["dropped_pii"] >= 1  # the router manual's e-mail address stays out

    texts = documents(help_centre, "help-centre")
    rows = records(help_centre, "qa")
    assert len(rows) == metrics["examples"]
    for row in rows:
        origin = row["metadata"]["synthetic"]
        passage = origin["passage"]
        piece = texts[passage["document_id"]][passage["start"] : passage["end"]]
        assert hashlib.sha256(piece.encode()).hexdigest() == passage["sha256"]
        assert row["messages"][-1]["role"] == "assistant"
        assert "example.com" not in json.dumps(row["messages"])
    assert {row["source"] for row in rows} == {"docs/returns.md", "docs/router.md"}

    # The same documents, seed and parameters in another folder: the same bytes.
    other = tmp_path / "elsewhere" / "ws"
    forgeml(other, "data", "ingest", str(tmp_path / "docs"), "--name", "help-centre")
    again = json.loads(
        forgeml(other, "--json", "data", "synthesize", "help-centre", "--name", "qa").stdout
    )
    assert again["outputs"]["dataset"] == made["outputs"]["dataset"]

    # A normal dataset: assessed as chat examples, and forgotten with its documents.
    assessed = json.loads(forgeml(help_centre, "--json", "data", "assess", "qa").stdout)
    assert assessed["metrics"]["structure"]["chat"] == metrics["examples"]
    forgeml(help_centre, "data", "forget", "help-centre", "--reason", "test erasure")
    refused = forgeml(help_centre, "data", "assess", "qa", ok=False)
    assert refused.returncode != 0 and "forgotten" in refused.stderr + refused.stdout


def test_assess_points_documents_at_synthesize(help_centre):
    assessed = json.loads(forgeml(help_centre, "--json", "data", "assess", "help-centre").stdout)
    assert any("forgeml data synthesize" in step for step in assessed["next_steps"])


def test_a_teacher_writes_grounded_examples_and_the_key_stays_out(help_centre, tmp_path):
    template = tmp_path / "qa.txt"
    template.write_text("Write up to {count} questions on {title} ({heading}):\n{passage}")
    with FakeTeacher() as teacher:
        made = json.loads(
            forgeml(
                help_centre, "--json", "data", "synthesize", "help-centre",
                "--generator", "teacher", "--teacher-url", teacher.url,
                "--teacher-model", "vendor-large", "--task", "qa", "--task", "summary",
                "--name", "taught", "--teacher-prompt", f"qa={template}",
                env={"FORGEML_TEACHER_API_KEY": "sk-teacher-secret"},
            ).stdout
        )  # fmt: skip
    metrics = made["metrics"]
    assert {r["authorization"] for r in teacher.requests} == {"Bearer sk-teacher-secret"}
    assert metrics["teacher_requests"] == len(teacher.requests) > 0
    assert metrics["dropped_not_grounded"] >= 1  # the invented banana price
    assert metrics["teacher_replies_unusable"] >= 1  # the reply that was not JSON
    assert metrics["dropped_duplicate"] >= 1  # the same question asked of every passage
    prompts = [r["body"]["messages"][-1]["content"] for r in teacher.requests]
    custom = "Write up to 3 questions on Returns policy (Refund times):\nRefunds are"
    assert any(prompt.startswith(custom) for prompt in prompts)
    assert any(prompt.startswith("Summarise this passage") for prompt in prompts)
    rows = records(help_centre, "taught")
    answers = [row["messages"][-1]["content"] for row in rows]
    assert INVENTED not in answers and rows
    origins = {row["metadata"]["synthetic"]["generator"] for row in rows}
    assert origins == {"teacher"}
    assert all(r["metadata"]["synthetic"]["teacher_model"] == "vendor-large" for r in rows)
    stored = b"".join(path.read_bytes() for path in help_centre.rglob("*") if path.is_file())
    assert b"sk-teacher-secret" not in stored


def test_a_teacher_outage_resumes_without_asking_again(help_centre):
    args = ["data", "synthesize", "help-centre", "--generator", "teacher", "--task", "qa",
            "--task", "summary", "--task", "extract", "--teacher-model", "m", "--name", "t", "--passage-chars", "200"]  # fmt: skip
    with FakeTeacher(fail_after=17) as failing:
        broken = forgeml(help_centre, *args, "--teacher-url", failing.url, ok=False)
    assert broken.returncode != 0 and "quota exceeded" in broken.stderr + broken.stdout
    # The same endpoint back (same URL: the same run, resumed).
    with FakeTeacher(port=failing.port) as teacher:
        done = json.loads(
            forgeml(help_centre, "--json", *args, "--teacher-url", teacher.url).stdout
        )
    metrics = done["metrics"]
    assert metrics["teacher_replies_reused"] == 16  # the first chunk, kept as it arrived
    assert metrics["teacher_requests"] == len(teacher.requests)
    asked_before = {json.dumps(r["body"]["messages"]) for r in failing.requests[:16]}
    asked_now = {json.dumps(r["body"]["messages"]) for r in teacher.requests}
    assert not asked_before & asked_now


def test_bad_requests_are_refused_before_any_work(help_centre, tmp_path):
    no_url = forgeml(help_centre, "data", "synthesize", "help-centre", "--generator",
                     "teacher", ok=False)  # fmt: skip
    assert "--teacher-url" in no_url.stderr + no_url.stdout
    template = tmp_path / "qa.txt"
    template.write_text("Ask about {title}.", encoding="utf-8")
    bad_template = forgeml(
        help_centre, "data", "synthesize", "help-centre", "--generator", "teacher",
        "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m",
        "--teacher-prompt", f"qa={template}", ok=False,
    )  # fmt: skip
    assert "{passage}" in bad_template.stderr + bad_template.stdout
    bad_task = forgeml(help_centre, "data", "synthesize", "help-centre", "--task", "poems",
                       ok=False)  # fmt: skip
    assert "poems" in bad_task.stderr + bad_task.stdout
    for output in (no_url, bad_template, bad_task):
        assert "Traceback" not in output.stderr
