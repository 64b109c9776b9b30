"""The transformers engine in its own process: same tokens as in-process, guides rebuilt in
the child, aborts, a full queue, and a child that dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from forgeml.core.errors import ForgeError
from forgeml.models.sizes import load_model
from forgeml.serve.constrained.guide import OutputGuide, OutputSpec
from forgeml.serve.constrained.json_schema import json_grammar
from forgeml.serve.constrained.vocabulary import GuideVocabulary
from forgeml.serve.engine.base import GenerationRequest, QueueFullError, SamplingParams
from forgeml.serve.engine.process import ProcessEngine
from forgeml.serve.engine.transformers import TransformersEngine

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["name", "count"],
}


def prompts(tokenizer):
    texts = ["def", "The with statement is used", "Exceptions are raised when"]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


async def run_all(engine, requests):
    async def one(request):
        ids, text, last = [], "", None
        async for chunk in engine.generate(request):
            ids += chunk.token_ids
            text += chunk.text
            last = chunk
        return ids, text, last.finish_reason

    await engine.start()
    try:
        return await asyncio.gather(*(one(request) for request in requests))
    finally:
        await engine.stop()


def test_same_tokens_as_the_in_process_engine_and_guides_hold(model_dir, tokenizer):
    vocabulary = GuideVocabulary(tokenizer)
    grammar = json_grammar(SCHEMA, "schema")

    def requests():
        plain = [
            GenerationRequest(
                f"p{i}",
                ids,
                SamplingParams(max_tokens=10, temperature=0.8, seed=i, ignore_eos=True),
            )
            for i, ids in enumerate(prompts(tokenizer))
        ]
        guided = GenerationRequest(
            "g",
            prompts(tokenizer)[0],
            SamplingParams(max_tokens=60, temperature=1.0, seed=7),
            OutputGuide(vocabulary, OutputSpec(grammar=grammar), 60),
        )
        return [*plain, guided]

    in_process = asyncio.run(
        run_all(TransformersEngine(load_model(model_dir), tokenizer), requests())
    )
    engine = ProcessEngine(model_dir, threads=1)
    assert engine.max_context == load_model(model_dir).config.max_position_embeddings
    separate = asyncio.run(run_all(engine, requests()))
    assert separate == in_process
    assert all(len(ids) == 10 for ids, _, _ in separate[:3])
    guided_text = separate[3][1]
    assert set(json.loads(guided_text)) == {"name", "count"}  # the child's guide held
    assert not engine._open and engine._process is None


def test_abort_full_queue_and_a_dead_child(model_dir, tokenizer):
    prompt = prompts(tokenizer)[1]

    async def main():
        engine = ProcessEngine(model_dir, max_batch_size=1, max_waiting=1, threads=1)
        await engine.start()
        try:
            endless = SamplingParams(max_tokens=4000, temperature=1.0, seed=1, ignore_eos=True)
            first = engine.generate(GenerationRequest("a", prompt, endless))
            await first.__anext__()  # decoding
            second = engine.generate(GenerationRequest("b", prompt, endless))
            with pytest.raises(QueueFullError):
                engine.generate(GenerationRequest("c", prompt, endless))
            await second.aclose()  # aborted while waiting
            await first.aclose()  # aborted while decoding
            for _ in range(200):
                if engine.stats().running == engine.stats().waiting == 0:
                    break
                await asyncio.sleep(0.05)
            assert (engine.stats().running, engine.stats().waiting) == (0, 0)

            third = engine.generate(GenerationRequest("d", prompt, endless))
            await third.__anext__()
            os.kill(engine._process.pid, signal.SIGKILL)
            chunks = [chunk async for chunk in third]
            assert chunks[-1].finish_reason == "error" and "exited" in chunks[-1].error
            with pytest.raises(ForgeError, match="exited"):
                engine.generate(GenerationRequest("e", prompt, endless))
        finally:
            await engine.stop()

    asyncio.run(main())


def test_a_model_the_child_cannot_load_fails_start_with_the_reason(model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    engine = ProcessEngine(broken, threads=1)
    with pytest.raises(ForgeError, match="failed to start: .*broken: cannot load a causal"):
        asyncio.run(engine.start())
    assert engine._process is None
