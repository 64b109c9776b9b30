"""POST /v1/completions: OpenAI's legacy text completion, field by field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeml.serve.chat.protocol import MAX_SEED, StreamOptions, Usage


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`, the kinds llguidance compiles: one of them is set."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    json_schema: dict | str | None = Field(None, alias="json")
    json_object: bool | None = None
    grammar: str | None = None  # Lark (llguidance's dialect, `<[id]>` for special tokens)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]  # token ids are used as they are
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says
    # vLLM's extensions, so forgeml can stand where a vLLM server does (engine/vllm_proxy.py):
    return_token_ids: bool = False  # each choice carries its token ids (the prompt's first)
    structured_outputs: StructuredOutputs | None = None  # constrain the completion


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: None = None
    token_ids: list[int] | None = None  # with return_token_ids only
    prompt_token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
