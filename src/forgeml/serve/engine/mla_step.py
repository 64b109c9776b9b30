"""One engine step of a `mistral4` model, lean: the same function as transformers' forward.

A step decodes one token for every running row and, in the same pass, prefills the
prompts of requests that just joined: every token-wise layer (projections, norms, the
MoE) runs once over all of them, so the weights are read once per step rather than
once for the decode and again for each prefill (on CPU a 32-token prefill costs about
as much as a decode step of 32 rows).

Why not `model(...)`: on CPU a small model's step is mostly overhead, and transformers'
MLA attention re-expands *every cached latent* into full keys and values at every step
(`kv_b_proj` over rows x columns: at 32 rows x 100 columns the largest matmul of the
step after the LM head). Here attention is "absorbed" (DeepSeek-V2, as vLLM decodes
MLA): the query's position-free part is mapped into the latent space through
`kv_b_proj`'s key half, scored against the latents directly, and the attention-weighted
latent goes through the value half afterwards. Every head shares the one latent, so a
row's heads are the rows of one small matmul. It also makes ~40% fewer tensor calls
than the generic forward (no mask building, fused RMSNorm, no module hooks, a router
without the no-op group selection, models/experts.py's leaner expert gathers), which is most of a step's
time at one row. Logits agree with the generic forward to float rounding
(tests/serve/test_mla_step.py).

The cache is transformers' own for this model: per layer, `keys` holds the normalised
KV latent [rows, 1, columns, kv_lora_rank] and `values` the rotated shared key
[rows, 1, columns, qk_rope_head_dim]. Decoding rows come with views one column longer
than what is cached, and the step writes the new token's entries into that column;
prompts get their cache back in `Prompts.cache`.

Weights are read from the model at each step, never copied. With PEFT's LoRA wrapper
loaded, `_linear` reads each layer's *base* weights: callers use this step only when
every row decodes with the base model (batch.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from forgeml.models.experts import plain_layout, routed_experts
from forgeml.serve.engine import prompt_score

# RoPE types whose frequencies change with the sequence length (transformers'
# `dynamic_rope_update`): not reproduced here.
_DYNAMIC_ROPE = ("dynamic", "longrope")
# Prompt attention materialises [prompts, width x heads, width] scores: past this many
# elements (64 MB of fp32) prompts go through the model's own (flash) attention.
MAX_PROMPT_SCORES = 1 << 24


@dataclass
class Decoding:
    """Rows with a cache: one new token each."""

    input_ids: torch.Tensor  # [rows]
    positions: torch.Tensor  # [rows]
    attention_mask: torch.Tensor  # [rows, columns + 1], 1 = real token, the new one last
    cache: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, the new column last


@dataclass
class Prompts:
    """New sequences, left-padded to one width: their whole prompts in this pass."""

    input_ids: torch.Tensor  # [prompts, width]
    attention_mask: torch.Tensor  # [prompts, width]
    cache: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # filled
    # [prompts, width, hidden] input embeddings where they are not the tokens' own (image
    # features over [IMG] tokens: engine/vision.py); None: embed `input_ids`.
    embeds: torch.Tensor | None = None
    logprobs: list[float | None] = field(default_factory=list)  # filled: prompt_score.py

    @property
    def positions(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def supports(model: torch.nn.Module) -> bool:
    """Whether `forward` computes this model's forward (else use `model(...)`)."""
    config = getattr(model, "config", None)
    if config is None or config.model_type != "mistral4":
        return False
    rope = config.rope_parameters or {}
    rope_type = rope.get("rope_type", "default")
    return (
        not any(kind in rope_type for kind in _DYNAMIC_ROPE)
        and rope.get("llama_4_scaling_beta") is not None
        and rope.get("original_max_position_embeddings") is not None
    )


def fits(model: torch.nn.Module, prompts: int, width: int) -> bool:
    """Whether prompts of this shape are small enough for `forward`'s prompt attention."""
    return prompts * width * width * model.config.num_attention_heads <= MAX_PROMPT_SCORES


