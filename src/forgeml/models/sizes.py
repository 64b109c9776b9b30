"""Named sizes of our default model family, built from config with no downloads.

The family is transformers' `mistral4` (`Mistral4Config` / `Mistral4ForCausalLM`): the
text architecture of Mistral Small 4. Every layer has multi-head latent attention (MLA:
queries and keys/values pass through low-rank "LoRA" bottlenecks, each head has a
rotary and a position-free part) and, after the first `first_k_dense_replace` dense
layers, a mixture-of-experts MLP: `num_experts_per_tok` of `n_routed_experts` routed
experts plus `n_shared_experts` always-on experts. Checkpoints are plain Hugging Face
directories, so vLLM, transformers and llama.cpp's converter read them.

    from forgeml.models.sizes import build_config, build_model, count_parameters
    config = build_config("tiny", vocab_size=len(tokenizer))
    model = build_model(config, seed=0)

RoPE (see FACTS.md): always `rope_type: "yarn"`. `factor` is
`max_position_embeddings / original_max_position_embeddings`; our own sizes train at
their full context, so `factor == 1.0` and YaRN is a no-op (no mscale, no llama-4
attention scaling below `max_position_embeddings`). `rope_type: "default"` is broken
for this model in transformers 5.23, and leaving `llama_4_scaling_beta` unset crashes.
Only `small4` keeps the real model's YaRN stretch (8192 trained positions x 128).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, Mistral4Config, Mistral4ForCausalLM
from transformers.utils import logging as hf_logging

from forgeml.core.errors import ForgeError, InputError
from forgeml.models import experts
from forgeml.models.size_table import (
    ALL_SIZE_NAMES,
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SIZES,
    ModelSize,
    text_size_name,
)

# transformers 5.23 ships Mistral4ForCausalLM but leaves `mistral4` out of
# AutoModelForCausalLM's mapping, so `from_pretrained` on our own checkpoints (ours,
# TRL's reference-model reload, lm-eval) would fail. Registering is process-wide.
AutoModelForCausalLM.register(Mistral4Config, Mistral4ForCausalLM, exist_ok=True)

# Ours (experts.py): transformers' grouped_mm with cheaper gathers, which is ~1.5x eager
# on CPU at the small size; batched_mm materialises every expert's weights per token and
# exhausts memory on CPU (FACTS.md).
DEFAULT_EXPERTS_IMPLEMENTATION = experts.NAME


_CONFIG_FIELDS = {field.name for field in dataclasses.fields(Mistral4Config)}
_RUNTIME_OPTIONS = {"experts_implementation", "attn_implementation"}


def _rope_parameters(size: ModelSize, max_position_embeddings: int) -> dict[str, Any]:
    original = size.rope_original_max_position_embeddings or max_position_embeddings
    original = min(original, max_position_embeddings)  # never shrink: factor >= 1
    return {
        "rope_type": "yarn",
        "rope_theta": size.rope_theta,
        "factor": max_position_embeddings / original,
        "original_max_position_embeddings": original,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": 0.1,
    }


def build_config(
    size: str | ModelSize,
    vocab_size: int,
    max_position_embeddings: int | None = None,
    **overrides: Any,
) -> Mistral4Config:
    """A `Mistral4Config` for a named size (or a `ModelSize`), with any field overridden.

    `vocab_size` comes from the tokenizer, so it has no default. `overrides` may name
    any `Mistral4Config` field (e.g. `num_hidden_layers=3`, `bos_token_id=...`) or the
    runtime choices `experts_implementation` / `attn_implementation`. A vision-language
    size ("tiny-vl") gives its text model's config (the tower is added by add_vision).
    """
    if isinstance(size, str):
        if text_size_name(size) not in SIZES:
            raise InputError(
                f"unknown model size {size!r}",
                field="size",
                hint="choose one of: " + ", ".join(ALL_SIZE_NAMES),
            )
        size = SIZES[text_size_name(size)]
    unknown = sorted(set(overrides) - _CONFIG_FIELDS - _RUNTIME_OPTIONS)
    if unknown:
        raise InputError(
            f"unknown model setting(s): {', '.join(unknown)}",
            field="model",
            hint="settings are Mistral4Config field names, e.g. hidden_size, num_hidden_layers",
        )
    if vocab_size < 1:
        raise InputError(f"vocab_size must be positive, got {vocab_size}", field="vocab_size")
    max_positions = max_position_embeddings or size.max_position_embeddings
    shape = {
        field.name: getattr(size, field.name)
        for field in dataclasses.fields(ModelSize)
        if field.name in _CONFIG_FIELDS
    }
    values: dict[str, Any] = {
        **shape,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_positions,
        "num_key_value_heads": size.num_attention_heads,  # MLA: every head has its own k/v
        "rope_parameters": _rope_parameters(size, max_positions),
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": False,
        "experts_implementation": DEFAULT_EXPERTS_IMPLEMENTATION,
        **overrides,
    }
    experts, top_k = values["n_routed_experts"], values["num_experts_per_tok"]
    if not 1 <= top_k <= experts:
        raise InputError(
            f"num_experts_per_tok ({top_k}) must be between 1 and n_routed_experts ({experts})",
            field="num_experts_per_tok",
        )
    try:
        return Mistral4Config(**values)
    except (StrictDataclassError, TypeError, ValueError) as error:
        raise InputError(f"invalid model configuration: {error}", field="model") from error


def build_model(config: Mistral4Config, seed: int) -> Mistral4ForCausalLM:
    """A freshly initialised model; the same config and seed give identical weights.

    The global RNG is left as it was, so building a model never shifts the data order
    or dropout of whoever called us.
    """
    if config._experts_implementation == "batched_mm" and not torch.cuda.is_available():
        raise ForgeError(
            "experts_implementation 'batched_mm' exhausts memory on CPU",
            hint=f"use '{experts.NAME}' (the default) or 'grouped_mm' on CPU",
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Mistral4ForCausalLM(config)


def load_model(path: str | Path, dtype: torch.dtype | str | None = None) -> torch.nn.Module:
    """Load any local Hugging Face causal-LM directory (never the hub), a vision-language
    `mistral3` one (vision.py) included."""
    if _model_type(Path(path)) == "mistral3":
        from transformers import AutoModelForImageTextToText

        from forgeml.models.vision import encode_images_separately

        model = load_pretrained(path, AutoModelForImageTextToText, "a vision-language model", dtype)
        return encode_images_separately(model)
    return load_pretrained(path, AutoModelForCausalLM, "a causal language model", dtype)


def load_pretrained(
    path: str | Path,
    auto_class: Any,
    what: str,
    dtype: Any = None,
    ignore_mismatched_sizes: bool = False,
    **overrides: Any,
) -> torch.nn.Module:
    """A local Hugging Face directory through `auto_class`, its config changed by
    `overrides` (a classifier's labels over a causal LM's weights)."""
    directory = Path(path)
    if not directory.is_dir():
        raise InputError("model directory not found", path=directory)
    if not (directory / "config.json").is_file():
        raise InputError(
            "not a Hugging Face model directory: config.json is missing",
            path=directory,
            hint="point at a directory written by save_pretrained (config.json + *.safetensors)",
        )
    # No "Loading weights" bar: loading is a step of a stage or of `serve`, which report
    # their own progress (and a --json caller's terminal stays clean).
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # Our experts forward for our family (a saved config does not record the choice).
    options = (
        {"experts_implementation": experts.NAME}
        if _model_type(directory) in ("mistral4", "mistral3")
        else {}
    )
    try:
        config = None
        if overrides:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
            config.update(overrides)
        model = auto_class.from_pretrained(
            directory,
            local_files_only=True,
            dtype=dtype,
            config=config,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            **options,
        )
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise InputError(
            f"cannot load {what} from this directory: {error}", path=directory
        ) from error
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    # transformers records the folder in each sub-config (a vision-language model's
    # text_config, vision_config), and save_pretrained writes it: the same model saved
    # from another folder would give other bytes.
    for name in ("text_config", "vision_config"):
        sub = getattr(model.config, name, None)
        if sub is not None:
            sub._name_or_path = ""
    return model


def _model_type(directory: Path) -> str | None:
    try:
        return json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # from_pretrained reports what is wrong with the file


def _attention_parameters(config: Mistral4Config) -> int:
    hidden, heads = config.hidden_size, config.num_attention_heads
    qk_head = config.qk_nope_head_dim + config.qk_rope_head_dim
    bias = 1 if config.attention_bias else 0
    if config.q_lora_rank is None:
        query = hidden * heads * qk_head
    else:  # q_a_proj, q_a_layernorm, q_b_proj
        rank = config.q_lora_rank
        query = (hidden + bias) * rank + rank + rank * heads * qk_head
    kv_a = (hidden + bias) * (config.kv_lora_rank + config.qk_rope_head_dim)
    kv_norm = config.kv_lora_rank
    kv_b = config.kv_lora_rank * heads * (config.qk_nope_head_dim + config.v_head_dim)
    output = heads * config.v_head_dim * hidden + bias * hidden
    return query + kv_a + kv_norm + kv_b + output


def _parameter_groups(config: Mistral4Config) -> dict[str, int]:
    """Parameter counts by role; shared by `count_parameters` and the FLOP estimate."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    dense_layers = min(config.first_k_dense_replace or 0, layers)
    moe_layers = layers - dense_layers
    expert = 3 * hidden * config.moe_intermediate_size  # gate, up, down
    experts = config.n_routed_experts
    return {
        "embedding": config.vocab_size * hidden,
        "lm_head": 0 if config.tie_word_embeddings else config.vocab_size * hidden,
        "attention": layers * _attention_parameters(config),
        "norms": layers * 2 * hidden + hidden,
        "dense_mlp": dense_layers * 3 * hidden * config.intermediate_size,
        "router": moe_layers * experts * hidden,
        "shared_experts": moe_layers * config.n_shared_experts * expert,
        "routed_experts": moe_layers * experts * expert,
        "idle_experts": moe_layers * (experts - config.num_experts_per_tok) * expert,
    }


