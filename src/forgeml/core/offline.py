"""Offline by default: switch off every hub download and telemetry path we know of.

Set as defaults (a user may still override them on purpose) before transformers,
datasets or huggingface_hub are imported anywhere in forgeml.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "SCARF_NO_ANALYTICS": "true",
    "VLLM_NO_USAGE_STATS": "1",
}


def apply_offline_defaults() -> None:
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
