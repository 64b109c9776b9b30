"""Which parts of a vision-language model a fine-tuning run trains.

A text model given a fresh vision tower (`forgeml models add-vision`) is best taught in
two runs, as LLaVA and Pixtral were: first the projector alone (`trainable: projector`),
so the random tower's features are mapped into the text model's embedding space without
disturbing the text weights; then everything (`all`, the default). `vision` trains the
tower and the projector and keeps the text model as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml.core.errors import InputError
from forgeml.models.vision import is_vision_language

PARTS = {
    "projector": ("multi_modal_projector",),
    "vision": ("multi_modal_projector", "vision_tower"),
}


def check_trainable(model: Any, trainable: str) -> None:
    """Refuse a choice of parts the model does not have (before any data is read)."""
    if trainable != "all" and not is_vision_language(model.config):
        raise InputError(
            f"trainable {trainable!r} needs a vision-language model; this one is text only",
            field="trainable",
        )


def freeze_for(model: Any, trainable: str) -> list[str]:
    """Freeze every weight outside `trainable`'s parts; returns the parts trained."""
    check_trainable(model, trainable)
    if trainable == "all":
        return ["all"]
    if hasattr(model, "peft_config"):
        raise InputError(
            f"trainable {trainable!r} chooses whole parts; LoRA trains adapters instead",
            field="trainable",
            hint="drop lora, or use trainable: all with lora",
        )
    parts = PARTS[trainable]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(f".{part}." in f".{name}" for part in parts))
    return list(parts)


def load_checkpoints_through_from_pretrained(trainer: Any) -> None:
    """A vision-language model's checkpoints are read back the way `from_pretrained` reads
    them, not with the Trainer's raw `load_state_dict(strict=False)`.

    Why: `save_pretrained` writes Mistral3's weights under their original checkpoint
    names (`language_model.model.*`, `vision_tower.*`), which differ from the module names
    (`model.language_model.*`); the Trainer (transformers 5.25) loads them with no renaming
    and strict=False, so a resume silently restarted from the base weights. Measured by
    tests/train/test_vision_sft.py (resume == a straight run, byte for byte).
    """
    from peft import PeftModel

    from forgeml.models.sizes import load_model

    model = trainer.model
    if isinstance(model, PeftModel) or not is_vision_language(model.config):
        return  # adapters and text models load by their own names

    def load(checkpoint: str | Path) -> None:
        saved = load_model(Path(checkpoint), dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    trainer._load_from_checkpoint = lambda checkpoint, model=None: load(checkpoint)
    trainer._load_best_model = lambda: load(trainer.state.best_model_checkpoint)
