"""Does llama.cpp's own server answer a forgeml GGUF export the way forgeml does?

    scripts/build_llama_server.sh        # once: llama-server from the same llama.cpp source
    python benchmarks/gguf_parity.py [--size tiny] [--prompts 200] [--new-tokens 32]

Builds an untrained model of the given size in a temporary workspace, exports it with
`forgeml export --format gguf` and starts, on that one file, `llama-server` (its default
Jinja chat templating, the template the export embeds) and `forgeml serve` (the llama.cpp
engine). Then, for the chat conversations forgeml's template tests use (system prompts,
tools, tool calls and results, reasoning on and off, content chunks, several turns):

1. prompt parity: llama-server's `/apply-template` against forgeml's `render`, as text, and
   the token ids llama-server's `/tokenize` gives against forgeml's tokenizer;
2. answer parity: greedy answers of both servers to `--prompts` user questions, reasoning
   off, as a raw `/v1/completions` of forgeml's rendering (the engines alone) and through
   `/v1/chat/completions` (each server's template and output parsing): the same text, and
   the same once what the servers present differently is set aside (control tokens in
   the text, a chat answer's leading space, a character cut at the end).

An untrained model is the hard case: it emits control tokens anywhere, which forgeml's
output guide forbids in a chat answer and llama-server lets through. Prints one table;
exits 1 if any prompt's token ids differ.
"""

from __future__ import annotations

import argparse
import json
import pydoc_data.topics
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from edge_bundle import MODEL, ROOT, forgeml, free_port, make_model, start, stop

sys.path.insert(0, str(ROOT / "tests/models"))
from chat_conversations import CONVERSATIONS

from forgeml.models import chat_template as ct

EFFORTS = (None, "none", "high")
PARTIAL = "\ufffd"


def render_pairs(port: int, tokenizer) -> list[tuple[str, str | None, bool, bool]]:
    """(conversation, effort, outcome, same ids) for each conversation and effort: llama-server
    normalises OpenAI requests before its template sees them (it joins text chunks with
    newlines, refuses some shapes), so each difference is shown where it starts."""
    rows = []
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    for name, (messages, tools) in CONVERSATIONS.items():
        for effort in EFFORTS:
            body: dict = {"messages": messages}
            if tools:
                body["tools"] = tools
            if effort is not None:
                body["chat_template_kwargs"] = {"reasoning_effort": effort}
            reply = client.post("/apply-template", json=body)
            mine = ct.render(messages, tools=tools, reasoning_effort=effort)
            tokens = client.post(
                "/tokenize", json={"content": mine, "add_special": False, "parse_special": True}
            ).json()["tokens"]
            same_ids = tokens == tokenizer.encode(mine, add_special_tokens=False)
            if reply.status_code != 200:
                outcome = f"refused: {reply.json()['error']['message'][:60]}"
            else:
                outcome = first_difference(mine, reply.json()["prompt"])
            rows.append((name, effort, outcome, same_ids))
    client.close()
    return rows


def first_difference(mine: str, theirs: str) -> str:
    if mine == theirs:
        return "identical"
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    at = min(len(mine), len(theirs)) if at is None else at
    return f"differs at {at}: forgeml {mine[at : at + 24]!r} llama-server {theirs[at : at + 24]!r}"


