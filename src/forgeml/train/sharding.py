"""FSDP2 for the pre-training loop (`distributed: fsdp`): torch's `fully_shard` on each
decoder layer and then the whole model, so every process holds 1/N of the parameters,
gradients and optimizer state, and gathers a layer's weights only while it computes.

Why our own wrapping rather than accelerate's FSDP plugin: accelerate turns FSDP on only
for GPUs (on CPU, with FSDP configured, it trains with DDP and says nothing), so its
path could never be tested here. `fully_shard` is the same on CPU/gloo and GPU/NCCL, and
is what torchtitan builds on. The model is therefore not given to `accelerate.prepare`;
the pieces accelerate would otherwise do are here:

- gradient sync is skipped on accumulation micro-steps (`no_sync`);
- checkpoints: model and optimizer through torch.distributed.checkpoint (each process
  writes its own shards, and a checkpoint loads onto any world size), the LR schedule
  beside them; accelerate's save_state still writes every process's RNG states;
- the final weights are gathered whole onto rank 0, on the CPU (`full_weights`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

SHARDS_DIR = "sharded"
SCHEDULER_FILE = "scheduler.pt"


def shard(model: torch.nn.Module, precision: str) -> None:
    """Shard `model` in place over the default process group (one mesh, all processes)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if precision == "bf16":  # bf16 compute, fp32 master weights and gradient reduction
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in _decoder_layers(model):
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)  # embeddings, final norm, output head


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    for path in ("model.layers", "model.language_model.layers"):
        found: Any = model
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, torch.nn.ModuleList):
            return list(found)
    return []  # an unknown layout: sharded as one unit, still correct


@contextmanager
def no_sync(model: Any) -> Iterator[None]:
    """No gradient reduce-scatter on this micro-step (the last one reduces them all)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def to_float(value: Any) -> float:
    """A grad norm over sharded parameters is a DTensor: its whole value, as a float."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def local_parameters(model: torch.nn.Module) -> int:
    """How many parameter elements this process holds."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def save(directory: Path, model, optimizer, scheduler, main: bool) -> None:
    """Collective: each process writes its shards of the model and optimizer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state},
             checkpoint_id=str(directory / SHARDS_DIR))  # fmt: skip
    if main:
        torch.save(scheduler.state_dict(), directory / SCHEDULER_FILE)


def load(directory: Path, model, optimizer, scheduler) -> None:
    """Collective: the shards this process's part of the mesh needs (any world size)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory / SHARDS_DIR))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])  # fmt: skip
    scheduler.load_state_dict(torch.load(directory / SCHEDULER_FILE, weights_only=True))


def full_weights(model) -> dict[str, torch.Tensor]:
    """Collective: the whole state dict on rank 0 (on the CPU), empty elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
