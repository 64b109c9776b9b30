"""Helpers for the fine-tuning tests: a tiny base model, small chat / preference / prompt
JSONL files ingested like a user's, and a sha256 of a model's weights.

The base is the `tiny` size (~0.3M parameters) with a 1k tokenizer trained on Python's
own documentation, built once per session and copied into each test's workspace.
"""

from __future__ import annotations

import hashlib
import json
import pydoc_data.topics
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import safe_open

from forgeml.core.context import record_artifact
from forgeml.core.runs import run_stage
from forgeml.core.workspace import Workspace

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"}},
                "required": ["order_id"],
            },
        },
    }
]

# One conversation with every kind of turn: system, user, reasoning, a tool call, its
# result, an answer, and a turn not to train on (weight 0).
TOOL_CHAT: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are the help desk."},
        {"role": "user", "content": "Where is ORD-12?"},
        {
            "role": "assistant",
            "reasoning_content": "I should look it up.",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order", "arguments": '{"order_id": "ORD-12"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": "It has shipped."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "Sorry, what?", "weight": 0},
        {"role": "user", "content": "I said thanks."},
        {"role": "assistant", "content": "You are welcome."},
    ],
    "tools": TOOLS,
}
WORDS = ["list", "tuple", "dict", "set", "str", "int", "float", "bytes"]


def chat_lines(count: int = 16) -> list[dict[str, Any]]:
    """Easy conversations (the answer repeats the question's word) plus TOOL_CHAT."""
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Name the type: {WORDS[i % len(WORDS)]}"},
                {"role": "assistant", "content": f"The type is {WORDS[i % len(WORDS)]}."},
            ]
        }
        for i in range(count - 1)
    ]
    return [TOOL_CHAT, *lines]


def preference_lines(count: int = 16) -> list[dict[str, Any]]:
    """TRL-shaped pairs with a text prompt: ingest with `text_field="prompt"` and
    `metadata_fields=["chosen", "rejected"]`."""
    return [
        {
            "prompt": f"Name the type: {WORDS[i % len(WORDS)]}",
            "chosen": f"The type is {WORDS[i % len(WORDS)]}.",
            "rejected": "No idea, sorry!",
        }
        for i in range(count)
    ]


def openai_preference_line(word: str) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"Name the type: {word}"}]},
        "preferred_output": [{"role": "assistant", "content": f"The type is {word}."}],
        "non_preferred_output": [{"role": "assistant", "content": "No idea, sorry!"}],
    }


def prompt_lines(count: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "messages": [{"role": "user", "content": f"Say the word {WORDS[i % len(WORDS)]}"}],
            "reference": WORDS[i % len(WORDS)],
        }
        for i in range(count)
    ]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ingest(workspace: Workspace, path: Path, **params: Any):
    return run_stage(workspace, "data.ingest", {"paths": [str(path)], **params}).outputs["dataset"]


def build_base(directory: Path) -> Path:
    from forgeml.models.sizes import build_config, build_model
    from forgeml.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=1000)
    model = build_model(build_config("tiny", vocab_size=len(tokenizer)), seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def register_model(workspace: Workspace, directory: Path, name: str = "base"):
    temp = workspace.store.new_temp_dir()
    shutil.copytree(directory, temp, dirs_exist_ok=True)
    artifact = record_artifact(workspace, workspace.store.commit(temp, "model", None), None)
    with workspace.registry.session() as session:
        workspace.registry.add_version(session, name, artifact)
    return artifact


@contextmanager
def dies_at_step(monkeypatch: Any, step: int) -> Iterator[None]:
    """Fine-tuning raises KeyboardInterrupt (a Ctrl-C) when it reaches `step`."""
    from forgeml.train import finetune_common

    original = finetune_common.StageCallback.on_step_end

    def die(self, args, state, control, **kwargs):
        if state.global_step == step:
            raise KeyboardInterrupt
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(finetune_common.StageCallback, "on_step_end", die)
    try:
        yield
    finally:
        monkeypatch.setattr(finetune_common.StageCallback, "on_step_end", original)


def weights(path: Path, file: str = "model.safetensors") -> dict[str, Any]:
    with safe_open(path / file, "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def weights_sha256(path: Path, file: str = "model.safetensors") -> str:
    return hashlib.sha256((path / file).read_bytes()).hexdigest()


def forgeml(workspace: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The installed CLI in a subprocess, as a user runs it; `ok` asserts it succeeded."""
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result
