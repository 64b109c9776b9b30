"""The vLLM engine, against a real HTTP upstream that speaks vLLM's completions API.

No GPU here, so the upstream is a forgeml server (the session's tiny chat model on the
transformers engine): it takes token-id prompts, `return_token_ids` and
`structured_outputs` as vLLM does. `vllm serve` itself is stood in for by a small
script, to check how the child process is started, waited for and stopped.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys

import httpx
import jsonschema
import llguidance
import llguidance.hf
import pytest
import torch
from serving_fixtures import MODEL_NAME, ServerThread

from forgeml.core.errors import ForgeError, InputError
from forgeml.models import chat_template as ct
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.constrained.guide import OutputGuide, OutputSpec
from forgeml.serve.constrained.json_schema import json_grammar
from forgeml.serve.constrained.tools import tool_call_grammar
from forgeml.serve.engine.base import GenerationRequest, QueueFullError, SamplingParams
from forgeml.serve.engine.vllm_grammar import completion_grammar
from forgeml.serve.engine.vllm_proxy import VllmProxyEngine
from forgeml.serve.served_models import ServedModel, make_engine

PROMPT = "The for statement is used to iterate over the elements of a sequence"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": SCHEMA},
}
FAKE_VLLM = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
assert args[0] == "serve"
if "--fail" in args:
    sys.exit(print("RuntimeError: CUDA out of memory (pretend)", flush=True) or 1)
if "--hang" in args:
    time.sleep(600)
port = int(args[args.index("--port") + 1])
name = args[args.index("--served-model-name") + 1]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": {}, "/v1/models": {"data": [{"id": name, "max_model_len": 321}]}}
        self.send_response(200 if self.path in body else 404)
        self.end_headers()
        self.wfile.write(json.dumps(body.get(self.path)).encode())

    def log_message(self, *args):
        pass


print("fake vLLM serving", args[1], flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def proxy(served, model_dir, **options) -> VllmProxyEngine:
    return VllmProxyEngine(
        model_dir, url=served.url, api_key=served.inference_key, served_name=MODEL_NAME, **options
    )


def upstream_completion(served, ids, **body):
    """The upstream's own stream for a token-id prompt: token ids, text, finish reason."""
    request = {"model": MODEL_NAME, "prompt": ids, "stream": True, "return_token_ids": True}
    headers = {"Authorization": f"Bearer {served.inference_key}"}
    tokens, text, finish, prompt_ids = [], "", None, None
    with httpx.stream(
        "POST", served.url + "/v1/completions", json={**request, **body}, headers=headers
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            (choice,) = json.loads(line[len("data: ") :])["choices"]
            prompt_ids = prompt_ids or choice.get("prompt_token_ids")
            tokens += choice["token_ids"]
            text += choice["text"]
            finish = choice["finish_reason"] or finish
    return tokens, text, finish, prompt_ids


async def through(engine, ids, sampling, guide=None):
    chunks = [c async for c in engine.generate(GenerationRequest("t", ids, sampling, guide))]
    return [t for c in chunks for t in c.token_ids], "".join(c.text for c in chunks), chunks[-1]


def test_proxy_streams_the_upstreams_greedy_tokens(served, model_dir, tokenizer):
    ids = [tokenizer.bos_token_id, *tokenizer(PROMPT, add_special_tokens=False)["input_ids"]]
    expected, text, finish, echoed = upstream_completion(
        served, ids, max_tokens=16, temperature=0, ignore_eos=True
    )
    assert echoed == ids and finish == "length" and len(expected) == 16
    stop = text[len(text) // 2 :][:3]

    async def scenario():
        engine = proxy(served, model_dir)
        await engine.start()
        try:
            greedy = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
            stopped = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, stop=(stop,))
            return (
                engine.max_context,
                await through(engine, ids, greedy),
                await through(engine, ids, stopped),
            )
        finally:
            await engine.stop()

    context, (tokens, proxied, last), (_, cut, cut_last) = asyncio.run(scenario())
    assert tokens == expected and proxied == text
    assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == (
        "length",
        16,
        len(ids),
    )
    assert cut == text[: text.index(stop)] and cut_last.finish_reason == "stop"
    assert context == 1024  # what the upstream's /v1/models says


def test_in_flight_limit_and_closing_a_stream_gives_its_slot_back(served, model_dir, tokenizer):
    ids = [tokenizer.bos_token_id, *tokenizer(PROMPT, add_special_tokens=False)["input_ids"]]
    long = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)

    async def scenario():
        engine = proxy(served, model_dir, max_in_flight=1)
        await engine.start()
        try:
            never_read = engine.generate(GenerationRequest("a", ids, long))
            await never_read.aclose()  # closed before it ever sent anything
            running = engine.generate(GenerationRequest("b", ids, long))
            first = await running.__anext__()
            with pytest.raises(QueueFullError):
                engine.generate(GenerationRequest("c", ids, long))
            assert engine.stats().running == 1
            await running.aclose()  # the HTTP stream closes; the upstream aborts
            assert engine.stats().running == 0
            short = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
            return first, await through(engine, ids, short)
        finally:
            await engine.stop()

    first, (tokens, _, last) = asyncio.run(scenario())
    assert first.token_ids and first.finish_reason is None
    assert len(tokens) == 3 and last.finish_reason == "length"


