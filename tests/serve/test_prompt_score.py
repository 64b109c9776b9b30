"""The prompt log-probability the engine reports (a drift signal) is the model's own."""

from __future__ import annotations

import pytest
import torch

from forgeml.models.sizes import PAD_ID, build_config, build_model
from forgeml.serve.engine import mla_step
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.batch import prefill
from forgeml.serve.engine.prompt_score import MAX_SCORED, scored_positions
from forgeml.serve.engine.sequence import Sequence

# Different lengths in one batch (left padding), one longer than MAX_SCORED + 1 (sampled
# positions), one of a single token (nothing to score).
PROMPTS = [[1, 5, 9], list(range(1, 150)), [1], [1, 11, 12, 13, 14, 15]]


def sequences(prompts: list[list[int]]) -> list[Sequence]:
    sampling = SamplingParams(max_tokens=4, temperature=0.0)
    return [
        Sequence(GenerationRequest(str(i), prompt, sampling), None, set())
        for i, prompt in enumerate(prompts)
    ]


def expected(model, prompt: list[int]) -> float | None:
    """The mean log-probability at the scored positions, from one unbatched forward."""
    positions = scored_positions(len(prompt))
    if not positions:
        return None
    logits = model(input_ids=torch.tensor([prompt])).logits[0].float()
    scores = torch.log_softmax(logits, dim=-1)
    return float(torch.stack([scores[i, prompt[i + 1]] for i in positions]).mean())


@pytest.fixture(scope="module")
def model():
    return build_model(build_config("tiny", vocab_size=300), seed=0).eval()


def test_scored_positions_are_bounded_and_cover_the_prompt():
    assert scored_positions(1) == [] and scored_positions(0) == []
    assert scored_positions(5) == [0, 1, 2, 3]
    long = scored_positions(10_000)
    assert len(long) == MAX_SCORED and long[0] == 0 and long[-1] == 9_998


@pytest.mark.parametrize("lean", [True, False], ids=["mla-step", "model-forward"])
def test_prefill_reports_each_prompts_mean_logprob(model, monkeypatch, lean):
    if not lean:
        monkeypatch.setattr(mla_step, "supports", lambda model: False)
    rows = sequences(PROMPTS)
    with torch.inference_mode():
        prefill(model, rows, PAD_ID)
        for sequence, prompt in zip(rows, PROMPTS, strict=True):
            want = expected(model, prompt)
            if want is None:
                assert sequence.prompt_logprob is None
            else:
                assert sequence.prompt_logprob == pytest.approx(want, abs=2e-3)


def test_prompts_joining_a_decode_step_are_scored_too(model):
    first, joining = sequences(PROMPTS[:1]), sequences(PROMPTS[1:])
    with torch.inference_mode():
        batch, logits = prefill(model, first, PAD_ID)
        batch.last_tokens = logits.argmax(dim=-1)
        assert batch.can_join(model, None, joining)
        batch.step(model, None, joining, PAD_ID)
        for sequence, prompt in zip(joining, PROMPTS[1:], strict=True):
            want = expected(model, prompt)
            assert (sequence.prompt_logprob is None) == (want is None)
            if want is not None:
                assert sequence.prompt_logprob == pytest.approx(want, abs=2e-3)
