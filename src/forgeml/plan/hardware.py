"""What a recipe's stages achieve on each kind of hardware: the table `forgeml plan` reads.

Training time is estimated as steps x a fixed cost per step + FLOPs / achieved FLOP/s.
Both depend on the stage family: pre-training packs full blocks; fine-tuning pads short
examples and evaluates; DPO adds a reference model; GRPO generates its completions one
token at a time, so its fixed cost is per step and completion token.

`cpu-2` is measured: the two constants of each family are fitted to two quickstart runs
on this project's 2-core machine (tiny size at the recipe's steps, mini size at 200 steps;
docs/PERFORMANCE.md, "Plan before spending", has the runs and how to repeat them). The
GPU rows are not measured here: the vendor's dense bf16 peak per device times an
assumed model FLOP utilisation (MFU) of 35% for pre-training and less for the other
stages, the figures large public training runs report, and no fixed cost; treat them
as a first guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    devices: int
    memory_gb_per_device: float
    # Achieved training FLOP/s for the whole machine, by stage family.
    flops: dict[str, float]
    measured: bool  # False: a peak x MFU guess
    # Seconds per optimizer step besides the FLOPs (per step and completion token for rl).
    step_seconds: dict[str, float] = field(default_factory=dict)


def _gpu(name: str, description: str, devices: int, memory: float, peak: float) -> Hardware:
    mfu = {"pretrain": 0.35, "sft": 0.25, "preference": 0.25, "rl": 0.08}
    flops = {stage: devices * peak * share for stage, share in mfu.items()}
    return Hardware(name, description, devices, memory, flops, measured=False)


HARDWARE: dict[str, Hardware] = {
    "cpu-2": Hardware(
        "cpu-2",
        "2 CPU cores (the CI machine), fp32",
        1,
        24.0,
        # Fitted 2026-12-05 on an otherwise idle machine to `forgeml quickstart` (tiny:
        # pre-train 32.4 s, SFT 62.1 s, DPO 17.6 s, GRPO 16.9 s) and `forgeml quickstart
        # --size mini --pretrain-steps 200 --sft-steps 200 --dpo-steps 40 --grpo-steps 20`
        # (88.1, 131.4, 35.9, 18.4 s).
        {"pretrain": 1.38e11, "sft": 1.01e11, "preference": 1.66e11, "rl": 1.89e11},
        measured=True,
        step_seconds={"pretrain": 0.070, "sft": 0.097, "preference": 0.386, "rl": 0.0218},
    ),
    "a100x8": _gpu("a100x8", "8 x NVIDIA A100 80GB, bf16", 8, 80.0, 312e12),
    "h100x8": _gpu("h100x8", "8 x NVIDIA H100 80GB SXM, bf16", 8, 80.0, 989e12),
    "h200x1": _gpu("h200x1", "1 x NVIDIA H200 141GB, bf16", 1, 141.0, 989e12),
}