def forward(
    model: torch.nn.Module, decoding: Decoding | None, prompts: Prompts | None
) -> torch.Tensor:
    """Logits [decoding rows + prompts, vocab]: each decoding row's next token, then
    each prompt's first generated token."""
    inner = model.model
    config = model.config
    parts = [part for part in (decoding, prompts) if part is not None]
    input_ids = torch.cat([part.input_ids.reshape(-1) for part in parts])
    positions = torch.cat([part.positions.reshape(-1) for part in parts])
    hidden = F.embedding(input_ids, inner.embed_tokens.weight)  # [tokens, hidden]
    if prompts is not None and prompts.embeds is not None:
        rows = len(decoding.input_ids) if decoding is not None else 0
        hidden = torch.cat([hidden[:rows], prompts.embeds.reshape(-1, hidden.shape[1])])
    cos, sin = _rotary(inner.rotary_emb, positions)
    rope = config.rope_parameters
    # Llama-4 attention temperature (1 below original_max_position_embeddings), per token.
    llama4 = 1 + rope["llama_4_scaling_beta"] * torch.log(
        1 + torch.floor(positions / rope["original_max_position_embeddings"])
    )
    biases = _biases(decoding, prompts, hidden.dtype)
    for index, layer in enumerate(inner.layers):
        attention = layer.self_attn
        normed = _rms_norm(hidden, layer.input_layernorm)
        query_scale = (llama4 * attention.scaling)[:, None, None]
        hidden = hidden + _attention(
            attention, index, normed, decoding, prompts, biases, cos, sin, query_scale
        )
        normed = _rms_norm(hidden, layer.post_attention_layernorm)
        hidden = hidden + _feed_forward(layer.mlp, normed)
    rows = len(decoding.input_ids) if decoding is not None else 0
    if prompts is not None:  # a prompt's last column is its last token (left padding)
        width = prompts.input_ids.shape[1]
        prompts.logprobs = _prompt_logprobs(model, hidden[rows:], prompts)
        hidden = torch.cat([hidden[:rows], hidden[rows:].view(-1, width, hidden.shape[1])[:, -1]])
    return _linear(model.lm_head, _rms_norm(hidden, inner.norm)).float()


