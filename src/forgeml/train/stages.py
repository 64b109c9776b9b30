"""Importing this module registers the training stages (see forgeml.core.stages)."""

from forgeml.train import (  # noqa: F401
    classify,
    from_checkpoint,
    preference,
    pretrain,
    rl,
    sft,
    tokenizer,
)
