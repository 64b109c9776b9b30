"""The edge bundle: its size per quantisation, and its server's speed next to llama.cpp's own.

    scripts/build_llama_server.sh        # once: llama-server from the same llama.cpp source
    python benchmarks/edge_bundle.py [--size mini] [--quants f16,q8_0,q4_k_m] [--repeat 2]

Builds an untrained model of the given size (`mini`: FACTS.md's 10.3M-parameter model,
whose 256-wide rows suit 4-bit k-quants) in a temporary workspace, makes one edge bundle
per quantisation with `forgeml deploy bundle --target edge`, installs the bundle's
requirements.txt into a fresh venv (llama-cpp-python from the wheel `make gguf` caches)
and, for each GGUF, measures through HTTP /v1/completions, 32-token prompts cut from
Python's docs, greedy, up to `--new-tokens` each:

- bundle: the bundle's `./serve` (llama-cpp-python's server; one request at a time);
- baseline: llama.cpp's `llama-server` built from the same llama.cpp source (the
  llama-cpp-python sdist's vendor/llama.cpp) on the same GGUF file, the same threads,
  the same f32 KV cache and, like llama-cpp-python, no flash attention (its `auto` turns
  it on, 5-12x slower on this model on CPU); 1 slot for a single stream, 8 slots
  (continuous batching) at concurrency 8;

at concurrency 1 and 8: output tokens/s (completion tokens as each server counts them,
over the wall time of the whole set). The machine may be shared, so every row runs
`--repeat` times, round after round, and shows its best round.
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc_data.topics
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from forgeml.core.context import record_artifact
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import build_config, build_model
from forgeml.models.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODEL = "edge-bench"
PROMPT_TOKENS = 32
SLOTS = 8
WHEELS = Path(os.environ.get("FORGEML_WHEEL_CACHE", Path.home() / ".cache/forgeml-wheels"))


def make_model(root: Path, size: str):
    workspace = Workspace.init(root)
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=8192)
    model = build_model(build_config(size, vocab_size=len(tokenizer)), seed=0)
    temp = workspace.store.new_temp_dir()
    model.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, MODEL, artifact)
    workspace.close()
    return tokenizer


def prompts(tokenizer, count: int) -> list[str]:
    texts = list(pydoc_data.topics.topics.values())
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    cut = [ids[i % len(ids)][(i // len(ids)) * 7 :][:PROMPT_TOKENS] for i in range(count)]
    return [tokenizer.decode(piece) for piece in cut]


def forgeml(workspace: Path, *args: str) -> str:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def bare_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return env | {"PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)}


def make_venv(venv: Path, requirements: Path) -> float:
    started = time.monotonic()
    env = bare_env(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "--find-links", str(WHEELS), "-r", str(requirements)],
        capture_output=True,
        text=True,
        env=env,
    )
    if install.returncode != 0:
        raise SystemExit(f"installing the bundle's requirements failed:\n{install.stderr}")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(
    command: list[str], port: int, log: Path, env=None, cwd=None, ready: str = "/v1/models"
) -> subprocess.Popen:
    with open(log, "wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"{command[0]} did not answer within 120 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(port: int, texts: list[str], concurrency: int, new_tokens: int) -> dict:
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=600)

    def one(text: str) -> int:
        body = {"model": MODEL, "prompt": text, "max_tokens": new_tokens, "temperature": 0}
        reply = client.post("/completions", json=body)
        reply.raise_for_status()
        return reply.json()["usage"]["completion_tokens"]

    one(texts[0])  # warm-up: first-request costs are not throughput
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        counts = list(pool.map(one, texts))
    wall = time.monotonic() - started
    client.close()
    return {"tokens/s": sum(counts) / wall, "tokens": sum(counts), "requests": len(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--quants", default="f16,q8_0,q4_k_m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16, help="per measurement")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--llama-server", default=None, help="default: build/find it")
    args = parser.parse_args()
    quants = args.quants.split(",")

    llama_server = (
        args.llama_server
        or subprocess.run(
            [str(ROOT / "scripts/build_llama_server.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    scratch = Path(tempfile.mkdtemp(prefix="forgeml-edge-bench-"))
    try:
        workspace = scratch / "ws"
        tokenizer = make_model(workspace, args.size)
        texts = prompts(tokenizer, args.requests)
        bundles, sizes = {}, {}
        for quant in quants:
            bundles[quant] = scratch / f"bundle-{quant}"
            out = forgeml(
                workspace,
                "--json",
                "deploy",
                "bundle",
                MODEL,
                "--target",
                "edge",
                "--quant",
                quant,
                "-o",
                str(bundles[quant]),
            )
            manifest = json.loads(out)
            sizes[quant] = (
                manifest["size_bytes"],
                manifest["files"][manifest["gguf"]]["size_bytes"],
                manifest["fallback_quantization"],
            )
        venv = scratch / "venv"
        venv_seconds = make_venv(venv, bundles[quants[0]] / "requirements.txt")
        env = bare_env(venv)

        best: dict[tuple[str, str, int], dict] = {}
        for _ in range(args.repeat):
            for quant in quants:
                gguf = bundles[quant] / f"model-{quant}.gguf"
                n_ctx = json.loads((bundles[quant] / "bundle.json").read_text())["serving"]["n_ctx"]
                bundle_command = ["./serve", "--port", "PORT", "--threads", str(args.threads)]
                runs = [("bundle ./serve", bundle_command, env, bundles[quant], (1, SLOTS))]
                for slots in (1, SLOTS):  # its best setting for each concurrency
                    baseline = [
                        *[llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", "PORT"],
                        *["-t", str(args.threads), "-tb", str(args.threads), "-a", MODEL],
                        *["-np", str(slots), "-c", str(n_ctx * slots), "-fa", "off"],
                        *["--cache-type-k", "f32", "--cache-type-v", "f32", "--no-warmup"],
                    ]
                    runs.append(("llama-server", baseline, None, None, (slots,)))
                for name, command, server_env, cwd, concurrencies in runs:
                    port = free_port()
                    command = [str(port) if part == "PORT" else part for part in command]
                    log = scratch / f"{quant}-{port}.log"
                    process = start(command, port, log, server_env, cwd)
                    try:
                        for concurrency in concurrencies:
                            result = measure(port, texts, concurrency, args.new_tokens)
                            key = (quant, name, concurrency)
                            if key not in best or result["tokens/s"] > best[key]["tokens/s"]:
                                best[key] = result
                    finally:
                        stop(process)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nsize {args.size}, {args.threads} threads, {args.requests} requests of <= "
        f"{args.new_tokens} new tokens, best of {args.repeat}; venv install {venv_seconds:.0f} s"
    )
    header = (
        f"{'quant':7} {'bundle bytes':>13} {'gguf bytes':>12} {'server':16} "
        f"{'c=1 tok/s':>10} {'c=8 tok/s':>10} {'vs llama-server c=1':>20} {'c=8':>6}"
    )
    print(header)
    print("-" * len(header))
    for quant in quants:
        base = {c: best[(quant, "llama-server", c)]["tokens/s"] for c in (1, SLOTS)}
        for name in ("bundle ./serve", "llama-server"):
            rate = {c: best[(quant, name, c)]["tokens/s"] for c in (1, SLOTS)}
            print(
                f"{quant:7} {sizes[quant][0]:13,} {sizes[quant][1]:12,} {name:16} "
                f"{rate[1]:10.0f} {rate[SLOTS]:10.0f} {rate[1] / base[1]:20.2f} "
                f"{rate[SLOTS] / base[SLOTS]:6.2f}"
            )
    for quant in quants:
        if fallback := sizes[quant][2]:
            print(
                f"{quant}: {fallback['tensors']} of {fallback['of']} tensors too narrow for it, "
                "stored in another type by llama.cpp's quantizer"
            )
    tokens = {k: v["tokens"] for k, v in best.items()}
    print(
        f"completion tokens per set (EOS may end an answer early): {sorted(set(tokens.values()))}"
    )


if __name__ == "__main__":
    main()
