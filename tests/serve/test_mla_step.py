"""The lean mistral4 step computes what the model's own forward computes."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from forgeml.models.sizes import PAD_ID, build_config, build_model
from forgeml.serve.engine import mla_step
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.batch import ROOM, prefill
from forgeml.serve.engine.sequence import Sequence

PROMPTS = [[1, 5, 9], [1, 7, 20, 30, 40, 50, 60], [1, 3], [1, 11, 12, 13]]
STEPS = ROOM + 6  # past ROOM, so the cache's storage is regrown at least once


def sequences(first: int, last: int) -> list[Sequence]:
    sampling = SamplingParams(max_tokens=100, temperature=0.0)
    return [
        Sequence(GenerationRequest(str(i), PROMPTS[i], sampling), None, set())
        for i in range(first, last)
    ]


def decode(model, joint: bool) -> dict[str, list[torch.Tensor]]:
    """Each request's logits, token by token, decoding greedily while requests join
    (at step 2: in the step's own pass when `joint`, else prefilled and merged before
    it) and leave (at step 5; the longest prompt, so trim drops columns)."""
    history = defaultdict(list)

    def record(rows: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        for sequence, row in zip(rows, logits, strict=True):
            history[sequence.request.request_id].append(row)
        return logits.argmax(dim=-1)

    first = sequences(0, 2)
    batch, logits = prefill(model, first, PAD_ID)
    batch.last_tokens = record(first, logits)
    for step in range(STEPS):
        joining = sequences(2, 4) if step == 2 else []
        if joining and not joint:
            joined, logits = prefill(model, joining, PAD_ID)
            joined.last_tokens = record(joining, logits)
            batch.merge(joined)
            joining = []
        if step == 5:
            batch.keep([0, 2, 3])
        rows = batch.sequences + joining
        logits, joined = batch.step(model, None, joining, PAD_ID)
        tokens = record(rows, logits)
        batch.last_tokens = tokens[: len(batch)]
        if joined is not None:
            joined.last_tokens = tokens[len(batch) :]
            batch.merge(joined)
    return history


@pytest.mark.parametrize(
    "overrides",
    [{}, {"q_lora_rank": None}, {"rope_interleave": False}],
    ids=["default", "no-q-lora", "halves-rope"],
)
def test_lean_steps_match_the_model_forward(monkeypatch, overrides):
    model = tiny_model(**overrides)
    assert mla_step.supports(model)
    with torch.inference_mode():
        lean = decode(model, joint=True)
        monkeypatch.setattr(mla_step, "supports", lambda model: False)
        generic = decode(model, joint=False)
    assert_same_tokens(lean, generic)


def test_lean_steps_continue_a_cache_the_model_prefilled(monkeypatch):
    """Prompts too long for the lean prompt attention are prefilled by the model itself;
    the lean steps then read that cache."""
    model = tiny_model()
    with torch.inference_mode():
        monkeypatch.setattr(mla_step, "MAX_PROMPT_SCORES", 0)
        mixed = decode(model, joint=False)
        monkeypatch.setattr(mla_step, "supports", lambda model: False)
        generic = decode(model, joint=False)
    assert_same_tokens(mixed, generic)


def tiny_model(**overrides):
    # A wider init than training's 0.02: clear argmax margins, so float rounding cannot
    # flip a greedy token and the comparison is about the math.
    config = build_config("tiny", vocab_size=300, initializer_range=0.2, **overrides)
    return build_model(config, seed=0).eval()


def assert_same_tokens(mine: dict, theirs: dict) -> None:
    assert sorted(mine) == sorted(theirs) == ["0", "1", "2", "3"]
    for request, expected in theirs.items():
        assert len(mine[request]) >= 6
        for token, (a, b) in enumerate(zip(mine[request], expected, strict=False)):
            message = f"request {request}, token {token}"
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=message)
            assert a.argmax() == b.argmax(), message


def test_models_it_cannot_run_are_left_to_their_own_forward():
    model = build_model(build_config("tiny", vocab_size=300), seed=0)
    model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "dynamic"}
    assert not mla_step.supports(model)  # frequencies that change with the length
    assert not mla_step.supports(torch.nn.Linear(2, 2))  # not a transformers model