def answers(
    port: int, model: str, questions: list[str], new_tokens: int, key: str | None = None
) -> dict[str, list[str]]:
    """Greedy answers to each question: through the chat API (each server's own template
    and output parsing) and as a raw completion of forgeml's rendering (the engines alone)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=600, headers=headers)
    out: dict[str, list[str]] = {"chat": [], "completion": []}
    for question in questions:
        messages = [{"role": "user", "content": question}]
        body = {"model": model, "max_tokens": new_tokens, "temperature": 0}
        reply = client.post("/chat/completions", json=body | {"messages": messages})
        reply.raise_for_status()
        message = reply.json()["choices"][0]["message"]
        reasoning = message.get("reasoning_content") or ""
        out["chat"].append(f"{reasoning}|{message.get('content') or ''}")
        reply = client.post("/completions", json=body | {"prompt": ct.render(messages)})
        reply.raise_for_status()
        out["completion"].append(reply.json()["choices"][0]["text"])
    client.close()
    return out


def without_presentation(text: str) -> str:
    """The answer without what the servers present differently: llama-server drops control
    tokens from output text (forgeml's /v1/completions shows them), trims the chat
    content's leading space, and ends a text cut mid-character with U+FFFD (forgeml holds
    the bytes back)."""
    for token in ct.CONTROL_TOKENS:
        text = text.replace(token, "")
    return "|".join(part.strip().replace(PARTIAL, "") for part in text.split("|"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--llama-server", default=None, help="default: build/find it")
    args = parser.parse_args()
    llama_server = (
        args.llama_server
        or (
            subprocess.run(
                [str(ROOT / "scripts/build_llama_server.sh")],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    )
    scratch = Path(tempfile.mkdtemp(prefix="forgeml-gguf-parity-"))
    try:
        workspace = scratch / "ws"
        tokenizer = make_model(workspace, args.size)
        export = json.loads(
            forgeml(workspace, "--json", "export", MODEL, "--format", "gguf", "--name", "parity")
        )
        gguf = next((workspace / "artifacts").glob("export/*/model-f16.gguf"))
        gguf_bytes = gguf.stat().st_size
        key = json.loads(forgeml(workspace, "--json", "keys", "create", "--name", "parity"))["key"]
        topics = list(pydoc_data.topics.topics.values())
        questions = [
            " ".join(topics[i % len(topics)].split()[:12]) + "?" for i in range(args.prompts)
        ]

        port = free_port()
        server = [llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
        server += ["-a", MODEL, "-np", "1", "-fa", "off", "--cache-type-k", "f32"]
        server += ["--cache-type-v", "f32", "--no-warmup", "-t", "2"]
        process = start(server, port, scratch / "llama-server.log")
        try:
            rendered = render_pairs(port, tokenizer)
            theirs = answers(port, MODEL, questions, args.new_tokens)
        finally:
            stop(process)

        port = free_port()
        command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "serve"]
        command += ["parity", "--port", str(port), "--threads", "2", "--job-workers", "0"]
        process = start(command, port, scratch / "forgeml.log", ready="/health")
        try:
            mine = answers(port, "parity", questions, args.new_tokens, key)
        finally:
            stop(process)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    same_text = sum(row[2] == "identical" for row in rendered)
    same_ids = sum(row[3] for row in rendered)
    print(f"\nexport {export.get('ref', 'parity')}: {gguf_bytes:,} bytes")
    for name, effort, outcome, _ in rendered:
        print(f"  {name[:40]:<40} {effort or '-':<5} {outcome}")
    for kind in ("completion", "chat"):
        pairs = list(zip(mine[kind], theirs[kind], strict=True))
        for a, b in [(a, b) for a, b in pairs if a != b][:3]:
            print(f"  {kind} answers {first_difference(a, b)}")
    print(f"{'check':<52} {'agree':>9}")
    print(f"{'prompt text (/apply-template vs render)':<52} {same_text:>4}/{len(rendered):<4}")
    print(f"{'prompt token ids (/tokenize vs tokenizer)':<52} {same_ids:>4}/{len(rendered):<4}")
    for kind in ("completion", "chat"):
        pairs = list(zip(mine[kind], theirs[kind], strict=True))
        same = sum(a == b for a, b in pairs)
        alike = sum(without_presentation(a) == without_presentation(b) for a, b in pairs)
        print(f"{f'greedy {kind} answers, reasoning off: same text':<52} {same:>4}/{len(pairs):<4}")
        print(f"{'  same but for control tokens, spaces, U+FFFD':<52} {alike:>4}/{len(pairs):<4}")


if __name__ == "__main__":
    main()
