"""Our mixture-of-experts forward, registered with transformers as the "forgeml" experts
implementation (`config.experts_implementation`), and the default of our sizes.

It is transformers' `grouped_mm` path without its generality: the same two grouped
matmuls over (token, expert) pairs sorted by expert, with cheaper gathers around them.
`index_select` / `index_add_` instead of advanced indexing, a permutation-and-sum and
`histc`: in training, advanced indexing's backward is an accumulating `index_put_`,
~4 ms a call on CPU at the `small` size. On CPU this is ~4% of a `small` training step
and 10-25% of a serving step's MoE (benchmarks/train_moe.py, benchmarks/serve.py).

Experts in any other layout (biases, transposed weights, post-expert norms, expert
parallelism) go to transformers' own `grouped_mm` forward. Outputs agree with it to
float rounding (the per-token sum runs in a different order); tests/models/test_experts.py.
The name is a runtime choice only: it is not written to a checkpoint's config.json, so
other tools load our models with their own experts code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, grouped_mm_experts_forward

NAME = "forgeml"


def plain_layout(experts: torch.nn.Module) -> bool:
    """Experts in transformers' default layout, the one `routed_experts` reads."""
    return (
        hasattr(F, "grouped_mm")
        and getattr(experts, "has_gate", False)
        and getattr(experts, "is_concatenated", False)
        and not getattr(experts, "has_bias", True)
        and not getattr(experts, "is_transposed", True)
        and not getattr(experts, "has_post_expert_norm", True)
        and not getattr(experts, "_is_expert_parallel", True)
    )


def routed_experts(
    experts: torch.nn.Module, hidden: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The routed experts' weighted sum per token: hidden [tokens, dim], chosen and
    weights [tokens, top_k] (expert indices and routing weights)."""
    top_k = chosen.shape[1]
    expert_of_pair = chosen.reshape(-1)
    order = expert_of_pair.argsort(stable=True)  # (token, choice) pairs grouped by expert
    ends = torch.bincount(expert_of_pair, minlength=experts.num_experts).cumsum(0).int()
    token = order // top_k
    selected = hidden.index_select(0, token)
    gate_up = F.grouped_mm(selected, experts.gate_up_proj.transpose(1, 2), offs=ends)
    gate, up = gate_up.chunk(2, dim=-1)
    output = F.grouped_mm(experts.act_fn(gate) * up, experts.down_proj.transpose(1, 2), offs=ends)
    output = output * weights.reshape(-1).index_select(0, order)[:, None].to(output.dtype)
    return torch.zeros_like(hidden).index_add_(0, token, output)


def forgeml_experts_forward(
    self: torch.nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    if not plain_layout(self):
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    return routed_experts(self, hidden_states, top_k_index, top_k_weights)


ALL_EXPERTS_FUNCTIONS.register(NAME, forgeml_experts_forward)