def count_parameters(config: Mistral4Config) -> tuple[int, int]:
    """(total, active per token), from the config alone, so 119B costs no memory.

    Active = everything a token touches: all weights except the routed experts it is
    not sent to. The embedding and lm_head count, as in Mistral's and Mixtral's own
    "active" figures.
    """
    groups = _parameter_groups(config)
    idle = groups.pop("idle_experts")
    total = sum(groups.values())
    return total, total - idle


def training_flops_per_token(config: Mistral4Config, seq_len: int) -> float:
    """Training FLOPs per token: 6 x active matmul params + 6 x L x H x (d_qk + d_v) x T.

    The first term is the usual 2 FLOPs per multiply-add x 3 for forward + backward,
    over the active parameters minus the input embedding (a lookup, not a matmul). The
    second is attention itself (QK^T scores and the weighted sum of V, per head, over
    `seq_len` keys), counted over the full sequence without a causal discount, as
    PaLM's MFU convention does; a causal kernel does about half of it.
    """
    groups = _parameter_groups(config)
    _, active = count_parameters(config)
    qk_head = config.qk_nope_head_dim + config.qk_rope_head_dim
    attention = (
        6 * config.num_hidden_layers * config.num_attention_heads
        * (qk_head + config.v_head_dim) * seq_len
    )  # fmt: skip
    return 6.0 * (active - groups["embedding"]) + float(attention)
