"""forgeml's server next to llama.cpp's own `llama-server`, same model, same workload.

    scripts/build_llama_server.sh        # once: llama-server from the same llama.cpp source
    python benchmarks/serve_peers.py [--sizes tiny,small] [--requests 320] [--repeat 1]

For each size, builds an untrained model (the quickstart's `tiny`; `small`, 46M
parameters, where compute rather than per-request overhead dominates), exports it to an
f16 GGUF with the CLI, and serves it, one server after another:

- `llama-server` (built from the llama-cpp-python sdist's llama.cpp, the wheel's flags)
  on the GGUF: as many slots as clients, same threads, f32 KV cache, no flash attention
  (as forgeml's engine), `--no-warmup`;
- `forgeml serve` on the same GGUF: the llama.cpp engine (the default for a GGUF);
- `forgeml serve` on the model itself: the transformers engine (its own process).

Every cell: streaming /v1/completions, prompts of ~32 tokens cut from Python's docs,
exactly `--new-tokens` new tokens each (`ignore_eos`), greedy, at concurrency 1 and 32;
output tokens/s over the cell's wall time, p50/p95 request latency, p50 time to first
token, and the server's resident memory (its process tree) idle and at peak. Before each
cell the machine must be quiet (CPU under 15% for a second, or 60 s pass), and servers
run one at a time. Ratios are against `llama-server` in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from edge_bundle import MODEL, ROOT, forgeml, free_port, make_model, prompts, start, stop

CONCURRENCY = (1, 32)
SLOT_CONTEXT = 1024  # tokens per sequence, for every server
SERVERS = ("llama-server", "forgeml llama.cpp", "forgeml llama.cpp lean", "forgeml transformers")
LEAN_ENV = {"FORGEML_SERVING_LANGUAGE_SIGNAL": "false"}


def wait_for_quiet(limit_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + limit_seconds
    while psutil.cpu_percent(interval=1.0) > 15 and time.monotonic() < deadline:
        pass


class MemoryWatch:
    """Peak resident memory of a process and its children, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def resident(self) -> int:
        total = 0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.resident())

    def __enter__(self) -> MemoryWatch:
        self.peak = self.resident()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def one_request(client: httpx.AsyncClient, model: str, text: str, new_tokens: int):
    """(latency, time to first token, completion tokens) of one streamed completion.

    llama-server's HTTP library closes a kept-alive connection after a few requests; a
    request sent on it just then gets no response at all, and is sent again."""
    for attempt in range(3):
        try:
            return await _stream_once(client, model, text, new_tokens)
        except httpx.RemoteProtocolError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _stream_once(client: httpx.AsyncClient, model: str, text: str, new_tokens: int):
    body = {
        "model": model,
        "prompt": text,
        "max_tokens": new_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            raise SystemExit(f"{model}: HTTP {reply.status_code}: {await reply.aread()!r}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and any(c.get("text") for c in event.get("choices", [])):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return time.perf_counter() - started, first or 0.0, tokens


async def run_cell(port: int, model: str, key: str | None, texts, concurrency, new_tokens):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600, limits=limits
    ) as client:
        await one_request(client, model, texts[0], new_tokens)  # warm-up
        gate = asyncio.Semaphore(concurrency)

        async def gated(text):
            async with gate:
                return await one_request(client, model, text, new_tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(gated(text) for text in texts))
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    if tokens != new_tokens * len(texts):
        raise SystemExit(f"{model}: {tokens} tokens, expected {new_tokens * len(texts)}")
    return {
        "tokens/s": tokens / wall,
        "p50 s": statistics.median(latencies),
        "p95 s": latencies[int(0.95 * (len(latencies) - 1))],
        "ttft s": statistics.median(r[1] for r in results),
    }


def server_commands(args, workspace: Path, gguf: Path, threads: int, slots: int):
    llama_server = [args.llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", "PORT"]
    llama_server += ["-t", str(threads), "-tb", str(threads), "-a", MODEL, "--no-warmup"]
    llama_server += ["-np", str(slots), "-c", str(SLOT_CONTEXT * slots), "-fa", "off"]
    llama_server += ["--cache-type-k", "f32", "--cache-type-v", "f32"]
    serve = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "serve"]
    serve += ["--port", "PORT", "--threads", str(threads), "--max-batch-size", str(slots)]
    serve += ["--job-workers", "0"]
    gguf_serve = [*serve[:6], "peers-gguf", *serve[6:]]
    # "lean": the llama.cpp engine without the language identifier of the drift
    # signals (mapped: a few MB), as an edge server would run (serving.language_signal: false).
    return {
        "llama-server": (llama_server, MODEL, "/v1/models", {}),
        "forgeml llama.cpp": (gguf_serve, "peers-gguf", "/health", {}),
        "forgeml llama.cpp lean": (gguf_serve, "peers-gguf", "/health", LEAN_ENV),
        "forgeml transformers": ([*serve[:6], MODEL, *serve[6:]], MODEL, "/health", {}),
    }


def measure_size(args, size: str, scratch: Path) -> dict:
    workspace = scratch / size
    tokenizer = make_model(workspace, size)
    forgeml(workspace, "export", MODEL, "--format", "gguf", "--name", "peers-gguf")
    gguf = next((workspace / "artifacts").glob("export/*/model-f16.gguf"))
    key = json.loads(forgeml(workspace, "--json", "keys", "create", "--name", "bench"))["key"]
    texts = prompts(tokenizer, args.requests)
    env = os.environ | {"FORGEML_SERVING_LLAMA_CPP_N_CTX": str(SLOT_CONTEXT)}
    rows: dict[tuple[str, int], dict] = {}
    for _ in range(args.repeat):
        for concurrency in args.concurrency:
            cell_texts = texts if concurrency > 1 else texts[: args.requests_single]
            commands = server_commands(args, workspace, gguf, args.threads, concurrency)
            for name in args.servers:
                command, model, ready, extra_env = commands[name]
                port = free_port()
                command = [str(port) if part == "PORT" else part for part in command]
                log = scratch / f"{size}-{name.replace(' ', '-')}-{port}.log"
                process = start(command, port, log, env=env | extra_env, ready=ready)
                try:
                    wait_for_quiet()
                    with MemoryWatch(process.pid) as memory:
                        idle = memory.resident()
                        result = asyncio.run(
                            run_cell(
                                port,
                                model,
                                None if name == "llama-server" else key,
                                cell_texts,
                                concurrency,
                                args.new_tokens,
                            )
                        )
                    result |= {"idle MB": idle / 2**20, "peak MB": memory.peak / 2**20}
                except httpx.HTTPError as error:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise SystemExit(
                        f"{name} at concurrency {concurrency}: {error}\n{tail}"
                    ) from error
                finally:
                    stop(process)
                best = rows.get((name, concurrency))
                if best is None or result["tokens/s"] > best["tokens/s"]:
                    rows[(name, concurrency)] = result
    return {"gguf bytes": gguf.stat().st_size, "rows": rows}


def print_table(size: str, measured: dict, args) -> None:
    rows = measured["rows"]
    print(
        f"\n{size}: f16 GGUF {measured['gguf bytes'] / 2**20:.1f} MiB, {args.threads} threads, "
        f"{args.new_tokens} new tokens per request, best of {args.repeat}"
    )
    header = (
        f"{'server':22} {'conc':>4} {'tok/s':>7} {'x llama-server':>14} {'p50 s':>6} "
        f"{'p95 s':>6} {'ttft s':>6} {'idle MB':>8} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for concurrency in args.concurrency:
        base = rows[("llama-server", concurrency)]["tokens/s"]
        for name in args.servers:
            row = rows[(name, concurrency)]
            print(
                f"{name:22} {concurrency:4} {row['tokens/s']:7.0f} {row['tokens/s'] / base:14.2f} "
                f"{row['p50 s']:6.2f} {row['p95 s']:6.2f} {row['ttft s']:6.3f} "
                f"{row['idle MB']:8.0f} {row['peak MB']:8.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--requests", type=int, default=320, help="per cell at concurrency 32")
    parser.add_argument("--requests-single", type=int, default=64, help="at concurrency 1")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="a subset of: " + ", ".join(SERVERS)
    )
    parser.add_argument(
        "--concurrency", default=",".join(map(str, CONCURRENCY)), help="client counts, e.g. 32"
    )
    parser.add_argument("--llama-server", default=None, help="default: build/find it")
    args = parser.parse_args()
    args.servers = [name for name in SERVERS if name in args.servers.split(",")]
    if "llama-server" not in args.servers:
        parser.error("--servers must include llama-server (the ratios' baseline)")
    args.concurrency = tuple(int(count) for count in args.concurrency.split(","))
    if args.llama_server is None:
        build = [str(ROOT / "scripts/build_llama_server.sh")]
        output = subprocess.run(build, check=True, capture_output=True, text=True).stdout
        args.llama_server = output.strip().splitlines()[-1]
    scratch = Path(tempfile.mkdtemp(prefix="forgeml-serve-peers-"))
    try:
        results = {size: measure_size(args, size, scratch) for size in args.sizes.split(",")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for size, measured in results.items():
        print_table(size, measured, args)


if __name__ == "__main__":
    main()
