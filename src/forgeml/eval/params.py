"""Parameters of the evaluation stages: one typed model per concern, checked up front.

eval.run       EvalParams          suites, reasoning, perplexity, gates, judge
eval.endpoint  EndpointEvalParams  + the endpoint to ask
eval.compare   CompareParams       + endpoints to compare alongside the models
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from forgeml.core.stages import StageParams
from forgeml.eval.gates import GateSpec
from forgeml.eval.judge import DEFAULT_RUBRIC

Effort = Literal["none", "high"]


class EndpointParams(StageParams):
    url: str = Field(description="Base URL of an OpenAI-compatible API, e.g. http://host/v1.")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        default="FORGEML_EVAL_API_KEY",
        description="Environment variable holding the API key (never stored).",
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds per request.")


class JudgeParams(EndpointParams):
    api_key_env: str | None = Field(
        default="FORGEML_JUDGE_API_KEY",
        description="Environment variable holding the judge's API key (never stored).",
    )
    rubric: str = Field(
        default=DEFAULT_RUBRIC, description="How to grade, when a task brings no rubric."
    )


class PerplexityParams(StageParams):
    context: int | None = Field(
        default=None, ge=2, description="Window length in tokens; default min(model's, 1024)."
    )
    stride: int | None = Field(
        default=None, ge=1, description="New tokens scored per window; default context - 1."
    )
    batch_size: int = Field(default=8, ge=1, description="Windows per forward pass.")
    max_tokens: int | None = Field(
        default=None, ge=2, description="Stop after this many tokens (whole documents)."
    )


class SuiteParams(StageParams):
    suites: list[Path] = Field(default_factory=list, description="Task suite JSONL files.")
    reasoning: list[Effort] = Field(
        default_factory=lambda: ["none", "high"],
        min_length=1,
        description="Reasoning efforts to run every task with ('high' where supported).",
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Longest answer generated.")
    batch_size: int = Field(default=8, ge=1, description="Prompts generated together.")
    name: str | None = Field(default=None, description="Name the eval artifact.")
    judge: JudgeParams | None = Field(
        default=None, description="A served model that grades every answer with a rubric."
    )


class EvalParams(SuiteParams):
    perplexity: PerplexityParams = Field(
        default_factory=PerplexityParams,
        description="Windows for held-out perplexity (with a dataset or mixture input).",
    )
    gates: GateSpec | None = Field(
        default=None, description="Gates `forgeml models promote` applies (with forgeml.yaml's)."
    )


class EndpointEvalParams(SuiteParams):
    endpoint: EndpointParams
    reasoning: list[Effort] = Field(default_factory=lambda: ["none"], min_length=1)


class CompareParams(SuiteParams):
    endpoints: list[EndpointParams] = Field(
        default_factory=list, description="Remote models to compare alongside."
    )
    perplexity: PerplexityParams = Field(
        default_factory=PerplexityParams,
        description="Windows for held-out perplexity (with a dataset or mixture input).",
    )


class ClassifierEvalParams(StageParams):
    batch_size: int = Field(default=16, ge=1, le=512, description="Inputs per forward pass.")
    seq_len: int = Field(
        default=1024, ge=8, le=8192, description="Tokens per input; longer ones are cut."
    )
    examples_kept: int = Field(
        default=200, ge=0, le=100_000, description="Per-example rows kept in eval.json."
    )
    gates: GateSpec | None = Field(
        default=None, description="Promotion gates this evaluation carries (as eval.run's)."
    )
    name: str | None = Field(default=None, description="Name the eval artifact.")
