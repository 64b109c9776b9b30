#!/usr/bin/env python3
"""Serve this bundle's model with an OpenAI-compatible API (llama.cpp, no forgeml, no torch).

    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    PATH=$PWD/.venv/bin:$PATH ./serve --host 127.0.0.1 --port 8080
    ./serve --verify          # check every file against bundle.json's sha256, then exit

The server is llama-cpp-python's own (`llama_cpp.server`: /v1/chat/completions,
/v1/completions, /v1/models, streaming). It decodes one request at a time: others wait
on its lock and run in turn, each to the end (this launcher turns off its default of
cutting a streaming answer short when another request arrives). The chat template is
the bundle's chat_template.jinja, registered as chat format "forgeml".

This file is written by `forgeml deploy bundle --target edge` and must run with only
requirements.txt installed: it imports nothing from forgeml.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
MANIFEST = BUNDLE / "bundle.json"
CHAT_FORMAT = "forgeml"
# llama.cpp's KV cache types by name (ggml_type values).
KV_CACHE_TYPES = {"f32": 0, "f16": 1}


def parse_args(manifest: dict, argv: list[str] | None) -> argparse.Namespace:
    serving = manifest["serving"]
    parser = argparse.ArgumentParser(prog="./serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="Listen address (127.0.0.1).")
    parser.add_argument("--port", type=int, default=8080, help="Listen port (8080).")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: every core allowed)."
    )
    parser.add_argument(
        "--n-ctx",
        type=int,
        default=serving["n_ctx"],
        help=f"Context length in tokens (default {serving['n_ctx']}; "
        f"the model was trained on {serving['context_length']}).",
    )
    parser.add_argument(
        "--kv-cache",
        choices=sorted(KV_CACHE_TYPES),
        default=serving["kv_cache"],
        help=f"KV cache type (default {serving['kv_cache']}: the answers forgeml's own "
        "llama.cpp engine gives; f16 halves its memory).",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("EDGE_API_KEY"), help="Require this bearer key."
    )
    parser.add_argument(
        "--verify", action="store_true", help="Check every file's sha256, then exit."
    )
    return parser.parse_args(argv)


def verify(manifest: dict) -> list[str]:
    """The files that are missing or differ from the manifest's sha256."""
    bad = []
    for name, expected in sorted(manifest["files"].items()):
        path = BUNDLE / name
        if not path.is_file():
            bad.append(f"{name}: missing")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected["sha256"]:
            bad.append(f"{name}: sha256 differs from bundle.json")
    return bad


def register_chat_template(manifest: dict) -> None:
    """The bundle's template as chat format "forgeml" (rendered with add_generation_prompt)."""
    from llama_cpp.llama_chat_format import (
        Jinja2ChatFormatter,
        LlamaChatCompletionHandlerRegistry,
    )

    chat = manifest["chat"]
    formatter = Jinja2ChatFormatter(
        template=(BUNDLE / manifest["chat_template"]).read_text(encoding="utf-8"),
        eos_token=chat["eos_token"],
        bos_token=chat["bos_token"],
        stop_token_ids=[chat["eos_token_id"]],
    )
    LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        CHAT_FORMAT, formatter.to_chat_handler(), overwrite=True
    )


def main(argv: list[str] | None = None) -> int:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    args = parse_args(manifest, argv)
    if args.verify:
        bad = verify(manifest)
        for line in bad:
            print(f"error: {line}", file=sys.stderr)
        print("bundle intact" if not bad else f"{len(bad)} file(s) damaged", file=sys.stderr)
        return 1 if bad else 0
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as error:
        print(
            f"error: {error.name} is not installed: pip install -r {BUNDLE / 'requirements.txt'}",
            file=sys.stderr,
        )
        return 2
    register_chat_template(manifest)
    threads = args.threads or len(os.sched_getaffinity(0))
    server = ServerSettings(
        host=args.host, port=args.port, api_key=args.api_key, interrupt_requests=False
    )
    model = ModelSettings(
        model=str(BUNDLE / manifest["gguf"]),
        model_alias=manifest["model"]["name"],
        n_ctx=args.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=KV_CACHE_TYPES[args.kv_cache],
        type_v=KV_CACHE_TYPES[args.kv_cache],
        chat_format=CHAT_FORMAT,
        verbose=False,
    )
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