def test_chat_through_the_proxy_keeps_json_mode_and_tool_calls(served, model_dir, tokenizer):
    from openai import BadRequestError, OpenAI

    served_model = ServedModel(
        id="tiny-via-vllm",
        artifact_id=None,
        artifact_ref="vllm-proxy",
        sha256="",
        tokenizer=tokenizer,
        engine=proxy(served, model_dir),
    )
    settings = ServeSettings(key_cache_seconds=0.0, torch_threads=1, max_on_demand_models=0)
    app = create_app(served.workspace, [served_model], settings)
    ask = {"model": "tiny-via-vllm", "max_tokens": 60, "temperature": 0.8}
    with (
        ServerThread(app) as url,
        OpenAI(base_url=url + "/v1", api_key=served.inference_key, max_retries=0) as client,
    ):
        answer = client.chat.completions.create(
            **ask,
            messages=[{"role": "user", "content": "Weather in Paris for 3 days, as JSON"}],
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
            seed=3,
        )
        jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)
        called = client.chat.completions.create(
            **ask,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            parallel_tool_calls=False,
            seed=4,
        )
        (call,) = called.choices[0].message.tool_calls
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMA)
        with pytest.raises(BadRequestError, match="reasoning budget"):
            client.chat.completions.create(
                **ask,
                messages=[{"role": "user", "content": "Think first."}],
                reasoning_effort="high",
                extra_body={"max_reasoning_tokens": 8},
            )


def test_the_grammar_sent_to_vllm_accepts_what_the_guide_allows(served, model_dir, tokenizer):
    """Random walks under our guide are accepted by the grammar vLLM would enforce."""
    from forgeml.serve.constrained.vocabulary import GuideVocabulary

    vocabulary = GuideVocabulary(tokenizer)
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
    tools = tool_call_grammar(
        {"get_weather": SCHEMA}, vocabulary.id(ct.TOOL_CALLS), vocabulary.id(ct.ARGS)
    )
    specs = [
        OutputSpec(grammar=json_grammar(SCHEMA, "f")),
        OutputSpec(reasoning=True, grammar=json_grammar(SCHEMA, "f")),
        OutputSpec(grammar=tools, field="tool_choice"),
        OutputSpec(tool_grammar=tools),
        OutputSpec(reasoning=True),
    ]
    # A stand-in for a model: text tokens that decode to whole characters (llguidance,
    # like any grammar engine, refuses bytes that can never become valid UTF-8).
    broken = torch.tensor(["\ufffd" in text for text in vocabulary.texts])
    boosted = [vocabulary.id(ct.TOOL_CALLS), vocabulary.id(ct.END_THINK)]
    for spec in specs:
        for seed in range(3):
            generator = torch.Generator().manual_seed(seed)
            guide = OutputGuide(vocabulary, spec, 50)
            grammar = llguidance.grammar_from("grammar", completion_grammar(guide))
            matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
            for step in range(50):
                logits = torch.randn(vocabulary.size, generator=generator) * 3
                logits[broken] = float("-inf")
                if step == 4 + seed:  # switch phases part of the time
                    logits[boosted] += 50
                allowed = guide.allowed(50 - step)
                if allowed is not None:
                    logits[~torch.from_numpy(allowed)] = float("-inf")
                token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
                guide.advance(token)
                assert matcher.consume_token(token), (spec, matcher.get_error())
                if token == vocabulary.eos_id:
                    break
    # And the other way: a plain answer cannot open reasoning or call an unoffered tool.
    plain = OutputGuide(vocabulary, OutputSpec(tool_grammar=tools), 50)
    matcher = llguidance.LLMatcher(
        ll_tokenizer, llguidance.grammar_from("grammar", completion_grammar(plain))
    )
    assert not matcher.consume_token(vocabulary.id(ct.THINK))
    assert completion_grammar(OutputGuide(vocabulary, OutputSpec(), 50)) is None
    with pytest.raises(InputError, match="reasoning budget"):
        completion_grammar(
            OutputGuide(vocabulary, OutputSpec(reasoning=True, reasoning_budget=8), 50)
        )


