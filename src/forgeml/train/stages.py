"""Importing this module registers the training stages (see forgeml.core.stages)."""

from forgeml.train import classify, preference, pretrain, rl, sft, tokenizer  # noqa: F401
