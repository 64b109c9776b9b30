"""The llama.cpp engine: a GGUF export served, token for token what llama.cpp itself gives.

The tiny chat model is exported to GGUF by the real `export.model` stage; serving the
export's name selects the llama.cpp engine by itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time

import httpx
import numpy as np
import pytest
from serving_fixtures import ServerThread, register_tiny_model
from transformers import AutoTokenizer

from forgeml.core.errors import ForgeError, InputError
from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace
from forgeml.models.tokenizer import train_tokenizer
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.engine.base import GenerationRequest, QueueFullError, SamplingParams
from forgeml.serve.engine.llama_cpp import LlamaCppEngine, open_gguf
from forgeml.serve.export_files import export_files
from forgeml.serve.served_models import make_engine

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (make gguf)",
    ),
]

EXPORT = "tiny-chat-gguf"
PROMPT = "The for statement is used to iterate over the elements of a sequence"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


@pytest.fixture(scope="module")
def gguf_export(tmp_path_factory):
    """A workspace holding the tiny chat model and its f16 GGUF export (named EXPORT)."""
    workspace = Workspace.init(tmp_path_factory.mktemp("llama-cpp") / "ws")
    model = register_tiny_model(workspace)
    result = run_stage(
        workspace, "export.model", {"format": "gguf", "name": EXPORT}, {"model": model}
    )
    files = export_files(workspace, result.outputs["export"])
    yield workspace, files
    workspace.close()


@pytest.fixture(scope="module")
def tokenizer(gguf_export):
    return AutoTokenizer.from_pretrained(gguf_export[1].tokenizer_dir)


@pytest.fixture(scope="module")
def served_gguf(gguf_export):
    workspace, _ = gguf_export
    _, key = create_key(workspace, "tests", "inference")
    # One slot, no waiting room: a request arriving while another decodes is refused.
    settings = ServeSettings(
        max_batch_size=1, max_waiting=0, key_cache_seconds=0.0, torch_threads=1
    )
    app = create_app(workspace, [EXPORT], settings)
    with ServerThread(app) as url:
        yield url, key, app


def prompt_ids(tokenizer, text=PROMPT):
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


def raw_greedy(llm, ids, steps):
    tokens = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        tokens.append(token)
        if len(tokens) == steps:
            return tokens
    return tokens


async def run_engine(engine, ids, sampling):
    tokens, text, last = [], "", None
    async for chunk in engine.generate(GenerationRequest("t", ids, sampling)):
        tokens += chunk.token_ids
        text += chunk.text
        last = chunk
    return tokens, text, last


def test_engine_gives_llama_cpps_greedy_tokens(gguf_export, tokenizer):
    gguf = gguf_export[1].gguf
    first, second = prompt_ids(tokenizer), prompt_ids(tokenizer, "Assignment statements")
    greedy = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)

    async def scenario():
        engine = LlamaCppEngine(gguf, tokenizer, n_ctx=256, threads=1)
        await engine.start()
        try:
            started = time.perf_counter()
            tokens, text, last = await run_engine(engine, first, greedy)
            seconds = time.perf_counter() - started
            # The next turn extends the cached sequence: only its new tokens are evaluated.
            extended = first + tokens + second[1:]
            more, _, _ = await run_engine(engine, extended, greedy)
            other, _, _ = await run_engine(engine, second, greedy)
            sampled = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=7)
            seeded = [await run_engine(engine, first, sampled) for _ in range(2)]
            return tokens, text, last, seconds, more, other, seeded
        finally:
            await engine.stop()

    tokens, text, last, seconds, more, other, seeded = asyncio.run(scenario())
    llm = open_gguf(gguf, 256, 1)
    try:
        started = time.perf_counter()
        expected = raw_greedy(llm, first, 24)
        raw_seconds = time.perf_counter() - started
        assert raw_greedy(llm, first + tokens + second[1:], 24) == more
        assert raw_greedy(llm, second, 24) == other
    finally:
        llm.close()
    print(
        f"24 tokens: engine {seconds * 1e3:.0f} ms, raw llama-cpp-python {raw_seconds * 1e3:.0f} ms"
    )
    assert tokens == expected
    assert text == tokenizer.decode(expected)
    assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == (
        "length",
        24,
        len(first),
    )
    assert seeded[0][0] == seeded[1][0]  # a seed gives the same completion


def test_the_gguf_must_match_the_tokenizer(gguf_export, tmp_path):
    other = train_tokenizer(["just a few words, nothing like the docs"] * 4, vocab_size=300)
    with pytest.raises(ForgeError, match="does not use the tokenizer"):
        LlamaCppEngine(gguf_export[1].gguf, other)


def test_only_a_gguf_runs_on_llama_cpp_and_a_gguf_only_there(gguf_export, tokenizer):
    files = gguf_export[1]
    with pytest.raises(InputError, match="serves GGUF exports"):
        make_engine("m", files.tokenizer_dir, tokenizer, ServeSettings(engine="llama.cpp"))
    with pytest.raises(InputError, match="only the llama.cpp engine"):
        make_engine("m", files.directory, tokenizer, ServeSettings(engine="vllm"), gguf=files.gguf)


def test_a_gguf_export_is_served_by_llama_cpp_and_json_mode_parses(served_gguf):
    from openai import OpenAI

    url, key, app = served_gguf
    assert [m.engine.name for m in app.state.pool.models] == ["llama.cpp"]
    with OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        response = client.chat.completions.create(
            model=EXPORT,
            messages=[{"role": "user", "content": "Weather in Paris for 3 days, as JSON"}],
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
            max_tokens=48,
            temperature=0.8,
            seed=1,
        )
    answer = json.loads(response.choices[0].message.content)
    assert set(answer) >= {"city", "days"} and isinstance(answer["days"], int)
    assert response.usage.completion_tokens <= 48


def test_a_busy_engine_answers_429_and_a_closed_stream_frees_it(served_gguf, monkeypatch):
    url, key, app = served_gguf
    engine = app.state.pool.models[0].engine
    decode = engine.slots.decode

    def slow_decode(feeds):  # ~10 s for the long request: it cannot end on its own in time
        time.sleep(0.01)
        return decode(feeds)

    monkeypatch.setattr(engine.slots, "decode", slow_decode)
    headers = {"Authorization": f"Bearer {key}"}
    long = {"model": EXPORT, "prompt": PROMPT, "max_tokens": 900, "ignore_eos": True}
    short = {**long, "max_tokens": 4}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json={**long, "stream": True}) as stream:
            # Keep the line iterator: dropping it closes the connection (httpcore closes a
            # stream whose iteration stops early), and the server would abort the request.
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")  # decoding now
            busy = client.post("/v1/completions", json=short)
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["type"] == "rate_limit_error"
            closed = time.monotonic()
        # Leaving the block closed the connection: the engine drops that sequence.
        while (answer := client.post("/v1/completions", json=short)).status_code == 429:
            assert time.monotonic() - closed < 5, "the closed stream kept the engine busy"
            time.sleep(0.05)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4


def test_queue_full_is_raised_before_any_work(gguf_export, tokenizer):
    async def scenario():
        engine = LlamaCppEngine(gguf_export[1].gguf, tokenizer, n_ctx=1024, slots=1, max_waiting=1)
        await engine.start()
        long = SamplingParams(max_tokens=900, temperature=0.0, ignore_eos=True)
        try:
            running = engine.generate(GenerationRequest("a", prompt_ids(tokenizer), long))
            await running.__anext__()  # admitted and decoding
            waiting = engine.generate(GenerationRequest("b", prompt_ids(tokenizer), long))
            with pytest.raises(QueueFullError):
                engine.generate(GenerationRequest("c", prompt_ids(tokenizer), long))
            assert (engine.stats().running, engine.stats().waiting) == (1, 1)
            await waiting.aclose()
            await running.aclose()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_requests_decode_together_and_each_gets_its_own_answer(gguf_export, tokenizer):
    """Eight requests at once in eight slots, prompts read in 16-token chunks between
    decode steps: each greedy answer is what llama.cpp gives that prompt alone, a
    seeded one is the same with or without company, and one closed early frees its
    slot without disturbing the others."""
    gguf = gguf_export[1].gguf
    texts = [PROMPT * (1 + i % 3) + f" number {i}" for i in range(7)]
    prompts = [prompt_ids(tokenizer, text) for text in texts]
    greedy = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    seeded = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, seed=11)

    async def scenario():
        engine = LlamaCppEngine(gguf, tokenizer, n_ctx=256, slots=8, batch_tokens=16)
        await engine.start()
        busiest = 0

        async def watch():
            nonlocal busiest
            while True:
                busiest = max(busiest, engine.stats().running)
                await asyncio.sleep(0.001)

        async def closed_early():
            stream = engine.generate(GenerationRequest("gone", prompts[0], greedy))
            await stream.__anext__()
            await stream.aclose()

        try:
            alone = await run_engine(engine, prompts[1], seeded)
            watcher = asyncio.create_task(watch())
            together = await asyncio.gather(
                *(run_engine(engine, ids, greedy) for ids in prompts),
                run_engine(engine, prompts[1], seeded),
                closed_early(),
            )
            watcher.cancel()
            # The last chunk reaches the client just before the worker frees its slot.
            deadline = time.monotonic() + 5
            while engine.stats().running and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return alone, together, busiest, engine.stats()
        finally:
            await engine.stop()

    alone, together, busiest, after = asyncio.run(scenario())
    llm = open_gguf(gguf, 256, 1)
    try:
        expected = [raw_greedy(llm, ids, 20) for ids in prompts]
    finally:
        llm.close()
    assert [tokens for tokens, _, _ in together[: len(prompts)]] == expected
    assert together[len(prompts)][0] == alone[0]  # the seed decides, not the batch-mates
    assert busiest >= 4, f"at most {busiest} sequences decoded together"
    assert (after.running, after.waiting) == (0, 0)


def test_a_prompt_longer_than_a_slot_fails_alone(gguf_export, tokenizer):
    greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)

    async def scenario():
        engine = LlamaCppEngine(gguf_export[1].gguf, tokenizer, n_ctx=256, slots=2)
        await engine.start()
        try:
            too_long = prompt_ids(tokenizer, PROMPT * 40)
            return await asyncio.gather(
                run_engine(engine, too_long, greedy),
                run_engine(engine, prompt_ids(tokenizer), greedy),
            ), engine.max_context
        finally:
            await engine.stop()

    (failed, served), context = asyncio.run(scenario())
    assert failed[2].finish_reason == "error" and f"the context is {context}" in failed[2].error
    assert served[2].finish_reason == "length" and len(served[0]) == 8


def test_a_slot_keeps_its_cache_for_the_next_turn(gguf_export, tokenizer):
    from forgeml.serve.engine.llama_cpp_slots import Feed, SlotContext

    slots = SlotContext(gguf_export[1].gguf, slots=4, slot_context=256)
    try:
        first, other = prompt_ids(tokenizer), prompt_ids(tokenizer, "Assignment statements")
        slot, keep = slots.claim(first, free=range(4))
        assert keep == 0
        slots.decode([Feed(slot, first, 0, logits=True)])
        busy_elsewhere, _ = slots.claim(other, free=[s for s in (3, 2, 1, 0) if s != slot])
        slots.decode([Feed(busy_elsewhere, other, 0, logits=True)])
        # Nothing to reuse: the lowest free slots, so busy slots sit side by side.
        assert (slot, busy_elsewhere) == (0, 1)
        # The next turn goes to the slot holding its beginning, whichever is free.
        again, kept = slots.claim(first + other[1:], free=range(4))
        assert (again, kept) == (slot, len(first))
        with pytest.raises(RuntimeError, match="cache differs"):
            slots.decode([Feed(again, other, 0, logits=True)])
    finally:
        slots.close()


def test_a_batch_out_of_slot_order_gives_each_feed_its_own_row(gguf_export, tokenizer):
    """decode() lays a batch out in slot order (one llama.cpp pass, not one per break in
    the sequence ids) and hands the logits rows back in the order the feeds came."""
    from forgeml.serve.engine.llama_cpp_slots import Feed, SlotContext

    texts = ["Assignment statements", "The for statement", "Comparisons", "Lambdas"]
    prompts = [prompt_ids(tokenizer, text) for text in texts]
    slots = SlotContext(gguf_export[1].gguf, slots=4, slot_context=256)
    try:
        alone = []
        for slot, prompt in enumerate(prompts):
            alone.append(slots.decode([Feed(slot, prompt, 0, logits=True)])[0].copy())
            slots.truncate(slot, 0)
        order = [2, 0, 3, 1]  # slots in the batch: none where its id says
        feeds = [Feed(slot, prompts[slot], 0, logits=slot != 3) for slot in order]
        rows = slots.decode(feeds)
        assert rows.shape[0] == 3
        for row, slot in zip(rows, [s for s in order if s != 3], strict=True):
            np.testing.assert_allclose(row, alone[slot], atol=1e-4)
    finally:
        slots.close()


def test_a_stopped_engine_starts_again(gguf_export, tokenizer):
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)

    async def scenario():
        engine = LlamaCppEngine(gguf_export[1].gguf, tokenizer, n_ctx=256, slots=2)
        answers = []
        for _ in range(2):
            await engine.start()
            try:
                answers.append(await run_engine(engine, prompt_ids(tokenizer), greedy))
            finally:
                await engine.stop()
        return answers

    first, second = asyncio.run(scenario())
    assert first[0] == second[0] and len(first[0]) == 6
