"""GET /v1/models: OpenAI's model objects, with the fields Mistral's SDK reads too."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCapabilities(BaseModel):
    completion_chat: bool = True
    completion_fim: bool = False
    function_calling: bool = True
    reasoning: bool = True
    fine_tuning: bool = False
    vision: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "forgeml"
    root: str  # the artifact served: model/<sha256 prefix> (adapter/... for an adapter)
    parent: str | None = None  # an adapter's base model, by the id it is served under
    type: Literal["base"] = "base"  # Mistral's discriminator
    name: str
    max_context_length: int
    aliases: list[str] = []
    capabilities: ModelCapabilities = ModelCapabilities()


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
