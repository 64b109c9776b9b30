"""Erasing production feedback: rows deleted, request log rows too, what was trained on
them erased or blocked, audited without the text searched for."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forgeml.cli.app import app
from forgeml.core.errors import ConflictError, InputError
from forgeml.core.feedback import FeedbackEntry, add_feedback, list_feedback
from forgeml.core.runs import run_stage
from forgeml.core.schema import AuditEntry, RequestLog
from forgeml.data.feedback_erasure import forget_feedback
from forgeml.serve.auth import create_key

EMAIL = "jane.doe@example.com"
ORDER = [{"role": "user", "content": "Where is ORD-12?"}]
REFUND = [{"role": "user", "content": "Refund me"}]


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def give(workspace, completion_id, messages, output, rating, **extra) -> None:
    entry = FeedbackEntry(
        completion_id=completion_id,
        model="support-bot",
        messages=messages,
        output=output,
        rating=rating,
        **({"source": "cache"} | extra),  # as the server records it
    )
    add_feedback(workspace, entry)


def log_request(workspace, completion_id: str, key_id: int | None, text: str = "") -> None:
    with workspace.registry.session() as session:
        session.add(
            RequestLog(
                completion_id=completion_id,
                model="support-bot",
                route="/v1/chat/completions",
                status=200,
                api_key_id=key_id,
                request={"messages": [{"role": "user", "content": text}]} if text else {},
            )
        )


def request_log(workspace) -> list[str]:
    with workspace.registry.session() as session:
        return sorted(row.completion_id for row in session.query(RequestLog))


@pytest.fixture
def production(workspace):
    key, _ = create_key(workspace, "crm", "inference")
    jane = [{"role": "user", "content": f"I am {EMAIL}, where is ORD-12?"}]
    give(workspace, "c-jane", jane, answer("No idea."), 1, corrected_output="It has shipped.")
    give(workspace, "c-order", ORDER, answer("It shipped yesterday."), 5)
    give(workspace, "c-crm", REFUND, answer("Done, refunded."), 4, api_key_id=key.id)
    log_request(workspace, "c-jane", None)
    log_request(workspace, "c-order", None)
    log_request(workspace, "c-crm", key.id)
    log_request(workspace, "c-other-crm", key.id)
    log_request(workspace, "c-logged", None, text=f"mail {EMAIL.upper()} please")
    return workspace


def test_forgetting_by_text_deletes_rows_and_marks_what_was_trained_on_them(production):
    workspace = production
    built = run_stage(workspace, "data.from_feedback", {"name": "round"})
    preference = built.outputs["preference"]
    before = {entry.id for entry in list_feedback(workspace)}

    erasure = forget_feedback(workspace, "GDPR-1", containing=EMAIL)

    assert len(erasure.feedback_ids) == 1
    assert {entry.id for entry in list_feedback(workspace)} == before - set(erasure.feedback_ids)
    assert request_log(workspace) == ["c-crm", "c-order", "c-other-crm"]  # jane's + logged text
    # Jane's correction made a preference pair: that dataset is forgotten, the others not.
    assert preference.ref in erasure.forgotten
    with pytest.raises(ConflictError, match="GDPR-1"):
        workspace.registry.resolve(preference.ref, purpose="be served")
    assert not (workspace.root / preference.path).exists()  # her pair's bytes are erased
    assert built.outputs["prompts"].ref in erasure.forgotten  # her prompt is an RL prompt
    with workspace.registry.session() as session:
        audit = session.query(AuditEntry).filter_by(action="feedback.forget").one()
        assert EMAIL not in json.dumps(audit.details)
        assert audit.details["feedback_deleted"] == 1 and audit.details["reason"] == "GDPR-1"


def test_forgetting_a_key_takes_its_feedback_and_its_whole_request_log(production):
    # A rotated key shares the name: the old one's data goes too (revoked or not).
    rotated, _ = create_key(production, "crm", "inference")
    log_request(production, "c-rotated-crm", rotated.id)
    erasure = forget_feedback(production, "offboarding crm", key_name="crm")
    assert len(erasure.feedback_ids) == 1 and erasure.request_log_rows == 3
    assert {entry.completion_id for entry in list_feedback(production)} >= {"c-order"}
    assert "c-crm" not in {entry.completion_id for entry in list_feedback(production)}
    assert request_log(production) == ["c-jane", "c-logged", "c-order"]
    assert erasure.forgotten == []  # nothing was built from it yet


def test_a_selector_and_a_reason_are_required(production):
    with pytest.raises(InputError, match="say which feedback"):
        forget_feedback(production, "GDPR-2")
    with pytest.raises(InputError, match="no API key is named"):
        forget_feedback(production, "GDPR-2", key_name="nobody")


def test_cli(production):
    result = CliRunner().invoke(
        app,
        [
            "--workspace", str(production.root), "--json", "data", "forget-feedback",
            "--completion", "c-order", "--reason", "ticket 7",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["feedback_deleted"] == 1 and data["request_log_deleted"] == 1
