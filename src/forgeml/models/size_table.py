"""The named model sizes (shapes only) and the control-token ids they reserve.

Plain data, no torch: `forgeml data assess` checks a size name and `plan` reads shapes
without loading the model code (sizes.py builds configs and models from these).
"""

from __future__ import annotations

from dataclasses import dataclass

# Ids of the control tokens our tokenizer reserves first (see tokenizer.py).
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class ModelSize:
    """The shape of one named size. Field names are `Mistral4Config`'s."""

    description: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int  # dense MLP of the first `first_k_dense_replace` layers
    moe_intermediate_size: int  # per expert
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    first_k_dense_replace: int
    q_lora_rank: int | None  # None: plain query projection, no bottleneck
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    # Positions the model was trained on before YaRN stretching; None = no stretch.
    rope_original_max_position_embeddings: int | None = None


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(
        description="Unit tests: ~0.3M params with a 1k vocab; a training step takes milliseconds on CPU.",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=192,
        moe_intermediate_size=64,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
        max_position_embeddings=1024,
    ),
    "mini": ModelSize(
        description="CPU demos in minutes: 10.3M params (6.8M active) with an 8k vocab, ~2k tokens/s on 2 cores.",
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        intermediate_size=512,
        moe_intermediate_size=128,
        n_routed_experts=16,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=128,
        kv_lora_rank=64,
        qk_rope_head_dim=16,
        qk_nope_head_dim=16,
        v_head_dim=32,
        max_position_embeddings=2048,
    ),
    "small": ModelSize(
        description="Longer CPU runs or one GPU: 46.4M params (15.5M active) with an 8k vocab.",
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        intermediate_size=1024,
        moe_intermediate_size=192,
        n_routed_experts=32,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=192,
        kv_lora_rank=96,
        qk_rope_head_dim=32,
        qk_nope_head_dim=32,
        v_head_dim=64,
        max_position_embeddings=2048,
    ),
    "medium": ModelSize(
        description="One GPU node: ~1.0B params (~0.25B active) with a 32k vocab.",
        hidden_size=1024,
        num_hidden_layers=18,
        num_attention_heads=16,
        intermediate_size=2816,
        moe_intermediate_size=512,
        n_routed_experts=32,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=384,
        kv_lora_rank=128,
        qk_rope_head_dim=32,
        qk_nope_head_dim=64,
        v_head_dim=64,
        max_position_embeddings=4096,
    ),
    "large": ModelSize(
        description="A GPU cluster: ~8.7B params (~1.1B active) with a 32k vocab.",
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        intermediate_size=6144,
        moe_intermediate_size=768,
        n_routed_experts=64,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=768,
        kv_lora_rank=256,
        qk_rope_head_dim=64,
        qk_nope_head_dim=64,
        v_head_dim=128,
        max_position_embeddings=8192,
    ),
    # Mistral4Config's defaults, which mirror mistralai/Mistral-Small-4-119B-2603.
    "small4": ModelSize(
        description="Mistral Small 4's text shape: 119B params, 128 experts top-4 + 1 shared (~6.6B active with a 131k vocab).",
        hidden_size=4096,
        num_hidden_layers=36,
        num_attention_heads=32,
        intermediate_size=12288,
        moe_intermediate_size=2048,
        n_routed_experts=128,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=0,
        q_lora_rank=1024,
        kv_lora_rank=256,
        qk_rope_head_dim=64,
        qk_nope_head_dim=64,
        v_head_dim=128,
        max_position_embeddings=1048576,
        rope_original_max_position_embeddings=8192,
    ),
}


@dataclass(frozen=True)
class VisionSize:
    """A Pixtral-style vision encoder in front of a text model (Mistral 3 / Small 4's
    image path). Field names are `PixtralVisionConfig`'s, except `spatial_merge_size`
    (the `Mistral3Config` projector's: each side of an image token covers
    `patch_size * spatial_merge_size` pixels)."""

    description: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    patch_size: int
    image_size: int  # the longest side an image is resized to fit, in pixels
    spatial_merge_size: int = 2
    rope_theta: float = 10000.0


VISION_SIZES: dict[str, VisionSize] = {
    "tiny": VisionSize(
        description="Tests and CPU demos: ~0.1M params, 8-pixel patches, images up to 128 px.",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=16,
        patch_size=8,
        image_size=128,
    ),
    "small": VisionSize(
        description="CPU experiments: ~8.5M params, 14-pixel patches, images up to 448 px.",
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=8,
        num_attention_heads=8,
        head_dim=32,
        patch_size=14,
        image_size=448,
    ),
    # PixtralVisionConfig's defaults as Mistral Small 3.1 and 4 ship them.
    "pixtral": VisionSize(
        description="Mistral Small 4's encoder: ~0.4B params, 14-pixel patches, images up to 1540 px.",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        head_dim=64,
        patch_size=14,
        image_size=1540,
        rope_theta=10000.0,
    ),
}
"""Named vision encoders; a vision-language model is a text size plus one of these
(`forgeml models add-vision --vision tiny`)."""


@dataclass(frozen=True)
class VisionLanguageSize:
    """A named vision-language size: a text size with a vision tower in front."""

    description: str
    text: str  # a key of SIZES
    vision: str  # a key of VISION_SIZES


VISION_LANGUAGE_SIZES: dict[str, VisionLanguageSize] = {
    "tiny-vl": VisionLanguageSize(
        description="Tests and CPU demos with images: the `tiny` text model and tower.",
        text="tiny",
        vision="tiny",
    ),
    "small-vl": VisionLanguageSize(
        description="CPU experiments with images: the `small` text model and tower.",
        text="small",
        vision="small",
    ),
    "small4-vl": VisionLanguageSize(
        description="Mistral Small 4's shape: its text model and Pixtral encoder.",
        text="small4",
        vision="pixtral",
    ),
}
"""Pre-training a `-vl` size trains its text model on the mixture's text, then gives it a
fresh tower (what `forgeml models add-vision` does to any text model): a tower learns
from images, so it is trained in SFT on image chats (projector first, then everything)."""

ALL_SIZE_NAMES: tuple[str, ...] = (*SIZES, *VISION_LANGUAGE_SIZES)


def check_size_name(name: str) -> str:
    """`name` if it is a named size (text or `-vl`); else the ValueError a parameter
    validator turns into a field error."""
    if name not in ALL_SIZE_NAMES:
        raise ValueError(f"unknown size; choose one of {', '.join(ALL_SIZE_NAMES)}")
    return name


def text_size_name(name: str) -> str:
    """The text size a size name stands for ("tiny-vl" -> "tiny"); other names unchanged."""
    vl = VISION_LANGUAGE_SIZES.get(name)
    return vl.text if vl is not None else name


# The vocabulary each text size is usually paired with (see the descriptions), for
# counting parameters before a tokenizer exists (tokenizers are trained per mixture).
TYPICAL_VOCAB = {
    "tiny": 1024,
    "mini": 8192,
    "small": 8192,
    "medium": 32768,
    "large": 32768,
    "small4": 131072,
}


def typical_vocab(name: str) -> int:
    """The vocabulary a size's description assumes (a `-vl` size: its text size's)."""
    return TYPICAL_VOCAB[text_size_name(name)]
