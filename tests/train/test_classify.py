"""Classifiers as a user makes and uses them: Mistral's classifier JSONL ingested, a head
trained with `forgeml train classify`, labels from `forgeml classify`, an evaluation with
a confusion matrix, and `/v1/classifications` answered to the `mistralai` client by a
real server. Bad data is refused with the file, line and label named."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from finetune_fixtures import build_base, forgeml, register_model, weights_sha256, write_jsonl

from forgeml.core.workspace import Workspace

TOPICS = {
    "billing": ["the invoice is wrong", "I was charged twice", "refund the invoice"],
    "shipping": ["my parcel is late", "where is the parcel", "the courier lost my parcel"],
    "account": ["reset my password", "my password does not work", "I cannot log in"],
}
ITEMS = ["for order 12", "on the blue lamp", "since monday", "again", "for my office"]
TRAIN = ["--max-steps", "40", "--batch-size", "8", "--lr", "3e-3", "--seq-len", "64"]


def lines(urgent_every: int = 3) -> list[dict]:
    """Category from the topic words; the multi-label `flags` from "now" and "please"."""
    out = []
    for index, (category, phrases) in enumerate(sorted(TOPICS.items())):
        for p, phrase in enumerate(phrases):
            for i, item in enumerate(ITEMS):
                urgent = (p + i) % urgent_every == 0
                text = f"{'please ' if i % 2 else ''}{phrase} {item}{' now' if urgent else ''}"
                flags = (["urgent"] if urgent else []) + (["polite"] if i % 2 else [])
                out.append({"text": text, "labels": {"category": category, "flags": flags}})
        del index
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classify")
    workspace = Workspace.init(root / "ws")
    register_model(workspace, build_base(root / "base"))
    workspace.close()
    write_jsonl(root / "tickets.jsonl", lines())
    forgeml(root / "ws", "data", "ingest", str(root / "tickets.jsonl"), "--name", "tickets")
    result = forgeml(
        root / "ws", "--json", "train", "classify", "--model", "base", "--data", "tickets",
        "--validation", "tickets", "--name", "router", *TRAIN,
    )  # fmt: skip
    run = json.loads(result.stdout)
    assert run["metrics"]["val_accuracy"] >= 0.9, run["metrics"]
    return root


def test_a_trained_classifier_labels_texts_from_the_command_line(trained):
    result = forgeml(trained / "ws", "--json", "classify", "router",
                     "please the courier lost my parcel again now", "reset my password")  # fmt: skip
    answers = json.loads(result.stdout)["results"]
    assert answers[0]["labels"]["category"] == "shipping"
    assert answers[1]["labels"]["category"] == "account"
    assert (
        "urgent" in answers[0]["labels"]["flags"] and "urgent" not in answers[1]["labels"]["flags"]
    )
    scores = answers[0]["scores"]["category"]
    assert set(scores) == set(TOPICS) and abs(sum(scores.values()) - 1) < 1e-4  # one label
    human = forgeml(trained / "ws", "classify", "router", "the invoice is wrong").stdout
    assert "billing" in human


def test_the_evaluation_has_accuracy_f1_and_a_confusion_matrix(trained):
    result = forgeml(trained / "ws", "--json", "eval", "classifier", "router", "--data", "tickets")
    report = json.loads(result.stdout)
    assert report["metrics"]["accuracy"] >= 0.9 and report["metrics"]["macro_f1"] >= 0.9
    eval_json = json.loads((Path(report["report"]).parent / "eval.json").read_text())
    confusion = eval_json["classifier"]["category"]["confusion"]
    assert sum(confusion["billing"].values()) == len(TOPICS["billing"]) * len(ITEMS)
    assert "micro_f1" in eval_json["classifier"]["flags"]
    page = Path(report["report"]).read_text()
    assert "Label set category" in page and "gold \\ predicted" in page


def test_the_output_is_a_hugging_face_sequence_classifier(trained):
    from transformers import AutoModelForSequenceClassification

    workspace = Workspace.open(trained / "ws")
    directory = workspace.root / workspace.registry.resolve("router").path
    workspace.close()
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    config = model.config
    assert type(model).__name__ == config.architectures[0] == "Mistral4ForSequenceClassification"
    assert config.id2label[0] == "category:account" and config.num_labels == 3 + 2


def test_the_same_seed_gives_the_same_classifier(trained, tmp_path):
    workspace = Workspace.init(tmp_path / "ws")
    register_model(workspace, build_base(tmp_path / "base"))
    workspace.close()
    write_jsonl(tmp_path / "tickets.jsonl", lines())
    forgeml(tmp_path / "ws", "data", "ingest", str(tmp_path / "tickets.jsonl"), "--name", "tickets")
    forgeml(tmp_path / "ws", "train", "classify", "--model", "base", "--data", "tickets",
            "--validation", "tickets", "--name", "router", *TRAIN)  # fmt: skip
    paths = []
    for root in (trained / "ws", tmp_path / "ws"):
        ws = Workspace.open(root)
        paths.append(ws.root / ws.registry.resolve("router").path)
        ws.close()
    assert weights_sha256(paths[0]) == weights_sha256(paths[1])


def test_bad_classifier_data_names_the_line_and_the_label(trained, tmp_path):
    ws = trained / "ws"
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"text": "fine", "labels": {"category": "billing"}}, {"text": "no labels here"},
         {"text": "x", "labels": {"category": 7}}],
    )  # fmt: skip
    forgeml(ws, "data", "ingest", str(bad), "--name", "bad")
    refused = forgeml(ws, "train", "classify", "--model", "base", "--data", "bad", ok=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "bad.jsonl:2: no 'labels' field" in refused.stderr
    assert "bad.jsonl:3: labels.category" in refused.stderr
    unseen = write_jsonl(
        tmp_path / "unseen.jsonl", [{"text": "a", "labels": {"category": "legal"}}]
    )
    forgeml(ws, "data", "ingest", str(unseen), "--name", "unseen")
    refused = forgeml(ws, "eval", "classifier", "router", "--data", "unseen", ok=False)
    assert (
        refused.returncode == 2
        and "unseen.jsonl:1: labels.category: 'legal' is not a label" in refused.stderr
    )
    not_classifier = forgeml(ws, "classify", "base", "hello", ok=False)
    assert not_classifier.returncode == 2 and "not a classifier" in not_classifier.stderr


def test_the_server_classifies_for_the_mistral_client(trained):
    from mistralai.client import Mistral

    from forgeml.core.schema import RequestLog as RequestLogRow
    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.auth import create_key
    from forgeml.serve.background import BackgroundServer

    workspace = Workspace.open(trained / "ws")
    _, key = create_key(workspace, "tests", "inference")
    app = create_app(workspace, ["router", "base"], ServeSettings(key_cache_seconds=0.0))
    with BackgroundServer(app) as url, Mistral(api_key=key, server_url=url) as client:
        answer = client.classifiers.classify(
            model="router", inputs=["where is the parcel again", "the invoice is wrong"]
        )
        scores = [result["category"].scores for result in answer.results]
        assert max(scores[0], key=scores[0].get) == "shipping"
        assert max(scores[1], key=scores[1].get) == "billing"
        assert set(answer.results[0]["flags"].scores) == {"polite", "urgent"}
        chat = client.classifiers.classify_chat(
            model="router", input=[{"messages": [{"role": "user", "content": "hello"}]}]
        )
        assert set(chat.results[0]["category"].scores) == set(TOPICS)
        headers = {"Authorization": f"Bearer {key}"}
        generate = httpx.post(f"{url}/v1/chat/completions", headers=headers,
                              json={"model": "router", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert (
            generate.status_code == 400
            and generate.json()["error"]["code"] == "model_is_classifier"
        )
        wrong = httpx.post(f"{url}/v1/classifications", headers=headers,
                           json={"model": "base", "input": "hi"})  # fmt: skip
        assert wrong.status_code == 400 and "not a classifier" in wrong.json()["error"]["message"]
        empty = httpx.post(f"{url}/v1/classifications", headers=headers,
                           json={"model": "router", "input": []})  # fmt: skip
        assert empty.status_code == 400 and "1 to 256 inputs" in empty.json()["error"]["message"]
    with workspace.registry.session() as session:
        logged = session.query(RequestLogRow).filter_by(route="classifications").all()
        signals = [row.request["signals"]["labels"] for row in logged if row.status == 200]
    workspace.close()
    assert signals[0] == {"category": "shipping", "flags": signals[0]["flags"]}


def test_a_backlog_is_classified_with_forgeml_batch_run(trained, tmp_path):
    backlog = tmp_path / "backlog.jsonl"
    write_jsonl(backlog, [
        {"custom_id": "a", "method": "POST", "url": "/v1/classifications",
         "body": {"input": "the courier lost my parcel"}},
        {"custom_id": "b", "method": "POST", "url": "/v1/classifications",
         "body": {"input": ["reset my password", "the invoice is wrong"]}},
    ])  # fmt: skip
    result = forgeml(trained / "ws", "--json", "batch", "run", "router", str(backlog),
                     "--endpoint", "/v1/classifications")  # fmt: skip
    assert json.loads(result.stdout)["completed"] == 2
    answers = [json.loads(x) for x in (tmp_path / "backlog.results.jsonl").read_text().splitlines()]
    top = [
        max(scores["category"]["scores"], key=scores["category"]["scores"].get)
        for answer in answers
        for scores in answer["response"]["body"]["results"]
    ]
    assert top == ["shipping", "account", "billing"]
    moderations = write_jsonl(tmp_path / "moderate.jsonl", [
        {"custom_id": "m", "method": "POST", "url": "/v1/moderations",
         "body": {"input": "the invoice is wrong"}},
    ])  # fmt: skip
    forgeml(
        trained / "ws", "batch", "run", "router", str(moderations), "--endpoint", "/v1/moderations"
    )
    (answer,) = [
        json.loads(x) for x in (tmp_path / "moderate.results.jsonl").read_text().splitlines()
    ]
    assert answer["response"]["body"]["results"][0]["categories"]["category/billing"] is True


def test_the_server_moderates_for_the_openai_and_mistral_clients(trained):
    """/v1/moderations: each label a category (`set/label` with several sets), flagged when
    a decided label is not a negative class; the openai and mistralai clients read it."""
    from mistralai.client import Mistral
    from openai import OpenAI

    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.auth import create_key
    from forgeml.serve.background import BackgroundServer

    workspace = Workspace.open(trained / "ws")
    _, key = create_key(workspace, "tests", "inference")
    app = create_app(workspace, ["router", "base"], ServeSettings(key_cache_seconds=0.0))
    with BackgroundServer(app) as url:
        openai = OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
        answer = openai.moderations.create(
            model="router", input=["the courier lost my parcel now", "reset my password"]
        )
        first, second = answer.results
        assert answer.id.startswith("modr") and answer.model == "router"
        scores = first.model_dump()["category_scores"]
        assert {"category/shipping", "flags/urgent", "flags/polite"} <= set(scores)
        categories = first.model_dump()["categories"]
        assert categories["category/shipping"] and not categories["category/billing"]
        assert categories["flags/urgent"] and not second.model_dump()["categories"]["flags/urgent"]
        assert first.flagged  # a routing classifier has no negative class: a label flags
        parts = openai.moderations.create(model="router", input=[{"type": "text", "text": "hi"}])
        assert len(parts.results) == 1
        with Mistral(api_key=key, server_url=url) as mistral:
            moderated = mistral.classifiers.moderate(
                model="router", inputs=["the invoice is wrong"]
            )
        assert moderated.results[0].categories["category/billing"] is True
        headers = {"Authorization": f"Bearer {key}"}
        not_classifier = httpx.post(f"{url}/v1/moderations", headers=headers,
                                    json={"model": "base", "input": "hi"})  # fmt: skip
        assert not_classifier.status_code == 400
        assert "not a classifier" in not_classifier.json()["error"]["message"]
        image = httpx.post(f"{url}/v1/moderations", headers=headers, json={
            "model": "router", "input": [{"type": "image_url", "image_url": {"url": "x"}}]})  # fmt: skip
        assert image.status_code in (400, 422) and "Traceback" not in image.text
    workspace.close()


def test_a_negative_class_does_not_flag():
    from forgeml.models.classifier import HeadLayout, LabelSet
    from forgeml.serve.moderations.serving import moderation_result

    layout = HeadLayout((LabelSet("safety", ("abuse", "ok"), multi_label=False),))
    safe = moderation_result({"safety": {"ok": 0.9, "abuse": 0.1}}, layout)
    abusive = moderation_result({"safety": {"ok": 0.2, "abuse": 0.8}}, layout)
    assert not safe.flagged and safe.categories == {"ok": True, "abuse": False}
    assert abusive.flagged and abusive.category_scores["abuse"] == 0.8


def test_micro_batches_train_like_the_whole_batch(trained):
    """--micro-batch-size splits each step into forward passes that add up to the same
    loss as one pass over the whole batch (transformers adds a custom loss's micro batches
    without dividing; batch_share_loss weights each by its share)."""
    train = ["train", "classify", "--model", "base", "--data", "tickets", "--max-steps", "3",
             "--batch-size", "8", "--lr", "3e-3", "--seq-len", "64"]  # fmt: skip
    forgeml(trained / "ws", *train, "--name", "whole")
    forgeml(trained / "ws", *train, "--micro-batch-size", "2", "--name", "micro")
    ws = Workspace.open(trained / "ws")
    try:
        whole, micro = (ws.root / ws.registry.resolve(n).path for n in ("whole", "micro"))
    finally:
        ws.close()
    curves = [json.loads((path / "training.json").read_text())["loss_curve"]
              for path in (whole, micro)]  # fmt: skip
    assert [step for step, _ in curves[1]] == [1, 2, 3]
    for (_, expected), (_, loss) in zip(*curves, strict=True):
        assert loss == pytest.approx(expected, rel=1e-5)