def _biases(
    decoding: Decoding | None, prompts: Prompts | None, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Additive attention masks, to add to scores viewed [batch, queries, heads, columns]:
    decoding [rows, 1, 1, columns]; prompts [prompts, width, 1, width] (causal, padding
    masked; a padding query sees itself, so no row is empty and no NaN reaches the cache)."""
    decode_bias = prompt_bias = None
    if decoding is not None:
        blocked = decoding.attention_mask == 0
        decode_bias = torch.zeros(blocked.shape, dtype=dtype).masked_fill_(blocked, -torch.inf)
        decode_bias = decode_bias[:, None, None, :]
    if prompts is not None:
        width = prompts.input_ids.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool).tril_()
        allowed = causal & prompts.attention_mask.bool()[:, None, :]
        allowed |= torch.eye(width, dtype=torch.bool)
        prompt_bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, -torch.inf)
        prompt_bias = prompt_bias[:, :, None, :]
    return decode_bias, prompt_bias


def _attention(
    attention: torch.nn.Module,
    layer: int,
    hidden: torch.Tensor,
    decoding: Decoding | None,
    prompts: Prompts | None,
    biases: tuple[torch.Tensor | None, torch.Tensor | None],
    cos: torch.Tensor,
    sin: torch.Tensor,
    query_scale: torch.Tensor,
) -> torch.Tensor:
    tokens = hidden.shape[0]
    heads, nope = attention.num_heads, attention.qk_nope_head_dim
    rope_dim, latent_dim = attention.qk_rope_head_dim, attention.kv_lora_rank
    interleave = attention.config.rope_interleave
    if attention.q_lora_rank is None:
        query = _linear(attention.q_proj, hidden)
    else:
        query = _linear(attention.q_a_proj, hidden)
        query = _linear(attention.q_b_proj, _rms_norm(query, attention.q_a_layernorm))
    query_nope, query_rot = query.view(tokens, heads, -1).split([nope, rope_dim], -1)
    latent, key_rot = _linear(attention.kv_a_proj_with_mqa, hidden).split(
        [latent_dim, rope_dim], -1
    )
    latent = _rms_norm(latent, attention.kv_a_layernorm)
    # The shared rotary key rides along as one more head: one rotation for both.
    rotated = _rotate(
        torch.cat([query_rot, key_rot[:, None]], 1), cos[:, None], sin[:, None], interleave
    )
    query_rot, key_rot = rotated[:, :heads], rotated[:, heads]

    # kv_b_proj maps a latent to each head's [key_nope | value]: split it per head.
    up = _weight(attention.kv_b_proj).view(heads, nope + attention.v_head_dim, latent_dim)
    up_key, up_value = up.split([nope, attention.v_head_dim], dim=1)
    # query_nope . (up_key @ latent) == (query_nope @ up_key) . latent, per head.
    query_latent = torch.bmm(query_nope.transpose(0, 1), up_key).transpose(0, 1)
    query_latent = query_latent * query_scale  # [tokens, heads, latent]
    query_rot = query_rot * query_scale

    mixed = []  # attention-weighted latents, [tokens, heads, latent] in pieces
    rows = 0
    if decoding is not None:
        rows = len(decoding.input_ids)
        keys, values = decoding.cache[layer]
        keys[:, 0, -1], values[:, 0, -1] = latent[:rows], key_rot[:rows]
        mixed.append(
            _attend(query_latent[:rows], query_rot[:rows], keys[:, 0], values[:, 0], biases[0])
        )
    if prompts is not None:
        count, width = prompts.input_ids.shape
        latents = latent[rows:].view(count, width, latent_dim)
        rotated = key_rot[rows:].view(count, width, rope_dim)
        prompts.cache.append((latents[:, None], rotated[:, None]))
        queries = query_latent[rows:].reshape(count, width * heads, latent_dim)
        rotations = query_rot[rows:].reshape(count, width * heads, rope_dim)
        attended = _attend(queries, rotations, latents, rotated, biases[1])
        mixed.append(attended.view(count * width, heads, latent_dim))
    latent_out = mixed[0] if len(mixed) == 1 else torch.cat(mixed)
    output = torch.bmm(latent_out.transpose(0, 1), up_value.transpose(1, 2)).transpose(0, 1)
    return _linear(attention.o_proj, output.reshape(tokens, -1))


def _attend(
    query_latent: torch.Tensor,
    query_rot: torch.Tensor,
    latents: torch.Tensor,
    key_rot: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Softmax attention of query rows [batch, queries x heads, dim] over one shared
    latent key and value per column ([batch, columns, dim]); `bias` as `_biases` makes
    it. Returns [batch, queries x heads, latent]."""
    scores = torch.bmm(query_latent, latents.transpose(1, 2))
    scores = scores.baddbmm_(query_rot, key_rot.transpose(1, 2))
    batch, rows, columns = scores.shape
    heads = rows // bias.shape[1]
    scores.view(batch, -1, heads, columns).add_(bias)
    return torch.bmm(scores.softmax(dim=-1), latents)


def _feed_forward(mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    experts = getattr(mlp, "experts", None)
    if experts is None:
        return _gated_mlp(mlp, hidden)
    weights, chosen = _route(mlp.gate, hidden)
    if plain_layout(experts):
        routed = routed_experts(experts, hidden, chosen, weights)
    else:
        routed = experts(hidden, chosen, weights)
    return routed + _gated_mlp(mlp.shared_experts, hidden)


def _route(router: torch.nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert weights and indices [tokens, k], as the model's router computes them.

    With one expert group (our sizes) its group-limited selection selects everything:
    skipped here, a dozen tensor ops per layer; the rest is the same ops in the same order.
    """
    if router.num_group != 1:
        _, weights, chosen = router(hidden)
        return weights, chosen
    scores = F.linear(hidden, router.weight).softmax(dim=-1)
    chosen = torch.topk(scores, k=router.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, chosen)
    if router.norm_topk_prob:
        weights /= weights.sum(dim=-1, keepdim=True) + 1e-20
    return weights * router.routed_scaling_factor, chosen


def _gated_mlp(mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    gate = mlp.act_fn(_linear(mlp.gate_proj, hidden))
    return _linear(mlp.down_proj, gate * _linear(mlp.up_proj, hidden))


def _prompt_logprobs(
    model: torch.nn.Module, hidden: torch.Tensor, prompts: Prompts
) -> list[float | None]:
    """Each prompt's mean log-probability (prompt_score.py) from its hidden states
    [prompts * width, hidden], before all but the last column are dropped."""
    flat, targets, counts = prompt_score.prompt_targets(prompts.input_ids, prompts.attention_mask)
    if not len(flat):
        return [None] * len(counts)
    normed = _rms_norm(hidden.index_select(0, flat), model.model.norm)
    return prompt_score.row_logprobs(_linear(model.lm_head, normed), targets, counts)


def _rotary(rotary: torch.nn.Module, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [tokens, rope_dim / 2] of each token's position (one angle per pair)."""
    angles = positions[:, None].float() * rotary.inv_freq
    scale = rotary.attention_scaling
    return angles.cos() * scale, angles.sin() * scale


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool
) -> torch.Tensor:
    """RoPE as transformers applies it: pairs are (even, odd) when interleaved, else halves;
    the output always has the rotated pairs' first elements, then their second."""
    if interleave:
        first, second = x[..., 0::2], x[..., 1::2]
    else:
        first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def _rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)


def _base(linear: torch.nn.Module) -> torch.nn.Module:
    # PEFT's LoRA layers wrap the original linear as `base_layer` (possibly nested).
    while hasattr(linear, "base_layer"):
        linear = linear.base_layer
    return linear


def _weight(linear: torch.nn.Module) -> torch.Tensor:
    return _base(linear).weight


def _linear(linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    base = _base(linear)
    return F.linear(x, base.weight, base.bias)
