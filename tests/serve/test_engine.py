"""The batching engine on its own: same tokens as `generate`, stop strings, aborts, 429."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest
import torch
from serving_fixtures import MODEL_NAME, ServerThread

from forgeml.models import chat_template as ct
from forgeml.models.sizes import load_model
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.chat.output_parser import StreamingOutputParser
from forgeml.serve.engine.base import GenerationRequest, QueueFullError, SamplingParams
from forgeml.serve.engine.sequence import Sequence
from forgeml.serve.engine.transformers import TransformersEngine
from forgeml.serve.served_models import load_served_model


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


def greedy(max_tokens, **extra):
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **extra)


async def collect(engine, request):
    chunks = [chunk async for chunk in engine.generate(request)]
    return "".join(c.text for c in chunks), chunks[-1]


def test_batched_greedy_decoding_matches_generate(model, tokenizer):
    """Requests of different lengths, some joining mid-flight, decode as if alone."""
    texts = ["def", "The with statement is used", "x", "Exceptions are raised when an error occurs"]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    expected = []
    with torch.inference_mode():
        for prompt in prompts:
            output = model.generate(
                torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None
            )
            expected.append(output[0, len(prompt) :].tolist())

    async def main():
        engine = TransformersEngine(model, tokenizer, max_batch_size=8)
        await engine.start()
        try:

            async def run(index, delay):
                await asyncio.sleep(delay)
                # Full-length runs, as generate does above.
                request = GenerationRequest(str(index), prompts[index], greedy(12, ignore_eos=True))
                ids = []
                async for chunk in engine.generate(request):
                    ids += chunk.token_ids
                return ids

            return await asyncio.gather(*(run(i, 0.02 * i) for i in range(len(prompts))))
        finally:
            await engine.stop()

    assert asyncio.run(main()) == expected


def test_stop_strings_are_cut_and_never_streamed(tokenizer):
    text = "alpha beta gamma delta"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sequence = Sequence(
        GenerationRequest("s", [1], greedy(50, stop=("gamma",))), tokenizer.backend_tokenizer, {2}
    )
    streamed = ""
    for token in ids:
        chunk = sequence.append(token)
        streamed += chunk.text
        if chunk.finish_reason:
            break
    assert chunk.finish_reason == "stop" and streamed == "alpha beta "


def test_length_and_eos_finish(tokenizer):
    sequence = Sequence(GenerationRequest("s", [1], greedy(2)), tokenizer.backend_tokenizer, {2})
    assert sequence.append(100).finish_reason is None
    last = sequence.append(101)
    assert last.finish_reason == "length" and last.completion_tokens == 2
    sequence = Sequence(GenerationRequest("s", [1], greedy(9)), tokenizer.backend_tokenizer, {2})
    assert sequence.append(2).finish_reason == "stop"


def test_closing_a_stream_aborts_the_sequence(model, tokenizer):
    async def main():
        engine = TransformersEngine(model, tokenizer)
        await engine.start()
        try:
            stream = engine.generate(GenerationRequest("a", [1, 50, 60], greedy(900)))
            await stream.__anext__()
            await stream.aclose()
            for _ in range(200):
                if engine.stats().running == 0:
                    return True
                await asyncio.sleep(0.01)
            return False
        finally:
            await engine.stop()

    assert asyncio.run(main())


class BrokenGuide:
    def allowed(self, remaining_tokens):
        raise RuntimeError("grammar exploded")

    def advance(self, token_id):
        pass


def test_a_failing_guide_ends_only_its_own_request(model, tokenizer):
    async def main():
        engine = TransformersEngine(model, tokenizer)
        await engine.start()
        try:
            healthy = GenerationRequest("ok", [1, 50], greedy(6, ignore_eos=True))
            broken = GenerationRequest("bad", [1, 60], greedy(6), guide=BrokenGuide())
            return await asyncio.gather(collect(engine, healthy), collect(engine, broken))
        finally:
            await engine.stop()

    (_, ok), (_, bad) = asyncio.run(main())
    assert ok.finish_reason == "length" and ok.completion_tokens == 6
    assert bad.finish_reason == "error" and "grammar exploded" in bad.error


def test_full_queue_refuses_at_once(model, tokenizer):
    async def main():
        engine = TransformersEngine(model, tokenizer, max_batch_size=1, max_waiting=0)
        await engine.start()
        try:
            running = engine.generate(GenerationRequest("a", [1, 2], greedy(900)))
            await running.__anext__()  # admitted: the one batch slot is taken
            with pytest.raises(QueueFullError):
                engine.generate(GenerationRequest("b", [1, 2], greedy(2)))
            await running.aclose()
        finally:
            await engine.stop()

    asyncio.run(main())


def test_full_queue_is_429_over_http(serve_workspace, served):
    settings = ServeSettings(max_batch_size=1, max_waiting=0, torch_threads=1)
    busy = load_served_model(serve_workspace, MODEL_NAME, settings)
    app = create_app(serve_workspace, [busy], settings)
    headers = {"Authorization": f"Bearer {served.inference_key}"}
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]}
    # ignore_eos: a long request the model could end early would free the slot before the
    # second one arrives (and a wait for "running" could then spin forever).
    long_one = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 900, "stream": True}
    long_one["ignore_eos"] = True
    with (
        ServerThread(app) as url,
        httpx.stream("POST", url + "/v1/completions", json=long_one, headers=headers),
    ):
        deadline = time.monotonic() + 60
        while busy.engine.stats().running == 0:  # until it holds the only batch slot
            assert time.monotonic() < deadline, "the long request never started decoding"
            time.sleep(0.01)
        response = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "queue_full"


@pytest.mark.parametrize("seed", range(5))
def test_streaming_parser_agrees_with_the_whole_turn_parser(seed):
    rng = random.Random(seed)
    turn = (
        f"{ct.THINK}think about it{ct.END_THINK}the answer"
        f'{ct.TOOL_CALLS}get_weather{ct.ARGS}{{"city": "Paris"}}'
        f"{ct.TOOL_CALLS}get_time{ct.ARGS}{{}}{ct.EOS}ignored"
    )
    cuts = sorted(rng.sample(range(1, len(turn)), 12))
    pieces = [turn[a:b] for a, b in zip([0, *cuts], [*cuts, len(turn)], strict=True)]
    parser = StreamingOutputParser()
    reasoning = content = ""
    calls = []
    for delta in [*map(parser.feed, pieces), parser.finish()]:
        reasoning += delta.reasoning
        content += delta.content
        calls += delta.tool_calls
    expected_content, expected_reasoning, expected_calls = ct.parse_assistant_output(turn)
    assert (content, reasoning) == (expected_content, expected_reasoning)
    assert [c["function"] for c in calls] == [c["function"] for c in expected_calls]
    assert [c["index"] for c in calls] == [0, 1]
