"""Serving speed: the HTTP server's batching engine vs transformers' `generate`, same run.

    python benchmarks/serve.py [--size mini] [--new-tokens 32] [--threads N] [--repeat 2]

Builds an untrained model of the given size (`mini` is FACTS.md's 10.3M-parameter
model), registers it in a temporary workspace and measures, on 32-token prompts cut
from Python's docs, every completion exactly `--new-tokens` long (EOS ignored):

- baseline: `model.generate` one request at a time, and one static batch of 32;
- engine: the transformers engine called directly at concurrency 1, 8, 32, with and
  without a JSON-schema guide (the cost of constrained decoding);
- http: the real server (uvicorn on 127.0.0.1, a separate process) through streaming
  /v1/completions at concurrency 1, 8, 32: output tokens/s, p50/p95 latency and
  time to first token; with the engine in its own process (the default) and, for
  comparison, as a thread of the server's process (`engine_process: false`);
- llama.cpp (when llama-cpp-python is installed; `--no-llama-cpp` skips it): the model
  exported to an f16 GGUF, decoded one request at a time by llama-cpp-python itself
  (the baseline), by the llama.cpp engine called directly, and by the same server
  through that engine; the overhead of each over the baseline is printed last.

Every row uses the same number of torch threads (default: the server's, all cores
but one). The machine may be shared, so the whole set runs `--repeat` times, round
after round, and each row shows its best round.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import pydoc_data.topics
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from transformers import AutoTokenizer

from forgeml.core.context import record_artifact
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, build_model, load_model
from forgeml.models.tokenizer import train_tokenizer
from forgeml.serve.auth import create_key
from forgeml.serve.constrained.guide import OutputGuide, OutputSpec
from forgeml.serve.constrained.json_schema import json_grammar
from forgeml.serve.constrained.vocabulary import GuideVocabulary
from forgeml.serve.engine.base import GenerationRequest, SamplingParams
from forgeml.serve.engine.transformers import TransformersEngine
from forgeml.serve.settings import ServeSettings

MODEL = "bench"
GGUF_MODEL = "bench-gguf"
RAW_LLAMA_CPP = "llama-cpp-python generate, one at a time"
PROMPT_TOKENS = 32
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["title", "count", "ok"],
}
SERVER = """
import sys, uvicorn
from forgeml.core.workspace import Workspace
from forgeml.serve import ServeSettings, create_app
settings = ServeSettings(torch_threads=int(sys.argv[3]), engine_process=sys.argv[4] == "process")
app = create_app(Workspace.open(sys.argv[1]), sys.argv[5:], settings)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def make_model(root: Path, size: str) -> tuple[Workspace, Path]:
    workspace = Workspace.init(root)
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=8192)
    model = build_model(build_config(size, vocab_size=len(tokenizer)), seed=0)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, MODEL, artifact)
    return workspace, workspace.root / artifact.path


