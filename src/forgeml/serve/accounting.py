"""What every generation request leaves behind: metrics and one request-log record."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from forgeml.monitor.signals import answer_labels, prompt_signals, token_counter
from forgeml.serve.engine.base import GenerationChunk
from forgeml.serve.request_log import RequestRecord
from forgeml.serve.served_models import ServedModel


@dataclass
class Accounting:
    """Collects a request's numbers while it runs; `close` records them once."""

    request: Request
    served: ServedModel
    endpoint: str
    id: str
    stream: bool
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    closed: bool = False
    # What drift signals describe (forgeml.monitor.signals); the text itself is not kept.
    user_text: str = ""
    turns: int = 1
    json_mode: bool = False  # the request asked for JSON: usage reports how often it parsed
    prompt_logprob: float | None = None  # from the engine's prefill, where it computes one
    label_fields: dict[str, set[str]] = field(default_factory=dict)  # the schema's enums
    predicted_labels: dict[str, Any] | None = None  # a classifier's answer, as labels

    def token_arrived(self, chunk: GenerationChunk | None = None) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        if chunk is not None and chunk.prompt_logprob is not None:
            self.prompt_logprob = chunk.prompt_logprob

    def close(
        self,
        status: int,
        error: str | None,
        completion_tokens: int,
        finish_reasons: list[str],
        prompt: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
    ) -> None:
        if self.closed:
            return
        self.closed = True
        state = self.request.app.state
        ttft = None if self.first_token is None else self.first_token - self.started
        state.metrics.completion(self.served.id, ttft, self.prompt_tokens, completion_tokens)
        caller = getattr(self.request.state, "caller", None)
        route = getattr(self.request.state, "route", None)  # traffic.py: which version
        if route is not None:
            state.metrics.version_usage(route, self.prompt_tokens, completion_tokens)
        record = RequestRecord(
            id=self.id,
            endpoint=self.endpoint,
            model=self.served.id,
            artifact=self.served.artifact_ref,
            api_key=caller.prefix if caller else "",
            api_key_id=caller.key_id if caller else None,
            status=status,
            stream=self.stream,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 2),
            ttft_ms=None if ttft is None else round(ttft * 1000, 2),
            finish_reasons=finish_reasons,
            error=error,
            version=route.version if route is not None else None,
            alias=route.alias if route is not None else None,
        )
        if status == 200:
            record.signals = prompt_signals(
                self.user_text,
                self.turns,
                token_counter(self.served.tokenizer),
                language=state.settings.language_signal,
            )
            if self.prompt_logprob is not None:
                record.signals["prompt_logprob"] = self.prompt_logprob
            for reason in finish_reasons:
                state.metrics.finish_reasons.labels(self.served.id, reason or "unknown").inc()
            if self.json_mode:
                record.signals["json_valid"] = all(_parses(text) for text in outputs or [])
                valid = str(record.signals["json_valid"]).lower()
                state.metrics.json_answers.labels(self.served.id, valid).inc()
            if self.predicted_labels:
                record.signals["labels"] = self.predicted_labels
            if self.label_fields and outputs:
                labels = answer_labels(outputs[0], self.label_fields)
                if labels:
                    record.signals["labels"] = labels
        if state.settings.log_prompts:
            record.request, record.response = prompt, outputs
        state.request_log.record(record)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
