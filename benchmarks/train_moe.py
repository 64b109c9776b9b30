"""Training speed (tokens/s, MFU) and peak memory of the MoE sizes, on this machine.

    .venv/bin/python benchmarks/train_moe.py                  # mini + small, ~4 min on 2 cores
    .venv/bin/python benchmarks/train_moe.py --sizes mini --steps 5 --threads 1 --json

What is measured, all in the same run:
- the fp32 matmul peak (2048 x 2048, all torch threads): the MFU denominator;
- one training step as `train.pretrain` takes it (forward with labels, backward,
  gradient clipping, fused AdamW with our parameter groups) for each size at seq 512,
  with the experts as ours (`forgeml`, models/experts.py, the default), as
  transformers' `grouped_mm`, and as the stock `eager` loop over experts (the baseline);
- peak resident memory at seq 512 (batch 4) and seq 2048 (batch 1): the same tokens
  per step, so the difference is attention's and activations' growth with length;
  also shown less the memory of the process after importing torch and transformers.

MFU = tokens/s x training FLOPs per token (forgeml.models.sizes.training_flops_per_token,
6 x active matmul parameters + attention) / measured peak. Every configuration runs
in a fresh subprocess so its peak RSS is its own; the first step is a warm-up and the
median step is reported (the machine may be shared: a neighbour's burst moves a mean).
"mini" is FACTS.md's "tiny" shape (10.3M parameters), "small" its "small" shape.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 8192
TOKENS_PER_STEP = 2048


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-N fp32 GFLOP/s of an n x n matmul."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def child(config: dict) -> dict:
    """One configuration, in this (fresh) process: build, warm up, time `steps` steps."""
    import torch

    from forgeml.models.sizes import build_config, build_model, training_flops_per_token
    from forgeml.train.runtime import adamw

    imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch + transformers
    size, experts, seq_len, steps = (
        config["size"], config["experts"], config["seq_len"], config["steps"],
    )  # fmt: skip
    batch = TOKENS_PER_STEP // seq_len
    model_config = build_config(
        size, vocab_size=VOCAB, max_position_embeddings=max(2048, seq_len),
        experts_implementation=experts,
    )  # fmt: skip
    model = build_model(model_config, seed=0)
    model.train()
    optimizer = adamw(model, learning_rate=1e-3, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, VOCAB, (steps + 1, batch, seq_len), generator=generator)

    def step(input_ids: torch.Tensor) -> None:
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(data[0])
    times = []
    for index in range(1, steps + 1):
        start = time.perf_counter()
        step(data[index])
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens_per_s = batch * seq_len / seconds
    return {
        **config,
        "batch": batch,
        "seconds_per_step": seconds,
        "tokens_per_s": tokens_per_s,
        "training_flops_per_token": training_flops_per_token(model_config, seq_len),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "import_rss_mib": imported_rss,
        "threads": torch.get_num_threads(),
    }


def run_child(config: dict) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="mini,small", help="Comma-separated size names.")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per configuration.")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's, one per core)."
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    if args.threads:  # before torch starts, here and in every child
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    peak = matmul_peak()
    configs = []
    for size in args.sizes.split(","):
        for experts in ("forgeml", "grouped_mm", "eager"):
            configs.append({"size": size, "experts": experts, "seq_len": 512, "steps": args.steps})
        configs.append({"size": size, "experts": "forgeml", "seq_len": 2048, "steps": 3})
    results = [run_child(config) for config in configs]
    # Other processes can slow the peak measurement; the better of two is nearer the truth.
    peak = max(peak, matmul_peak())
    for result in results:
        flops = result["tokens_per_s"] * result["training_flops_per_token"] / 1e9
        result["gflops"] = flops
        result["mfu"] = flops / peak
        baseline = next(
            r for r in results
            if r["size"] == result["size"] and r["experts"] == "eager" and r["seq_len"] == 512
        )  # fmt: skip
        result["vs_eager"] = (
            result["tokens_per_s"] / baseline["tokens_per_s"] if result["seq_len"] == 512 else None
        )
    summary = {
        "fp32_matmul_peak_gflops": peak,
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"fp32 matmul peak: {peak:.1f} GFLOP/s ({results[0]['threads']} threads); "
        f"load average {summary['load_average_1min']:.2f} on {summary['cpu_count']} CPUs"
    )
    header = f"{'size':<6} {'experts':<11} {'seq':>5} {'batch':>5} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} {'vs eager':>9} {'peak RSS':>9} {'- imports':>10}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        versus = f"{r['vs_eager']:.2f}x" if r["vs_eager"] is not None else ""
        print(
            f"{r['size']:<6} {r['experts']:<11} {r['seq_len']:>5} {r['batch']:>5} "
            f"{r['tokens_per_s']:>9,.0f} {r['gflops']:>8.1f} {r['mfu']:>6.1%} {versus:>9} "
            f"{r['peak_rss_mib']:>6,.0f} MiB {r['peak_rss_mib'] - r['import_rss_mib']:>6,.0f} MiB"
        )
    print(f"({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
