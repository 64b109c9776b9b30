"""Classify texts or conversations with a served classifier model.

The request's inputs go through the model's engine in one call (batched inside); the
scores are per label set, as Mistral returns them. Each answered request is logged like
a completion (tokens, latency, key) with the first input's predicted labels as its
`labels` signal, so `forgeml monitor drift` watches the label mix of production traffic.
Inputs are not kept unless `serving.log_prompts` is on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from forgeml.core.errors import InputError
from forgeml.models.classifier_config import decide
from forgeml.serve.accounting import Accounting
from forgeml.serve.chat.prompt import refuse_control_tokens, request_message
from forgeml.serve.classifications.protocol import (
    MAX_INPUT_CHARS,
    MAX_INPUTS,
    ChatClassificationRequest,
    ClassificationRequest,
    ClassificationResponse,
    ClassificationUsage,
    Conversation,
    TargetResult,
)
from forgeml.serve.errors import APIError
from forgeml.serve.served_models import ServedModel
from forgeml.serve.streaming import completion_id

if TYPE_CHECKING:  # the classifier engine (and torch) load only with a classifier
    from forgeml.models.classifier import HeadLayout


@dataclass
class Classified:
    """One request's scores: per input, per label set, per label."""

    id: str
    model: str  # the name the request was answered as
    scores: list[dict[str, dict[str, float]]]
    layout: HeadLayout
    tokens: int


class ClassificationService:
    def __init__(self, app_state: Any) -> None:
        self.state = app_state

    async def texts(self, body: ClassificationRequest, request: Request) -> ClassificationResponse:
        inputs = [body.input] if isinstance(body.input, str) else body.input
        return _response(await self.classify_texts(body.model, inputs, request))

    async def classify_texts(self, model: str, inputs: list[str], request: Request) -> Classified:
        for index, text in enumerate(inputs):
            _check_length(text, f"input[{index}]")
        return await self._classify(model, inputs, "\n".join(inputs), request)

    async def chats(
        self, body: ChatClassificationRequest, request: Request
    ) -> ClassificationResponse:
        conversations = body.input if isinstance(body.input, list) else [body.input]
        texts = [_rendered(c, f"input[{i}]") for i, c in enumerate(conversations)]
        users = [m.content for c in conversations for m in c.messages if isinstance(m.content, str)]
        return _response(await self._classify(body.model, texts, "\n".join(users), request))

    async def _classify(
        self, model: str, texts: list[str], user_text: str, request: Request
    ) -> Classified:
        started = time.perf_counter()
        if not texts or len(texts) > MAX_INPUTS:
            raise InputError(f"give 1 to {MAX_INPUTS} inputs; got {len(texts)}", field="input")
        served: ServedModel = await self.state.traffic.get(model, request)
        request.state.model = served.id
        engine = served.engine
        if engine.name != "classifier":  # not isinstance: that would import torch
            raise APIError(
                400,
                f"{served.id} is not a classifier; train one with `forgeml train classify` "
                "(or a classifier fine-tuning job)",
                param="model",
                code="model_not_classifier",
            )
        cid = completion_id("clf")
        tokens = sum(engine.token_counts(texts))
        accounting = Accounting(
            request, served, "classifications", cid, False, tokens, started, user_text=user_text
        )
        try:
            scores = await engine.classify(texts)
        except BaseException as error:
            accounting.close(500, type(error).__name__, 0, [])
            raise
        accounting.token_arrived()
        labels = decide(scores[0], engine.classifier.layout)
        accounting.predicted_labels = {  # drift signals are strings: a label set's value
            name: value if isinstance(value, str) else ",".join(value) or "(none)"
            for name, value in labels.items()
        }
        accounting.close(200, None, 0, ["classified"], outputs=None)
        answered_as = request.state.route.answered_as
        return Classified(cid, answered_as, scores, engine.classifier.layout, tokens)


def _response(classified: Classified) -> ClassificationResponse:
    return ClassificationResponse(
        id=classified.id,
        model=classified.model,
        results=[
            {name: TargetResult(scores=values) for name, values in row.items()}
            for row in classified.scores
        ],
        usage=ClassificationUsage(prompt_tokens=classified.tokens, total_tokens=classified.tokens),
    )


def _check_length(text: str, field: str) -> None:
    if not text.strip():
        raise InputError("empty text", field=field)
    if len(text) > MAX_INPUT_CHARS:
        raise InputError(
            f"{len(text):,} characters; at most {MAX_INPUT_CHARS:,} an input", field=field
        )


def _rendered(conversation: Conversation, field: str) -> str:
    messages = []
    for index, message in enumerate(conversation.messages):
        data = request_message(message.model_dump(exclude_none=True))
        if isinstance(data.get("content"), list):  # text parts
            data["content"] = "".join(
                part.get("text", "") for part in data["content"] if isinstance(part, dict)
            )
        _check_length(data.get("content") or " ", f"{field}.messages[{index}].content")
        messages.append(data)
    refuse_control_tokens(messages, [])
    from forgeml.train.classify_data import classification_input  # it loads pyarrow

    return classification_input(messages)
