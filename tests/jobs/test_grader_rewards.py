"""An OpenAI reinforcement job's grader reaches train.rl's rewards, and the rewards see
the reference fields of the uploaded prompts (kept by data.ingest as they are)."""

from __future__ import annotations

import json

import pytest

from forgeml.core.runs import run_stage
from forgeml.core.stages import StageParams, stage
from forgeml.jobs import files, worker
from forgeml.serve.fine_tuning.protocol import CreateJobRequest
from forgeml.serve.fine_tuning.submission import create_job
from forgeml.train.finetune_data import load_records, prompt_row
from forgeml.train.rewards import RewardSpec, Sample, build_scorer, reward_names

PROMPTS = [
    {"messages": [{"role": "user", "content": "Capital of France?"}], "reference_answer": "Paris"},
    {"messages": [{"role": "user", "content": "Second city?"}], "reference_answer": "Lyon"},
]
ANSWER = "Paris</s>"  # what the "model" answers to every prompt
GRADERS = {
    "string_check": {
        "type": "string_check",
        "name": "exact",
        "operation": "eq",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference_answer}}",
    },
    "text_similarity": {
        "type": "text_similarity",
        "name": "close",
        "evaluation_metric": "fuzzy_match",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference_answer}}",
        "pass_threshold": 0.8,
    },
}


class GraderProbeParams(StageParams):
    name: str | None = None
    rewards: list[RewardSpec]


@stage(
    "toy.rl_probe",
    params=GraderProbeParams,
    inputs={"model": "model", "dataset": "dataset"},
    outputs={"model": "model"},
)
def rl_probe(ctx, params):
    """Stands in for train.rl: scores ANSWER on every prompt with the job's rewards, as
    train.rl's reward functions do (prompt_row's `item`, then the scorer)."""
    items = [
        json.loads(prompt_row(record, "auto")["item"])
        for record in load_records(ctx.input_path("dataset"), "prompt")
    ]
    scores = {
        name: [build_scorer(spec)(Sample.from_completion(ANSWER, item)) for item in items]
        for name, spec in zip(reward_names(params.rewards), params.rewards, strict=True)
    }
    writer = ctx.new_artifact("model")
    (writer.path / "scores.json").write_text(json.dumps(scores))
    model = ctx.commit(writer)
    ctx.name(model, params.name)
    return {"model": model}


@pytest.fixture(autouse=True)
def use_probe(monkeypatch):
    monkeypatch.setitem(worker.STAGE_FOR_METHOD, "reinforcement", "toy.rl_probe")


@pytest.mark.parametrize("grader", ["string_check", "text_similarity"])
def test_a_grader_scores_the_uploaded_prompts_in_training(workspace, grader):
    data = run_stage(workspace, "toy.write", {"text": "x"}).outputs["dataset"]
    run_stage(workspace, "toy.train", {"name": "base"}, {"dataset": data})
    content = "".join(json.dumps(line) + "\n" for line in PROMPTS).encode()
    uploaded = files.store_file(workspace, "rft.jsonl", content, "fine-tune")
    body = {
        "model": "base",
        "training_file": uploaded.id,
        "method": {"type": "reinforcement", "reinforcement": {"grader": GRADERS[grader]}},
    }
    job = create_job(workspace, CreateJobRequest.model_validate(body))

    done = worker.work_once(workspace)
    assert done.id == job.id and done.status == "succeeded", done.error
    model = workspace.registry.resolve(done.fine_tuned_model)
    scores = json.loads((workspace.root / model.path / "scores.json").read_text())
    if grader == "string_check":
        assert scores == {"exact": [1.0, 0.0]}
    else:
        (close,) = scores.values()
        assert close[0] == 1.0 and 0.0 <= close[1] < 0.5
