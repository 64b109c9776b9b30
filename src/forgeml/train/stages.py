"""Importing this module registers the training stages (see forgeml.core.stages)."""

from forgeml.train import (  # noqa: F401
    add_vision,
    classify,
    from_checkpoint,
    preference,
    pretrain,
    rl,
    sft,
    tokenizer,
)
