"""The engine process's side of process.py: load the model, decode, answer on the pipe.

    parent ── ("generate", key, prompt_ids, sampling, spec, adapter) ──> _ChildEngine
           ── ("abort", key) / ("job", n, kind, args) / ("stop",) ──>
           <── ("chunks", [(key, chunk, reasoning_tokens), ...]) / ("job", n, error)

A message that raises fails its own request (an "error" chunk), never the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from forgeml.core.errors import ForgeError
from forgeml.serve.constrained.guide import OutputGuide
from forgeml.serve.constrained.vocabulary import GuideVocabulary
from forgeml.serve.engine.base import GenerationChunk, GenerationRequest
from forgeml.serve.engine.transformers import TransformersEngine

log = logging.getLogger("forgeml.serve.engine")


def child_main(conn: Connection, options: dict[str, Any]) -> None:
    """Entry point of the engine process: load the model, decode until told to stop."""
    # Ctrl-C reaches the whole process group; the server shuts down and then tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch
        from transformers import AutoTokenizer

        from forgeml.models.sizes import load_model

        torch.set_num_threads(options["threads"])
        tokenizer = AutoTokenizer.from_pretrained(options["tokenizer_dir"], local_files_only=True)
        engine = _ChildEngine(
            conn,
            load_model(options["model_dir"]),
            tokenizer,
            max_batch_size=options["max_batch_size"],
            max_waiting=options["max_waiting"],
        )
        engine.start_worker()
    except ForgeError as error:  # ours say which file and what to do
        conn.send(("error", str(error)))
        return
    except Exception as error:  # the parent reports it; nothing else can
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", engine.max_context))
    engine.serve()


class _ChildEngine(TransformersEngine):
    """The engine inside the child: chunks go down the pipe, one message per step."""

    def __init__(self, conn: Connection, model, tokenizer, **options) -> None:
        super().__init__(model, tokenizer, **options)
        self._conn = conn
        self._send_lock = threading.Lock()
        self._sequences: dict[str, Any] = {}  # key -> Sequence, until its last chunk
        # Built before "ready", as the server builds its own before traffic: not on the
        # first constrained request, which would stall every message behind it.
        self._vocabulary = GuideVocabulary(tokenizer)

    def _send(self, outputs) -> None:
        if not outputs:
            return
        chunks = []
        for sequence, chunk in outputs:
            key = sequence.request.request_id
            reasoning = None
            if chunk.finish_reason is not None:
                self._sequences.pop(key, None)
                reasoning = getattr(sequence.guide, "reasoning_tokens", None)
            chunks.append((key, chunk, reasoning))
        self._reply(("chunks", chunks))

    def _reply(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError):  # the parent is gone; serve() ends on its EOF
            pass

    def serve(self) -> None:
        """Read the parent's messages until it says stop or goes away."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                break
            try:
                self._handle(message)
            except Exception as error:  # one bad message fails its request, not the engine
                log.exception("the engine process could not handle a %r message", message[0])
                if message[0] == "generate":
                    key = message[1]
                    self._sequences.pop(key, None)
                    failure = f"the engine refused this request: {type(error).__name__}: {error}"
                    chunk = GenerationChunk(text="", finish_reason="error", error=failure)
                    self._reply(("chunks", [(key, chunk, None)]))
        self.stop_worker()

    def _handle(self, message: tuple) -> None:
        from forgeml.serve.engine.sequence import Sequence

        kind = message[0]
        if kind == "generate":
            _, key, prompt_ids, sampling, spec, adapter, images = message
            request = GenerationRequest(
                key, prompt_ids, sampling, self._guide(spec), adapter, images
            )
            sequence = Sequence(request, self._backend, self.eos_token_ids)
            self._sequences[key] = sequence
            try:
                self.enqueue(sequence)
            except ForgeError as error:  # the parent checked; a race ends the request
                self._sequences.pop(key, None)
                self._send([(sequence, sequence.fail("error", error.message))])
        elif kind == "abort":
            sequence = self._sequences.get(message[1])
            if sequence is not None:
                sequence.abort()
                with self._wakeup:
                    self._wakeup.notify()
        elif kind == "job":
            threading.Thread(target=self._run_job, args=message[1:], daemon=True).start()

    def _guide(self, spec):
        if spec is None:
            return None
        output_spec, max_tokens = spec
        return OutputGuide(self._vocabulary, output_spec, max_tokens)

    def _run_job(self, number: int, kind: str, args: tuple[str, ...]) -> None:
        try:
            if kind == "add_adapter":
                self.add_adapter(args[0], Path(args[1]))
            else:
                self.remove_adapter(args[0])
        except Exception as error:  # sent back, raised in the parent's caller
            self._reply(("job", number, _portable(error)))
        else:
            self._reply(("job", number, None))


def _portable(error: Exception) -> Exception:
    """The error itself when it pickles (ours do), else a ForgeError with its message."""
    import pickle

    try:
        pickle.dumps(error)
        return error
    except Exception:
        return ForgeError(f"{type(error).__name__}: {error}")
