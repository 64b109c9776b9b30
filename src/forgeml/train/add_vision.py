"""`train.add_vision`: a text model given a fresh vision tower, so it can take images.

    forgeml models add-vision support-bot --vision tiny --name support-bot-vl

The output is a `mistral3` vision-language model (models/vision.py): every weight of
the text model as it was, plus a Pixtral-style encoder and projector drawn from the
seed, and the image tokens appended to the vocabulary. Until it is fine-tuned on images
(`forgeml train sft --trainable projector`, then `all`) its image features are noise;
its text answers are the text model's own. `vision.json` records the tower's size and
the text model it came from.
"""

from __future__ import annotations

from pydantic import Field

from forgeml.core.atomic import write_json_atomic
from forgeml.core.context import StageContext
from forgeml.core.stages import StageParams, stage
from forgeml.models.size_table import VISION_SIZES
from forgeml.models.vision import add_vision as build_vision_model
from forgeml.models.vision import save_processor_files, vision_record
from forgeml.train.finetune_common import load_base, quiet_libraries

RECORD = "vision.json"


class AddVisionParams(StageParams):
    vision: str = Field(
        default="tiny",
        description="The vision tower's named size: " + ", ".join(VISION_SIZES) + ".",
    )
    name: str | None = Field(default=None, description="Name the new model.")


@stage(
    "train.add_vision",
    params=AddVisionParams,
    inputs={"model": "model"},
    outputs={"model": "model"},
)
def add_vision(ctx: StageContext, params: AddVisionParams):
    """Give a text model a fresh vision tower and projector (weights from the seed)."""
    text_model, tokenizer = load_base(ctx)
    model, tokenizer = build_vision_model(text_model, tokenizer, params.vision, ctx.seed)
    writer = ctx.new_artifact("model")
    with quiet_libraries():
        model.save_pretrained(writer.path)
    tokenizer.save_pretrained(writer.path)
    save_processor_files(writer.path, model.config)
    base = ctx.inputs["model"]
    write_json_atomic(
        writer.path / RECORD,
        {
            "stage": "train.add_vision",
            "vision": params.vision,
            "seed": ctx.seed,
            "base_model": base.sha256,
            **(vision_record(model.config) or {}),
        },
    )
    writer.meta.update(vision=params.vision, base_model=base.sha256)
    artifact = ctx.commit(writer)
    ctx.name(artifact, params.name)
    ctx.set_metrics(parameters=sum(p.numel() for p in model.parameters()))
    return {"model": artifact}
