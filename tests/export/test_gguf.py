"""`export.model --format gguf`: llama.cpp loads the file and predicts what transformers does.

Agreement is measured two ways over 8 greedy steps after a short prompt:
- free-running: llama.cpp's own greedy continuation equals transformers' (f32, f16);
- teacher-forced: fed transformers' greedy tokens, llama.cpp's argmax at each of the
  8 positions is compared with transformers' (every type; quantised ones may differ a
  little), along with the largest logit difference.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from export_fixtures import PROMPT, load
from transformers import AutoTokenizer

from forgeml.core.errors import ForgeError
from forgeml.core.runs import run_stage
from forgeml.export import toolchain
from forgeml.models.chat_template import CHAT_TEMPLATE

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed: build its wheel from the sdist and install "
        "it, then `python -m forgeml.export.toolchain install <sdist>` (see forgeml/export)",
    ),
]

STEPS = 8
# (largest |logit difference| allowed, teacher-forced argmax agreements required of 8)
# Measured on the fixture model: f32 3e-6 and 8/8, f16 5e-3 and 8/8, q8_0 0.14 and 7/8,
# q4_k_m 1.45 and 6/8 (its tiny tensors fall back to other 4-8 bit types). A random
# MoE router is near-tied for some tokens, so quantised weights can flip an expert.
TOLERANCE = {"f32": (1e-4, 8), "f16": (2e-2, 8), "q8_0": (0.5, 6), "q4_k_m": (3.0, 4)}
CHAT = [
    {"role": "system", "content": "Answer with order ids like ORD-12345."},
    {"role": "user", "content": "Where is order ORD-98765, placed on 2024-05-01?"},
]


def export_gguf(workspace, model, quant):
    result = run_stage(
        workspace, "export.model", {"format": "gguf", "quant": quant}, {"model": model}
    )
    directory = workspace.root / result.outputs["export"].path
    record = json.loads((directory / "export.json").read_text())
    return directory / record["gguf"]["file"], record


@contextmanager
def open_gguf(path):
    from llama_cpp import GGML_TYPE_F32, Llama

    # An f32 KV cache: llama.cpp's default f16 cache alone moves logits by up to ~0.3
    # here, which would hide what this measures (the conversion).
    llm = Llama(
        str(path),
        n_ctx=128,
        n_threads=2,
        logits_all=True,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        verbose=False,
    )
    try:
        yield llm
    finally:
        llm.close()


def transformers_greedy(model, ids):
    """Greedy tokens and, for each step, the logits that chose it (full forward, no cache)."""
    tokens, rows = [], []
    with torch.no_grad():
        for _ in range(STEPS):
            logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, -1]
            rows.append(logits.numpy())
            tokens.append(int(logits.argmax()))
    return tokens, np.stack(rows)


def llama_teacher_forced(llm, ids, tokens):
    llm.reset()
    llm.eval(ids + tokens[:-1])
    return np.stack([np.array(llm.scores[len(ids) - 1 + step]) for step in range(STEPS)])


def llama_greedy(llm, ids):
    llm.reset()
    llm.eval(ids)
    tokens = []
    for _ in range(STEPS):
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([tokens[-1]])
    return tokens


@pytest.mark.parametrize("quant", list(TOLERANCE))
def test_llama_cpp_predicts_what_transformers_predicts(workspace, model, model_dir, quant):
    path, record = export_gguf(workspace, model, quant)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(PROMPT)["input_ids"]
    expected, hf_logits = transformers_greedy(load(model_dir), ids)

    with open_gguf(path) as llm:
        gguf_logits = llama_teacher_forced(llm, ids, expected)
        free_running = llama_greedy(llm, ids)
    agree = int((gguf_logits.argmax(axis=1) == np.array(expected)).sum())
    max_diff = float(np.abs(gguf_logits - hf_logits).max())
    print(f"{quant}: {agree}/{STEPS} greedy steps agree, max |logit diff| {max_diff:.2e}")
    max_allowed, agree_needed = TOLERANCE[quant]
    assert max_diff < max_allowed and agree >= agree_needed
    if quant in ("f32", "f16"):
        assert free_running == expected
    assert record["gguf"]["llama_cpp_load_check"]["architecture"] == "mistral4"
    if quant == "q4_k_m":  # the tiny model's rows (64 wide) are too narrow for Q4_K
        assert record["gguf"]["fallback_quantization"]["tensors"] > 0


def test_the_gguf_tokenises_like_the_hf_tokenizer(workspace, model, model_dir):
    path, record = export_gguf(workspace, model, "f16")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False)
    with open_gguf(path) as llm:
        metadata = llm.metadata
        assert metadata["tokenizer.ggml.pre"] == "smollm"  # digits split one by one
        assert metadata["general.architecture"] == "mistral4"
        assert metadata["general.name"] == model.ref
        assert metadata["tokenizer.chat_template"] == CHAT_TEMPLATE  # what llama-server renders
        for text in (PROMPT, "ORD-12345 costs $1,234.50 on 2024-05-01", chat):
            ids = tokenizer.encode(text)
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            # llama.cpp adds no <s> of its own either: the chat template writes it.
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids
    assert record["gguf"]["pre_tokenizer"] == "smollm"
    assert record["gguf"]["tools"]["llama_cpp_python"] == toolchain.llama_cpp_version()


def test_a_merged_adapter_exports_to_gguf(workspace, model):
    adapter = run_stage(workspace, "test.lora", {}, {"model": model}).outputs["adapter"]
    result = run_stage(workspace, "export.model", {"format": "gguf"}, {"adapter": adapter})
    record = json.loads(
        (workspace.root / result.outputs["export"].path / "export.json").read_text()
    )
    assert record["base"]["sha256"] == model.sha256
    assert record["gguf"]["file"] == "model-f16.gguf"


def test_an_architecture_llama_cpp_lacks_fails_clearly(workspace, model_dir, tmp_path):
    from export_fixtures import import_artifact

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    for source in model_dir.iterdir():
        (unknown / source.name).write_bytes(source.read_bytes())
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchLM"]}))
    artifact = import_artifact(workspace, unknown, "model")
    with pytest.raises(ForgeError, match="does not support the architecture") as error:
        run_stage(workspace, "export.model", {"format": "gguf"}, {"model": artifact})
    assert "--format hf" in error.value.hint
