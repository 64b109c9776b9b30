"""`forgeml models sizes`: the named model sizes, their parameters and training cost.

    forgeml models sizes
    forgeml --json models sizes --seq-len 4096
    forgeml models sizes --vision        # the vision towers `models add-vision` adds

Counts come from the config alone (forgeml.models.sizes), so the 119B shape costs no
memory. Each size is shown with the vocabulary its description names; `--vocab-size`
puts every size on one vocabulary instead.
"""

from __future__ import annotations

import typer

from forgeml.cli.output import emit, table
from forgeml.models.size_table import VISION_LANGUAGE_SIZES, typical_vocab


def _human(value: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def describe_sizes(vocab_size: int | None = None, seq_len: int = 2048) -> list[dict]:
    """One row per size: shape, parameters (total, active) and training FLOPs per token."""
    # Imported here: forgeml.models loads torch and transformers, which `--help` should not.
    from forgeml.models.sizes import (
        SIZES,
        build_config,
        count_parameters,
        training_flops_per_token,
    )

    rows = []
    names = [*SIZES, *VISION_LANGUAGE_SIZES]
    for name in names:
        vl = VISION_LANGUAGE_SIZES.get(name)
        size = SIZES[vl.text if vl else name]
        # A vision-language model's vocabulary has the three image tokens too.
        vocab = (vocab_size or typical_vocab(name)) + (3 if vl else 0)
        config = build_config(name, vocab_size=vocab)
        context = min(seq_len, size.max_position_embeddings)
        total, active = count_parameters(config)
        image_path = _image_path_parameters(vl.vision, size.hidden_size) if vl else 0
        rows.append(
            {
                "size": name,
                "description": vl.description if vl else size.description,
                "vision": vl.vision if vl else None,
                "hidden_size": size.hidden_size,
                "layers": size.num_hidden_layers,
                "routed_experts": size.n_routed_experts,
                "experts_per_token": size.num_experts_per_tok,
                "shared_experts": size.n_shared_experts,
                "max_positions": size.max_position_embeddings,
                "vocab_size": vocab,
                "parameters": total + image_path,
                "active_parameters": active + image_path,
                "seq_len": context,
                # Text tokens; an image's tokens also pass through the tower.
                "training_flops_per_token": training_flops_per_token(config, context),
            }
        )
    return rows


def _tower_parameters(size) -> int:
    """A vision tower's parameters, counted on the meta device (no memory)."""
    import torch
    from transformers.models.pixtral.modeling_pixtral import PixtralVisionModel

    from forgeml.models.vision import build_vision_config

    with torch.device("meta"):
        tower = PixtralVisionModel(build_vision_config(size))
    return sum(p.numel() for p in tower.parameters())


def _image_path_parameters(vision: str, text_hidden: int) -> int:
    """The tower's parameters plus the projector's: an RMS norm, the 2x2 patch merger and
    two linear layers, without biases (add_vision's)."""
    from forgeml.models.size_table import VISION_SIZES

    size = VISION_SIZES[vision]
    hidden, merged = size.hidden_size, size.hidden_size * size.spatial_merge_size**2
    projector = hidden + merged * hidden + hidden * text_hidden + text_hidden * text_hidden
    return _tower_parameters(size) + projector


def describe_vision_sizes() -> list[dict]:
    """One row per vision tower: shape, image geometry and parameters (counted on the
    meta device: no memory)."""
    from forgeml.models.size_table import VISION_SIZES

    rows = []
    for name, size in VISION_SIZES.items():
        token = size.patch_size * size.spatial_merge_size
        side = -(-size.image_size // token)  # image tokens a side at the largest image
        rows.append(
            {
                "vision": name,
                "description": size.description,
                "layers": size.num_hidden_layers,
                "hidden_size": size.hidden_size,
                "patch_size": size.patch_size,
                "image_size": size.image_size,
                "pixels_per_token": token,
                "max_image_tokens": side * side,
                "parameters": _tower_parameters(size),
            }
        )
    return rows


def _vision_table(ctx: typer.Context) -> None:
    rows = describe_vision_sizes()
    emit(
        ctx,
        rows,
        lambda: table(
            None,
            ["vision", "layers", "hidden", "patch", "image px", "px/token", "max tokens", "params"],
            [
                [r["vision"], r["layers"], r["hidden_size"], r["patch_size"], r["image_size"],
                 r["pixels_per_token"], r["max_image_tokens"], _human(r["parameters"])]
                for r in rows
            ],
        ),
    )  # fmt: skip


def sizes(
    ctx: typer.Context,
    vocab_size: int | None = typer.Option(
        None, "--vocab-size", help="Vocabulary for every size (default: each size's own)."
    ),
    seq_len: int = typer.Option(
        2048, "--seq-len", help="Sequence length for the attention FLOPs (capped per size)."
    ),
    vision: bool = typer.Option(
        False, "--vision", help="List the vision towers (`models add-vision --vision NAME`)."
    ),
) -> None:
    """List the model sizes with total/active parameters and training FLOPs per token."""
    if vision:
        _vision_table(ctx)
        return
    rows = describe_sizes(vocab_size, seq_len)
    emit(
        ctx,
        rows,
        lambda: table(
            None,
            ["size", "layers", "hidden", "experts", "vocab", "params", "active", "train FLOPs/token", "at seq"],
            [
                [
                    r["size"],
                    r["layers"],
                    r["hidden_size"],
                    f"{r['experts_per_token']}/{r['routed_experts']}+{r['shared_experts']}",
                    _human(r["vocab_size"]),
                    _human(r["parameters"]),
                    _human(r["active_parameters"]),
                    _human(r["training_flops_per_token"]),
                    r["seq_len"],
                ]
                for r in rows
            ],
        ),
    )  # fmt: skip
