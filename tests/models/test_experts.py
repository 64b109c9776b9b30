"""Our experts forward ("forgeml") computes what transformers' grouped_mm computes."""

from __future__ import annotations

import torch

from forgeml.models import experts
from forgeml.models.sizes import build_config, build_model, load_model


def _model(implementation: str) -> torch.nn.Module:
    config = build_config(
        "tiny", vocab_size=512, n_routed_experts=16, num_experts_per_tok=4,
        experts_implementation=implementation,
    )  # fmt: skip
    return build_model(config, seed=3)


def test_forward_and_gradients_match_transformers_grouped_mm(monkeypatch):
    calls = []
    original = experts.routed_experts
    monkeypatch.setattr(experts, "routed_experts", lambda *args: calls.append(1) or original(*args))
    ids = torch.randint(0, 512, (3, 40), generator=torch.Generator().manual_seed(0))
    results = {}
    for implementation in (experts.NAME, "grouped_mm"):
        model = _model(implementation)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        gradients = {name: p.grad for name, p in model.named_parameters() if "experts" in name}
        results[implementation] = (loss.detach(), gradients)
    assert calls, "the forgeml implementation was never called"
    (ours, our_grads), (theirs, their_grads) = results[experts.NAME], results["grouped_mm"]
    torch.testing.assert_close(ours, theirs)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, gradient in our_grads.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(gradient, their_grads[name], msg=name)


def test_loaded_checkpoints_use_it_without_recording_it(tmp_path):
    _model(experts.NAME).save_pretrained(tmp_path)
    assert "forgeml" not in (tmp_path / "config.json").read_text()
    assert load_model(tmp_path).config._experts_implementation == experts.NAME


def test_other_layouts_go_to_transformers():
    layer = _model(experts.NAME).model.layers[1].mlp.experts
    assert experts.plain_layout(layer)
    layer.has_bias = True
    assert not experts.plain_layout(layer)
