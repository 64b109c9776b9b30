"""GGUF export: llama.cpp's own converter, then (optionally) llama.cpp's quantizer.

    files = write_gguf(model_dir, out_dir, quant="q4_k_m", work_dir=run_dir)

`f32`/`f16` come straight from the converter. `q8_0`/`q4_k_m` are made by converting
to a lossless float file first (the checkpoint's own precision: f32 for our fp32
checkpoints, bf16 for bf16 ones) and quantising that with `llama_model_quantize`, as
llama.cpp's `llama-quantize` does, so every quantised tensor is rounded once.

Every llama.cpp call runs in a child process (see gguf_tool.py); its output goes to a
log in the run directory, and a failure becomes a `ForgeError` that says what llama.cpp
could not do. Tools are looked up before any work (see toolchain.py).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from forgeml.core.errors import ForgeError, InputError
from forgeml.export import toolchain
from forgeml.models.tokenizer import LLAMA_CPP_PRE_TOKENIZER

log = logging.getLogger("forgeml.export")

FLOAT_TYPES = ("f32", "f16")
QUANT_TYPES = ("q8_0", "q4_k_m")
GGUF_TYPES = FLOAT_TYPES + QUANT_TYPES
# The converter's lossless outtype for a checkpoint's dtype (config.json "dtype").
LOSSLESS_OUTTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
LOG_TAIL_LINES = 15
FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


def check_tools(quant: str) -> tuple[toolchain.Converter, dict[str, Any]]:
    """Fail before any work if a tool this export needs is missing; say what was found."""
    converter = toolchain.find_converter()
    tools: dict[str, Any] = {
        "converter": converter.versions(),
        "llama_cpp_python": toolchain.llama_cpp_version(),
    }
    if quant in QUANT_TYPES:
        toolchain.require_llama_cpp(f"quantise to {quant}")
    return converter, tools


def write_gguf(
    model_dir: Path, out_dir: Path, quant: str, work_dir: Path, model_name: str
) -> dict[str, Any]:
    """Write `model-<quant>.gguf` into out_dir; returns what export.json records.

    `model_name` becomes the GGUF's `general.name` (else the converter uses the name of
    the directory, which in the store is a sha256)."""
    if quant not in GGUF_TYPES:
        raise InputError(f"unknown GGUF type {quant!r}", field="quant", hint=f"one of {GGUF_TYPES}")
    config = json.loads((model_dir / "config.json").read_text())
    converter, tools = check_tools(quant)
    architecture = (config.get("architectures") or ["(none declared)"])[0]
    pre = declared_pre_tokenizer(model_dir)
    outfile = out_dir / f"model-{quant}.gguf"
    log_path = work_dir / "llama_cpp.log"
    fallback_tensors = None

    convert = ["convert", "--llama-cpp", str(converter.root), "--model-name", model_name]
    convert += ["--pre-tokenizer", pre] if pre else []
    convert += [str(model_dir)]
    failure = f"llama.cpp's converter could not convert {architecture} to GGUF"
    if quant in FLOAT_TYPES:
        _run([*convert, str(outfile), quant], log_path, failure)
    else:
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        outtype = LOSSLESS_OUTTYPE.get(dtype, "f32")
        intermediate = work_dir / f"model-{outtype}.gguf"
        _run([*convert, str(intermediate), outtype], log_path, failure)
        try:
            _run(
                ["quantize", str(intermediate), str(outfile), quant],
                log_path,
                f"llama.cpp could not quantise the {architecture} GGUF to {quant}",
            )
        finally:
            intermediate.unlink(missing_ok=True)
        # k-quants need rows of 256 values; narrower tensors get another type instead.
        if fallback := FALLBACK.search(_last_run(log_path)):
            fallback_tensors = {"tensors": int(fallback[1]), "of": int(fallback[2])}

    loaded = None
    if tools["llama_cpp_python"]:
        output = _run(
            ["inspect", str(outfile)],
            log_path,
            f"llama.cpp (llama-cpp-python {tools['llama_cpp_python']}) cannot load the "
            f"{architecture} GGUF it was given",
        )
        loaded = json.loads(output.strip().splitlines()[-1])
    mmproj = (
        _write_mmproj(converter.root, model_dir, out_dir, quant, log_path, model_name)
        if config.get("model_type") == "mistral3"
        else None
    )
    return {
        "file": outfile.name,
        "size_bytes": outfile.stat().st_size,
        "mmproj": mmproj,  # a vision-language model's tower: llama.cpp's second file
        "architecture": architecture,
        "pre_tokenizer": pre or "detected by the converter",
        "llama_cpp_load_check": loaded,  # None: llama-cpp-python absent, not checked
        "fallback_quantization": fallback_tensors,
        "tools": tools,
    }


def _write_mmproj(
    llama_cpp: Path, model_dir: Path, out_dir: Path, quant: str, log_path: Path, name: str
) -> dict[str, Any]:
    """The vision tower and projector as llama.cpp's `mmproj` GGUF, next to the text model
    (llama-server --mmproj, llama.cpp's mtmd). It stays f16 (f32 for an f32 export):
    llama.cpp quantises text models, not CLIP towers."""
    outtype = "f32" if quant == "f32" else "f16"
    outfile = out_dir / f"mmproj-{outtype}.gguf"
    failure = "llama.cpp's converter could not write the vision tower's mmproj GGUF"
    _run(
        ["convert", "--llama-cpp", str(llama_cpp), "--model-name", name, "--mmproj",
         str(model_dir), str(outfile), outtype],
        log_path,
        failure,
    )  # fmt: skip
    output = _run(
        ["inspect-mmproj", "--llama-cpp", str(llama_cpp), str(outfile)], log_path, failure
    )
    checked = json.loads(output.strip().splitlines()[-1])
    if not checked["img_break"] or checked["projector_type"] != "pixtral":
        raise ForgeError(f"{failure}: it lacks what llama.cpp needs ({checked})")
    return {"file": outfile.name, "size_bytes": outfile.stat().st_size, **checked}


def declared_pre_tokenizer(model_dir: Path) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokenizer when it is forgeml's own
    (single digits, then GPT-2's byte-level regex: llama.cpp's "smollm"), else None and
    the converter recognises it by its hash, as for any published model."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    forgeml_steps = (
        len(steps) == 2
        and steps[0].get("type") == "Digits"
        and steps[0].get("individual_digits") is True
        and steps[1].get("type") == "ByteLevel"
        and steps[1].get("use_regex", True) is True
        and steps[1].get("add_prefix_space") is False
    )
    return LLAMA_CPP_PRE_TOKENIZER if forgeml_steps else None


def _run(args: list[str], log_path: Path, failure: str) -> str:
    """Run one gguf_tool command; stderr (llama.cpp's logs) is appended to log_path."""
    command = [sys.executable, "-m", "forgeml.export.gguf_tool", *args]
    log.info("running %s", " ".join(command))
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
        log_file.write(result.stdout)
    if result.returncode != 0:
        raise _explain(failure, log_path, result.returncode)
    return result.stdout


def _explain(failure: str, log_path: Path, returncode: int) -> ForgeError:
    """Turn a child's log into the most specific message we know for it."""
    last_run = _last_run(log_path)
    tail = "\n".join(last_run.strip().splitlines()[-LOG_TAIL_LINES:])
    hint = f"The full log is {log_path}."
    if missing := re.search(r"No module named '([\w.]+)'", last_run):
        package = missing.group(1).split(".")[0]
        return ForgeError(
            f"{failure}: the Python package {package!r} is missing",
            hint=f"pip install {package}  ({hint})",
        )
    if re.search(r"Model \S+ is not supported|Architecture .+ not supported", last_run):
        return ForgeError(
            f"{failure}: this llama.cpp release does not support the architecture",
            hint="Export with --format hf instead, or install a newer llama-cpp-python "
            f"and its converter. {hint}",
        )
    if "pre-tokenizer was not recognized" in last_run:
        return ForgeError(
            f"{failure}: the converter does not know this tokenizer's BPE pre-tokenizer",
            hint="forgeml's own tokenizers are declared as "
            f"{LLAMA_CPP_PRE_TOKENIZER!r}; other tokenizers must be ones llama.cpp "
            f"lists in convert_hf_to_gguf_update.py. {hint}",
        )
    if "unknown model architecture" in last_run or "unknown pre-tokenizer" in last_run:
        return ForgeError(
            f"{failure}: the installed llama.cpp library does not know this model",
            hint="Install the llama-cpp-python wheel built from the same sdist as the "
            f"converter. {hint}",
        )
    return ForgeError(f"{failure} (exit status {returncode}):\n{tail}", hint=hint)


def _last_run(log_path: Path) -> str:
    """The log of the latest command (each starts with a `$ command` line)."""
    return log_path.read_text(encoding="utf-8", errors="replace").rsplit("\n$ ", 1)[-1]
