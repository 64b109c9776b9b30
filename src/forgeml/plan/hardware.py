"""What a recipe's stages achieve on each kind of hardware: the table `forgeml plan` reads.

Training time is estimated as FLOPs / achieved FLOP/s, where the achieved rate depends
on the stage (pre-training packs full blocks; fine-tuning pads short examples; DPO adds
a reference model; GRPO spends most of its time generating one token at a time).

`cpu-2` is measured: the quickstart (recipes/quickstart.yaml, tiny size) on this
project's 2-core CI machine, each stage's estimated FLOPs over its recorded duration
(docs/PERFORMANCE.md, "Plan before spending", says how to measure it again). The GPU
rows are not measured here: the vendor's dense bf16 peak per device times an assumed
model FLOP utilisation (MFU) of 35% for pre-training and less for the other stages, the
figures large public training runs report; treat them as a first guess until
`--calibrate` has a run of yours to go by.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    devices: int
    memory_gb_per_device: float
    # Achieved training FLOP/s for the whole machine, by stage family.
    flops: dict[str, float]
    measured: bool  # False: a peak x MFU guess


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
        # Measured 2026-12-05 from a quickstart run (tiny size, an idle machine): pre-train
        # 32.4 s, SFT 62.1 s, DPO 17.6 s, GRPO 16.9 s.
        {"pretrain": 4.9e10, "sft": 3.8e10, "preference": 2.0e10, "rl": 1.4e10},
        measured=True,
    ),
    "a100x8": _gpu("a100x8", "8 x NVIDIA A100 80GB, bf16", 8, 80.0, 312e12),
    "h100x8": _gpu("h100x8", "8 x NVIDIA H100 80GB SXM, bf16", 8, 80.0, 989e12),
    "h200x1": _gpu("h200x1", "1 x NVIDIA H200 141GB, bf16", 1, 141.0, 989e12),
}
