"""`data.from_feedback`: feedback rows in the registry become datasets that the readers of
train.preference, train.sft and train.rl accept as they are; new feedback is a new run."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from forgeml.cli.app import app
from forgeml.core import stages
from forgeml.core.errors import ConflictError, InputError
from forgeml.core.feedback import FeedbackEntry, add_feedback
from forgeml.core.runs import run_stage
from forgeml.core.schema import utcnow
from forgeml.data.from_feedback import SOURCE_PATH
from forgeml.models import chat_template
from forgeml.models.tokenizer import train_tokenizer
from forgeml.train.finetune_data import (
    assistant_text,
    load_records,
    preference_strings,
    prompt_row,
    sft_example,
)
from forgeml.train.rewards import ExactMatch, Sample, build_scorer

MODEL = "support-bot"
ORDER = [{"role": "user", "content": "Where is ORD-12?"}]
REFUND = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello, how can I help?"},
    {"role": "user", "content": "Refund me"},
]
SUM = [{"role": "user", "content": "What is 2+2?"}]


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def give(workspace, messages, output, rating=None, model=MODEL, **extra) -> FeedbackEntry:
    entry = FeedbackEntry(
        completion_id=f"chatcmpl-{rating}-{len(messages)}",
        model=model,
        messages=messages,
        output=output,
        rating=rating,
        **({"source": "cache"} | extra),  # as the server records it
    )
    return add_feedback(workspace, entry)


@pytest.fixture
def feedback(workspace):
    give(workspace, ORDER, answer("No idea."), 1, corrected_output="It has shipped.")
    give(workspace, ORDER, answer("It shipped yesterday."), 5)
    give(workspace, REFUND, answer("Done, refunded."), 4)
    # A generated call whose arguments are not JSON: not something to train towards.
    bad_call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{2+"}}
    give(workspace, SUM, {"role": "assistant", "content": None, "tool_calls": [bad_call]}, 5)
    give(workspace, ORDER, answer("Nope."), 1, model="other-bot", corrected_output="Shipped.")
    return workspace


def directory(workspace, artifact):
    return workspace.root / artifact.path


def test_feedback_becomes_data_the_training_readers_accept(feedback):
    workspace = feedback
    result = run_stage(workspace, "data.from_feedback", {"model": MODEL, "name": "round"})
    assert result.metrics["feedback"] == 4 and result.metrics["skipped"] == 1

    pairs = load_records(directory(workspace, result.outputs["preference"]), "preference")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("It has shipped.", "No idea."),  # the correction over the answer it corrects
        ("It shipped yesterday.", "No idea."),  # a good answer over a bad one, same prompt
    ]
    row = preference_strings(pairs[0], "auto")
    assert row["chosen"] == "It has shipped.</s>" and row["prompt"].endswith("[/INST]")

    chats = load_records(directory(workspace, result.outputs["sft"]), "chat")
    assert [c["messages"][-1]["content"] for c in chats] == [
        "It has shipped.",
        "It shipped yesterday.",
        "Done, refunded.",
    ]  # the answer with the broken tool call was left out
    trained = assistant_text(chats[2], "auto")
    assert trained == ["Done, refunded.</s>"]  # the earlier, unrated turn is context only
    tokenizer = train_tokenizer(
        ["Where is my order? It has shipped. Refund me. Done, refunded."] * 4,
        vocab_size=len(chat_template.SPECIAL_TOKENS) + 300,
    )
    example = sft_example(tokenizer, chats[2], "auto", 512)
    assert any(label != -100 for label in example.labels)

    prompts = load_records(directory(workspace, result.outputs["prompts"]), "prompt")
    assert [p["prompt"] for p in prompts] == [ORDER, REFUND, SUM]
    item = json.loads(prompt_row(prompts[0], "auto")["item"])
    assert item["reference"] == "It has shipped."
    exact = build_scorer(ExactMatch(type="exact_match"))
    assert exact(Sample.from_completion("It has shipped.</s>", item)) == 1.0

    snapshot = result.metrics["feedback_sha256"]
    for artifact in result.outputs.values():
        assert artifact.meta["feedback_sha256"] == snapshot
    assert workspace.registry.resolve("round-sft").sha256 == result.outputs["sft"].sha256


def test_new_feedback_is_a_new_run_and_the_same_feedback_reuses_it(feedback):
    workspace = feedback
    params = {"model": MODEL, "min_rating": 4}
    first = run_stage(workspace, "data.from_feedback", params)
    assert run_stage(workspace, "data.from_feedback", params).reused

    give(workspace, ORDER, answer("Wrong."), 1, model="other-bot")  # outside the filter
    assert run_stage(workspace, "data.from_feedback", params).reused

    give(workspace, SUM, answer("4"), 5)
    again = run_stage(workspace, "data.from_feedback", params)
    assert not again.reused and again.key != first.key
    assert again.metrics["feedback"] == first.metrics["feedback"] + 1
    assert again.metrics["feedback_sha256"] != first.metrics["feedback_sha256"]


def test_filters_and_reference_only(feedback):
    workspace = feedback
    only = run_stage(workspace, "data.from_feedback", {"model": MODEL, "reference_only": True})
    prompts = load_records(directory(workspace, only.outputs["prompts"]), "prompt")
    assert [p["extra"]["reference"] for p in prompts] == ["It has shipped."]

    everything = run_stage(workspace, "data.from_feedback", {"min_rating": 5})
    assert everything.metrics["feedback"] == 5
    assert everything.metrics["sft_examples"] == 3  # REFUND's 4 stars is no longer good

    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    with pytest.raises(InputError, match="no feedback matches"):
        run_stage(workspace, "data.from_feedback", {"since": tomorrow})


def test_feedback_arriving_after_the_key_was_computed_fails_the_run(feedback, monkeypatch):
    stage = stages.get_stage("data.from_feedback")
    stale = [{"path": SOURCE_PATH, "sha256": "0" * 64, "size": 0}]
    monkeypatch.setitem(
        stages._STAGES,
        stage.name,
        dataclasses.replace(stage, registry_sources=lambda _workspace, _params: stale),
    )
    with pytest.raises(ConflictError, match="feedback arrived"):
        run_stage(feedback, "data.from_feedback", {})


def test_cli(feedback):
    result = CliRunner().invoke(
        app,
        ["--workspace", str(feedback.root), "--json", "data", "from-feedback", "--model", MODEL],
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert set(made["outputs"]) == {"preference", "sft", "prompts"}
    assert made["metrics"]["preference_pairs"] == 2


def test_conversations_the_client_sent_are_left_out_unless_asked_for(feedback):
    give(feedback, SUM, answer("5"), 1, corrected_output="4", source="client")
    default = run_stage(feedback, "data.from_feedback", {"model": MODEL})
    assert default.metrics["feedback"] == 4  # the four the server recorded
    included = run_stage(
        feedback, "data.from_feedback", {"model": MODEL, "include_client_conversations": True}
    )
    assert included.metrics["feedback"] == 5
