from __future__ import annotations

import math

import pytest
import torch

from forgeml.core.errors import ForgeError, InputError
from forgeml.models import experts
from forgeml.models.sizes import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SIZES,
    build_config,
    build_model,
    count_parameters,
    load_model,
    training_flops_per_token,
)


@pytest.mark.parametrize(("size", "vocab_size"), [("tiny", 1000), ("mini", 8192), ("small", 8192)])
def test_count_parameters_matches_the_real_model(size: str, vocab_size: int) -> None:
    config = build_config(size, vocab_size=vocab_size)
    model = build_model(config, seed=0)
    total, active = count_parameters(config)
    assert total == sum(p.numel() for p in model.parameters())
    # Active = total minus the routed experts a token skips, counted from the tensors.
    expert_params = sum(
        p.numel() for name, p in model.named_parameters() if ".mlp.experts." in name
    )
    idle_share = 1 - config.num_experts_per_tok / config.n_routed_experts
    assert active == total - round(expert_params * idle_share)


def test_facts_shapes_keep_their_measured_sizes() -> None:
    assert count_parameters(build_config("mini", 8192))[0] == pytest.approx(10.3e6, rel=0.01)
    total, active = count_parameters(build_config("small", 8192))
    assert total == pytest.approx(46.4e6, rel=0.01)
    assert active == pytest.approx(15.5e6, rel=0.01)


def test_small4_is_mistral_small_4_without_allocating() -> None:
    config = build_config("small4", vocab_size=131072)
    total, active = count_parameters(config)
    assert total == pytest.approx(119e9, rel=0.01)
    assert 6e9 < active < 7e9
    assert (config.n_routed_experts, config.num_experts_per_tok, config.n_shared_experts) == (
        128,
        4,
        1,
    )
    assert config.rope_parameters["factor"] == 128.0
    assert config.rope_parameters["original_max_position_embeddings"] == 8192


def test_sizes_grow_and_describe_themselves() -> None:
    totals = [count_parameters(build_config(name, 32768))[0] for name in SIZES]
    assert totals == sorted(totals)
    assert all(spec.description for spec in SIZES.values())


def test_tiny_trains_with_finite_falling_loss() -> None:
    config = build_config("tiny", vocab_size=512)
    model = build_model(config, seed=0)
    assert model.config._experts_implementation == experts.NAME
    batch = torch.randint(0, 512, (4, 64), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < losses[0]


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    config = build_config("tiny", vocab_size=300)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_model(config, seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    second = build_model(config, seed=7).state_dict()
    other = build_model(config, seed=8).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_yarn_is_a_no_op_at_our_sizes() -> None:
    config = build_config("tiny", vocab_size=300, max_position_embeddings=4096)
    rope = config.rope_parameters
    assert rope["rope_type"] == "yarn"
    assert rope["factor"] == 1.0
    assert rope["original_max_position_embeddings"] == config.max_position_embeddings == 4096
    rotary = build_model(config, seed=0).model.rotary_emb
    dim = config.qk_rope_head_dim
    plain = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    assert rotary.attention_scaling == 1.0
    torch.testing.assert_close(rotary.inv_freq, plain)


def test_build_config_overrides_and_token_ids() -> None:
    config = build_config(
        "tiny", vocab_size=300, num_hidden_layers=3, experts_implementation="eager"
    )
    assert config.num_hidden_layers == 3
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        BOS_ID,
        EOS_ID,
        PAD_ID,
    )
    assert build_model(config, seed=0).config._experts_implementation == "eager"


@pytest.mark.parametrize(
    ("args", "overrides", "field"),
    [
        (("huge", 300), {}, "size"),
        (("tiny", 300), {"hiden_size": 8}, "model"),
        (("tiny", 300), {"num_experts_per_tok": 99}, "num_experts_per_tok"),
        (("tiny", 0), {}, "vocab_size"),
        (("tiny", 300), {"hidden_size": "wide"}, "model"),
    ],
)
def test_build_config_rejects_bad_settings(args: tuple, overrides: dict, field: str) -> None:
    with pytest.raises(InputError) as error:
        build_config(*args, **overrides)
    assert error.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for CPU-only machines")
def test_batched_mm_is_refused_on_cpu() -> None:
    config = build_config("tiny", vocab_size=300, experts_implementation="batched_mm")
    with pytest.raises(ForgeError, match="batched_mm"):
        build_model(config, seed=0)


def test_training_flops_per_token() -> None:
    config = build_config("tiny", vocab_size=300)
    _, active = count_parameters(config)
    matmul_params = active - 300 * config.hidden_size  # the input embedding is a lookup
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    per_position = (
        6 * layers * heads * (config.qk_nope_head_dim + config.qk_rope_head_dim + config.v_head_dim)
    )
    assert training_flops_per_token(config, 1) == 6 * matmul_params + per_position
    assert training_flops_per_token(config, 1024) == 6 * matmul_params + 1024 * per_position


def test_load_model_round_trip_and_errors(tmp_path) -> None:
    model = build_model(build_config("tiny", vocab_size=300), seed=0)
    model.save_pretrained(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert type(loaded).__name__ == "Mistral4ForCausalLM"
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in loaded.state_dict().items())

    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"config\.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(InputError, match="cannot load"):
        load_model(tmp_path / "bad")
