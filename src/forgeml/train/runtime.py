"""Where and how a training stage computes: accelerator, precision, determinism, AdamW.

with deterministic(seed) as flags:
    accelerator = make_accelerator("auto")
    optimizer = adamw(model, learning_rate=1e-3, weight_decay=0.1)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from forgeml.train.params import Precision


def make_accelerator(precision: Precision) -> Accelerator:
    """fp32 on CPU, bf16 autocast (fp32 master weights) on a GPU that supports it.

    On these CPUs (AVX2, no AMX) bf16 matmuls are ~250x slower than fp32 and bf16
    training ~3x slower (FACTS.md), so "auto" never picks bf16 without a GPU.
    The scheduler is stepped once per optimizer step: accelerate would otherwise
    step it once per process, shortening the schedule under DDP.
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return Accelerator(
        cpu=not cuda,
        mixed_precision="bf16" if precision == "bf16" else "no",
        step_scheduler_with_optimizer=False,
    )


@contextmanager
def deterministic(seed: int) -> Iterator[dict[str, Any]]:
    """Seed every generator and ask torch for deterministic kernels, for the block only.

    `warn_only`: an op without a deterministic kernel warns instead of failing, so a
    new transformers release cannot stop training; on CPU every op we use is
    deterministic, and the tests check bit-identical weights. cuBLAS needs a fixed
    workspace size to be deterministic; it must be set before CUDA starts.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    set_seed(seed)
    try:
        yield {
            "seed": seed,
            "deterministic_algorithms": True,
            "deterministic_warn_only": True,
            "cudnn_benchmark": False,
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
        }
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = cudnn_benchmark


def adamw(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT's rule): norms' gains and
    biases are not pulled towards zero.

    The fused kernel (one pass over each parameter instead of a dozen `foreach` ops) is
    what transformers' Trainer uses too: on the `small` size it takes an AdamW step
    from ~230 ms to ~45 ms on 2 CPU cores, ~7% of a training step (benchmarks/train_moe.py).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=1e-8, fused=True)