def prompts(tokenizer, count: int) -> list[list[int]]:
    texts = list(pydoc_data.topics.topics.values())
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return [ids[i % len(ids)][(i // len(ids)) * 7 :][:PROMPT_TOKENS] for i in range(count)]


def row(name: str, tokens: int, wall: float, latencies=(), ttfts=()) -> dict:
    def pct(values, q):
        return (
            statistics.quantiles(values, n=100)[q - 1]
            if len(values) > 1
            else (values[0] if values else None)
        )

    return {
        "setup": name,
        "tokens/s": tokens / wall,
        "p50 latency": pct(list(latencies), 50),
        "p95 latency": pct(list(latencies), 95),
        "p50 TTFT": pct(list(ttfts), 50),
        "p95 TTFT": pct(list(ttfts), 95),
    }


def baselines(model, prompt_ids: list[list[int]], new_tokens: int) -> list[dict]:
    rows = []
    with torch.inference_mode():
        kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
        model.generate(torch.tensor([prompt_ids[0]]), **kwargs)  # warm up
        latencies = []
        start = time.perf_counter()
        for ids in prompt_ids[:8]:
            began = time.perf_counter()
            model.generate(torch.tensor([ids]), **kwargs)
            latencies.append(time.perf_counter() - began)
        rows.append(
            row("generate, one at a time", 8 * new_tokens, time.perf_counter() - start, latencies)
        )
        batch = torch.tensor(prompt_ids[:32])
        start = time.perf_counter()
        model.generate(batch, attention_mask=torch.ones_like(batch), **kwargs)
        wall = time.perf_counter() - start
        rows.append(row("generate, static batch of 32", 32 * new_tokens, wall, [wall] * 32))
    return rows


async def measure(name: str, concurrency: int, total: int, one_request) -> dict:
    """Run `total` requests, `concurrency` at a time; `one_request(i)` -> (tokens, latency, ttft)."""
    pending = list(range(total))
    results: list[tuple[int, float, float]] = []

    async def worker() -> None:
        while pending:
            results.append(await one_request(pending.pop()))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    tokens = sum(r[0] for r in results)
    return row(name, tokens, wall, [r[1] for r in results], [r[2] for r in results])


async def engine_rows(model, tokenizer, prompt_ids, new_tokens: int) -> list[dict]:
    engine = TransformersEngine(model, tokenizer, max_batch_size=32)
    vocabulary = GuideVocabulary(tokenizer)
    grammar = json_grammar(SCHEMA, "schema")
    await engine.start()

    def requester(guided: bool):
        async def one_request(index: int) -> tuple[int, float, float]:
            began, first, tokens = time.perf_counter(), None, 0
            sampling = SamplingParams(
                max_tokens=new_tokens, temperature=1.0, seed=index, ignore_eos=not guided
            )
            guide = (
                OutputGuide(vocabulary, OutputSpec(grammar=grammar), new_tokens) if guided else None
            )
            prompt = prompt_ids[index % len(prompt_ids)]
            async for chunk in engine.generate(
                GenerationRequest(str(index), prompt, sampling, guide)
            ):
                first = first or time.perf_counter()
                tokens += len(chunk.token_ids)
            return tokens, time.perf_counter() - began, first - began

        return one_request

    rows = []
    try:
        for concurrency, guided in [(1, False), (8, False), (32, False), (8, True), (32, True)]:
            name = f"engine, concurrency {concurrency}" + (", JSON schema" if guided else "")
            total = max(8, 2 * concurrency)
            rows.append(await measure(name, concurrency, total, requester(guided)))
    finally:
        await engine.stop()
    return rows


async def http_rows(
    url: str,
    key: str,
    tokenizer,
    prompt_ids,
    new_tokens: int,
    model: str = MODEL,
    label: str = "HTTP server",
    levels: tuple[int, ...] = (1, 8, 32),
) -> list[dict]:
    texts = [tokenizer.decode(ids) for ids in prompt_ids]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:

        async def one_request(index: int) -> tuple[int, float, float]:
            body = {
                "model": model,
                "prompt": texts[index % len(texts)],
                "max_tokens": new_tokens,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            began, first, tail = time.perf_counter(), None, b""
            async with client.stream("POST", "/v1/completions", json=body) as response:
                # Parse nothing per token: the load generator shares the 2 cores.
                async for data in response.aiter_raw():
                    first = first or time.perf_counter()
                    tail = (tail + data)[-2048:]
            last_event = tail[tail.rindex(b"data: {") + len(b"data: ") :].split(b"\n", 1)[0]
            tokens = json.loads(last_event)["usage"]["completion_tokens"]
            return tokens, time.perf_counter() - began, first - began

        await measure("warm-up", 1, 1, one_request)
        return [
            await measure(f"{label}, concurrency {c}", c, max(8, 2 * c), one_request)
            for c in levels
        ]


def export_gguf(workspace: Workspace) -> Path:
    """The benchmark model as an f16 GGUF export named GGUF_MODEL (llama.cpp serves it)."""
    from forgeml.core.runs import run_stage

    model = workspace.registry.resolve(MODEL)
    result = run_stage(
        workspace, "export.model", {"format": "gguf", "name": GGUF_MODEL}, {"model": model}
    )
    return workspace.root / result.outputs["export"].path / "model-f16.gguf"


def llama_cpp_rows(gguf: Path, tokenizer, prompt_ids, new_tokens: int, threads: int) -> list[dict]:
    """llama-cpp-python's own greedy loop, then the llama.cpp engine, one request at a time."""
    from forgeml.serve.engine.llama_cpp import LlamaCppEngine, open_gguf

    llm = open_gguf(gguf, 0, threads)
    latencies, ttfts = [], []
    start = time.perf_counter()
    for ids in prompt_ids[:8]:
        began, first = time.perf_counter(), None
        for count, _ in enumerate(llm.generate(ids, temp=0.0, top_k=1), start=1):
            first = first or time.perf_counter()
            if count == new_tokens:
                break
        latencies.append(time.perf_counter() - began)
        ttfts.append(first - began)
    rows = [row(RAW_LLAMA_CPP, 8 * new_tokens, time.perf_counter() - start, latencies, ttfts)]
    llm.close()

    async def through_engine() -> dict:
        engine = LlamaCppEngine(gguf, tokenizer, threads=threads)
        await engine.start()

        async def one_request(index: int) -> tuple[int, float, float]:
            began, first, tokens = time.perf_counter(), None, 0
            sampling = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
            request = GenerationRequest(str(index), prompt_ids[index], sampling)
            async for chunk in engine.generate(request):
                first = first or time.perf_counter()
                tokens += len(chunk.token_ids)
            return tokens, time.perf_counter() - began, first - began

        try:
            return await measure("llama.cpp engine, concurrency 1", 1, 8, one_request)
        finally:
            await engine.stop()

    return [*rows, asyncio.run(through_engine())]


def print_llama_cpp_overhead(best: dict[str, dict]) -> None:
    raw = best.get(RAW_LLAMA_CPP)
    if raw is None:
        return
    print(f"\nllama.cpp, {raw['tokens/s']:.0f} tokens/s from llama-cpp-python itself; overhead:")
    for setup in (
        "llama.cpp engine, concurrency 1",
        "HTTP server, llama.cpp engine, concurrency 1",
    ):
        if setup in best:
            overhead = raw["tokens/s"] / best[setup]["tokens/s"] - 1
            print(f"  {setup:46} {overhead:+7.1%} time per token")


def start_server(
    workspace: Workspace, threads: int, models: list[str], engine: str = "process"
) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            str(workspace.root),
            str(port),
            str(threads),
            engine,
            *models,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.25)


def print_table(rows: list[dict], baseline: float) -> None:
    header = f"{'setup':46} {'tok/s':>8} {'x seq':>6} {'p50 lat':>8} {'p95 lat':>8} {'p50 TTFT':>9} {'p95 TTFT':>9}"
    print(header)
    print("-" * len(header))

    def seconds(value):
        return f"{value:8.3f}" if value is not None else f"{'':>8}"

    for r in rows:
        print(
            f"{r['setup']:46} {r['tokens/s']:8.0f} {r['tokens/s'] / baseline:6.1f} "
            f"{seconds(r['p50 latency'])} {seconds(r['p95 latency'])} "
            f"{seconds(r['p50 TTFT'])} {seconds(r['p95 TTFT'])} "
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=ServeSettings().threads())
    parser.add_argument("--repeat", type=int, default=2, help="Rounds; each row keeps its best.")
    parser.add_argument(
        "--llama-cpp",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec("llama_cpp") is not None,
        help="Also measure a GGUF export on llama.cpp (default: when llama-cpp-python is there).",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        workspace, model_dir = make_model(Path(temp) / "ws", args.size)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = load_model(model_dir).eval()
        prompt_ids = prompts(tokenizer, 64)
        print(
            f"model {args.size}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
            f"{PROMPT_TOKENS}-token prompts, {args.new_tokens} new tokens, {args.threads} torch "
            f"thread(s), {os.cpu_count()} cores\n"
        )
        _, key = create_key(workspace, "bench", "inference")
        gguf = export_gguf(workspace) if args.llama_cpp else None
        served = [MODEL, GGUF_MODEL] if gguf else [MODEL]
        process, url = start_server(workspace, args.threads, served)
        # The same server with the engine as a thread of its process (engine_process off).
        threaded, threaded_url = start_server(workspace, args.threads, [MODEL], "thread")
        best: dict[str, dict] = {}
        try:
            for _ in range(args.repeat):  # rounds interleave setups, so load drifts hit all
                rounds = baselines(model, prompt_ids, args.new_tokens)
                rounds += asyncio.run(engine_rows(model, tokenizer, prompt_ids, args.new_tokens))
                rounds += asyncio.run(http_rows(url, key, tokenizer, prompt_ids, args.new_tokens))
                rounds += asyncio.run(
                    http_rows(
                        threaded_url,
                        key,
                        tokenizer,
                        prompt_ids,
                        args.new_tokens,
                        label="HTTP server (engine thread)",
                    )
                )
                if gguf is not None:
                    rounds += llama_cpp_rows(
                        gguf, tokenizer, prompt_ids, args.new_tokens, args.threads
                    )
                    rounds += asyncio.run(
                        http_rows(
                            url,
                            key,
                            tokenizer,
                            prompt_ids,
                            args.new_tokens,
                            model=GGUF_MODEL,
                            label="HTTP server, llama.cpp engine",
                            levels=(1,),
                        )
                    )
                for result in rounds:
                    kept = best.get(result["setup"])
                    if kept is None or result["tokens/s"] > kept["tokens/s"]:
                        best[result["setup"]] = result
        finally:
            for server in (process, threaded):
                server.terminate()
                server.wait(timeout=60)
        workspace.close()
    rows = list(best.values())
    print_table(rows, rows[0]["tokens/s"])
    print_llama_cpp_overhead(best)


if __name__ == "__main__":
    main()