def test_token_id_prompts_are_checked(served):
    headers = {"Authorization": f"Bearer {served.inference_key}"}
    response = httpx.post(
        served.url + "/v1/completions",
        json={"model": MODEL_NAME, "prompt": [1, 10**6], "max_tokens": 2},
        headers=headers,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


def test_vllm_needs_a_url_or_a_command(model_dir, tokenizer):
    with pytest.raises(ForgeError, match="vllm_url"):
        make_engine("m", model_dir, tokenizer, ServeSettings(engine="vllm"))


def fake_vllm(tmp_path) -> str:
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    return shlex.join([sys.executable, str(script)])


def test_vllm_command_starts_a_child_and_stops_it(model_dir, tmp_path):
    log_path = tmp_path / "serving" / "vllm.log"
    engine = VllmProxyEngine(
        model_dir, command=fake_vllm(tmp_path), served_name="tiny", log_path=log_path
    )

    async def scenario():
        await engine.start()
        child = engine.process._process
        assert child.poll() is None
        context = engine.max_context
        await engine.stop()
        return child, context

    child, context = asyncio.run(scenario())
    assert child.poll() is not None  # stopped with the engine
    assert context == 321
    log = log_path.read_text()
    assert f"serve {model_dir} --host 127.0.0.1 --port" in log and "--served-model-name tiny" in log
    assert f"fake vLLM serving {model_dir}" in log


@pytest.mark.parametrize("trouble", ["--fail", "--hang"])
def test_a_vllm_that_does_not_come_up_fails_clearly(model_dir, tmp_path, trouble):
    log_path = tmp_path / "vllm.log"
    engine = VllmProxyEngine(
        model_dir,
        command=fake_vllm(tmp_path),
        args=[trouble],
        log_path=log_path,
        start_timeout=1,
    )
    with pytest.raises(ForgeError) as error:
        asyncio.run(engine.start())
    message = str(error.value)
    assert "fake_vllm.py serve" in message and str(log_path) in error.value.hint
    if trouble == "--fail":
        assert "exited with status 1" in message and "CUDA out of memory (pretend)" in message
    else:
        assert "was not ready after 1 s" in message
    assert engine.process._process is None  # nothing left running


def test_images_for_the_vllm_engine_are_refused_with_what_to_do(tmp_path):
    """The vLLM engine forwards token ids, so a picture would be lost on the way: a chat
    request with an image is a 400 that says so, before anything reaches vLLM (here a
    stand-in child: `vllm serve` needs a GPU)."""
    from fastapi.testclient import TestClient
    from vision_fixtures import png_url, register_tiny_vision_model

    from forgeml.core.workspace import Workspace
    from forgeml.serve.auth import create_key

    workspace = Workspace.init(tmp_path / "ws")
    register_tiny_vision_model(workspace, "vl")
    _, key = create_key(workspace, "vl", "inference")
    settings = ServeSettings(engine="vllm", vllm_command=fake_vllm(tmp_path))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in the picture?"},
        {"type": "image_url", "image_url": {"url": png_url(32, 32, 0)}},
    ]}]  # fmt: skip
    try:
        with TestClient(create_app(workspace, ["vl"], settings)) as client:
            answered = client.post("/v1/chat/completions",
                                   headers={"Authorization": f"Bearer {key}"},
                                   json={"model": "vl", "messages": messages})  # fmt: skip
    finally:
        workspace.close()
    assert answered.status_code == 400, answered.text
    error = answered.json()["error"]
    assert "served by the vLLM engine, which takes text only" in error["message"]
    assert error["param"] == "messages[0].content[1]"
    assert "--engine transformers" in error["message"] + str(error.get("hint", ""))
