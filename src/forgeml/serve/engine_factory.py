"""The engine that serves one model: llama.cpp for a GGUF, else transformers (or vLLM).

Every engine is imported when it is picked, not before: serving a GGUF must not load
torch or transformers (a test checks `sys.modules`), and a server without vLLM or
llama-cpp-python installed still serves with the others.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from forgeml.core.errors import InputError
from forgeml.models.classifier_config import is_classifier
from forgeml.serve.engine.base import Engine
from forgeml.serve.settings import ServeSettings


def make_engine(
    served_id: str,
    path: Path,
    tokenizer,
    settings: ServeSettings,
    *,
    gguf: Path | None = None,
    mmproj: Path | None = None,
    tokenizer_dir: Path | None = None,
    log_dir: Path | None = None,
) -> Engine:
    """The engine `settings.engine` names; by default llama.cpp for a GGUF, else transformers.
    A classifier gets its own engine whatever the settings: it does not generate."""
    if gguf is None and is_classifier(path):
        from forgeml.models.classifier import Classifier
        from forgeml.serve.engine.classifier import ClassifierEngine

        _set_torch_threads(settings)

        return ClassifierEngine(Classifier.load(path), served_id, settings.max_waiting)
    kind = settings.engine or ("llama.cpp" if gguf is not None else "transformers")
    if kind == "llama.cpp":
        if gguf is None:
            raise InputError(
                f"the llama.cpp engine serves GGUF exports, and {served_id} is not one",
                hint=f"forgeml export {served_id} --format gguf, then serve the export",
            )
        from forgeml.serve.engine.llama_cpp import LlamaCppEngine

        return LlamaCppEngine(
            gguf,
            tokenizer,
            n_ctx=settings.llama_cpp_n_ctx or 0,
            threads=settings.threads(),
            slots=settings.max_batch_size,
            max_waiting=settings.max_waiting,
            mmproj=mmproj,
        )
    if gguf is not None:
        raise InputError(
            f"{served_id} is a GGUF export, which only the llama.cpp engine serves",
            hint="serve the model it was exported from (or an hf export of it) instead",
        )
    if kind == "vllm":
        from forgeml.serve.engine.vllm_proxy import VllmProxyEngine

        log_name = "vllm-" + re.sub(r"[^\w.@-]+", "_", served_id) + ".log"
        return VllmProxyEngine(
            path,
            url=settings.vllm_url,
            command=settings.vllm_command,
            args=settings.vllm_args,
            api_key=os.environ.get("VLLM_API_KEY") if settings.vllm_url else None,
            served_name=served_id,
            log_path=(log_dir or Path(tempfile.gettempdir()) / "forgeml") / log_name,
            start_timeout=settings.vllm_start_timeout,
            max_in_flight=settings.max_batch_size + settings.max_waiting,
        )
    if settings.engine_process:
        from forgeml.serve.engine.process import ProcessEngine

        return ProcessEngine(
            path,
            tokenizer_dir,
            max_batch_size=settings.max_batch_size,
            max_waiting=settings.max_waiting,
            threads=settings.threads(),
        )
    from forgeml.models.sizes import load_model
    from forgeml.serve.engine.transformers import TransformersEngine

    _set_torch_threads(settings)

    return TransformersEngine(
        load_model(path),
        tokenizer,
        max_batch_size=settings.max_batch_size,
        max_waiting=settings.max_waiting,
    )


def _set_torch_threads(settings: ServeSettings) -> None:
    """torch's thread pool is process-wide (the server owns the process); set only when an
    engine in this process runs on torch, so a llama.cpp server never imports it."""
    import torch

    torch.set_num_threads(settings.threads())
