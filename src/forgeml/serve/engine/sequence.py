"""One request's state inside an engine: its tokens, text, stop strings and sampler.

Text is decoded incrementally with `tokenizers.decoders.DecodeStream` (a byte-level
BPE token can end in the middle of a UTF-8 character; the stream waits for the rest)
and with special tokens kept: the chat layer splits reasoning, answer and tool calls
on them. Text that might be the start of a stop string is held back until it is
known not to be one, so a stop string never leaks into a streamed delta.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from forgeml.serve.engine.base import GenerationChunk, GenerationRequest

# What torch.Generator.manual_seed takes; numpy's streams take the same seeds modulo 2**64.
SEED_RANGE = (-(2**63), 2**64 - 1)


class Sequence:
    def __init__(
        self, request: GenerationRequest, tokenizer: Tokenizer, eos_token_ids: set[int]
    ) -> None:
        self.request = request
        self.sampling = request.sampling
        self.guide = request.guide
        self.prompt_ids = request.prompt_ids
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self.prompt_logprob: float | None = None  # set by the prefill (prompt_score.py)
        self.error: str | None = None
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=False)
        eos = set() if self.sampling.ignore_eos else eos_token_ids
        self._stop_ids = eos | set(self.sampling.stop_token_ids)
        self._held = ""  # decoded text not yet emitted (could start a stop string)
        self._aborted = threading.Event()
        self.outbox: asyncio.Queue[GenerationChunk] | None = None  # the engine's hand-off
        # A seeded sequence's own random stream, made by the engine's sampler on first
        # use (a torch.Generator or a numpy Generator: this module must not need torch).
        self.generator: Any = None
        seed = self.sampling.seed
        if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise ValueError(f"seed {seed} is outside 64 bits")  # fails this request alone

    # --- set from the event loop ---------------------------------------------------------

    def abort(self) -> None:
        """The client went away; the worker drops the sequence at its next step."""
        self._aborted.set()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    # --- used by the worker thread -------------------------------------------------------

    @property
    def remaining(self) -> int:
        return self.sampling.max_tokens - len(self.token_ids)

    @property
    def greedy(self) -> bool:
        return self.sampling.temperature <= 0.0

    def append(self, token_id: int) -> GenerationChunk:
        """Take a sampled token; return the chunk to send (its text may be empty)."""
        self.token_ids.append(token_id)
        if self.guide is not None and self.error is None:
            try:
                self.guide.advance(token_id)
            except Exception as error:  # as in sampling.apply_guides: fail this one only
                self.guide_failed(f"constrained decoding failed: {error}")
        if self.error is not None:
            return self._finish("error", [token_id])
        if token_id in self._stop_ids:
            return self._finish("stop", [token_id])
        piece = self._stream.step(self._tokenizer, token_id) or ""
        text = self._held + piece
        for stop in self.sampling.stop:
            index = text.find(stop)
            if index >= 0:
                self._held = ""
                return self._finish("stop", [token_id], text[:index])
        if self.remaining <= 0:
            self._held = ""
            return self._finish("length", [token_id], text)
        keep = _stop_prefix_length(text, self.sampling.stop)
        emitted, self._held = text[: len(text) - keep], text[len(text) - keep :]
        return self._chunk(emitted, [token_id])

    def guide_failed(self, message: str) -> None:
        """The guide broke; the token sampled this step ends the sequence with an error."""
        self.error = message

    def fail(self, reason: str, error: str | None = None) -> GenerationChunk:
        """End the sequence from outside (abort, engine error, shutdown)."""
        text, self._held = self._held, ""
        self.error = error
        return self._finish(reason, [], text)

    def _finish(self, reason: str, token_ids: list[int], text: str = "") -> GenerationChunk:
        self.finish_reason = reason
        chunk = self._chunk(text, token_ids)
        chunk.finish_reason = reason
        chunk.error = self.error
        chunk.prompt_logprob = self.prompt_logprob
        return chunk

    def _chunk(self, text: str, token_ids: list[int]) -> GenerationChunk:
        return GenerationChunk(
            text=text,
            token_ids=token_ids,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
        )


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
