"""The one interface every inference engine implements.

The HTTP layer renders prompts, tokenizes them and turns engine output into the
OpenAI/Mistral wire format; an engine only turns token ids into more token ids, as
fast as it can, for many requests at once:

    async for chunk in engine.generate(GenerationRequest(...)):
        chunk.text            # newly decoded text, control tokens included
        chunk.finish_reason   # None until the last chunk: "stop" | "length" | "abort" | "error"

The transformers engine (engine/transformers.py) is the default. vLLM and llama.cpp
engines plug in behind the same interface: they receive the same `GenerationRequest`
(prompt ids, `SamplingParams`, an optional `TokenGuide` for constrained decoding and an
optional LoRA `adapter` name) and yield the same `GenerationChunk`s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from forgeml.core.errors import ForgeError

if TYPE_CHECKING:  # keep this module light: `forgeml keys` imports it through errors.py
    import numpy as np

FINISH_REASONS = ("stop", "length", "abort", "error")


class QueueFullError(ForgeError):
    """The engine's waiting queue is full; the server answers 429."""


class EngineUnavailable(ForgeError):
    """The engine is down (its process died and is restarting); the server answers 503."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. `temperature == 0` is greedy decoding."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # strings that end the completion (not included in it)
    stop_token_ids: tuple[int, ...] = ()  # besides the tokenizer's end of sequence
    ignore_eos: bool = False  # run to max_tokens (benchmarks; vLLM has the same switch)


class TokenGuide(Protocol):
    """Constrained decoding: which tokens may come next (see forgeml.serve.constrained).

    The engine asks `allowed` before sampling each token and reports the sampled token
    through `advance`. A guide is stateful and belongs to one sequence.
    """

    def allowed(self, remaining_tokens: int) -> np.ndarray | None:
        """A bool mask over the vocabulary (numpy, so an engine without torch can use it;
        torch engines wrap it with `torch.from_numpy`), or None when any token may come.

        `remaining_tokens` is how many tokens the sequence may still generate, so a
        guide can steer towards a complete output before the budget runs out.
        """
        ...

    def advance(self, token_id: int) -> None: ...


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    guide: TokenGuide | None = None
    # A LoRA adapter loaded into this engine's model (TransformersEngine.add_adapter);
    # its rows decode in the same batch as the base's. Other engines refuse adapters.
    adapter: str | None = None
    # A vision-language model's images, in prompt order: pixels [3, h, w] float32
    # (models/image_inputs.preprocess), one per grid of image tokens in `prompt_ids`.
    images: list[Any] = field(default_factory=list)


@dataclass
class GenerationChunk:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # generated so far, this chunk included
    error: str | None = None
    unavailable: bool = False  # an "error" because the engine went down (503, not 500)
    # On the last chunk: the prompt's mean log-probability under the model, a drift
    # signal (engine/prompt_score.py); None where the engine does not compute it.
    prompt_logprob: float | None = None


@dataclass
class EngineStats:
    waiting: int = 0  # requests queued, not yet admitted to the batch
    running: int = 0  # sequences in the decoding batch
    tokens_per_second: float = 0.0  # generated tokens/s over the last few seconds


class Engine(ABC):
    """Generates for many requests at once; never blocks the event loop."""

    name: str = "engine"
    max_context: int  # prompt + completion tokens a sequence may hold
    # Whether a vision-language model's requests may carry images (GenerationRequest.images).
    takes_images: bool = False

    @abstractmethod
    async def start(self) -> None:
        """Start background workers; called once from the running event loop."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop workers; requests still running finish with `abort`."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the completion of one request.

        Called synchronously so it can refuse at once: raises `QueueFullError` when
        the engine cannot take more work, before any response is started. Closing the iterator early (a client that went away) aborts the
        sequence and frees its slot.
        """

    @abstractmethod
    def stats(self) -> EngineStats: ...

    def health(self) -> str:
        """ "ready", or why not: "starting", "restarting", "failed", "stopped"."""
        return "ready"
