"""Does replay keep what the base knew? The quickstart's SFT step with a share of its
pre-training text mixed in, against the same step without.

    python benchmarks/replay.py --workspace /tmp/qs              # a quickstart workspace
    python benchmarks/replay.py --workspace /tmp/qs --fractions 0,0.25,0.5
    python benchmarks/replay.py --workspace /tmp/qs --fractions 0 --lora --lr 2e-3

Each row: `train sft` on the quickstart's routing data with the quickstart's settings
(200 steps unless --steps, batch 16, lr 1e-3, warmup 5%, seq_len 256) from `quickstart-base`, with
`--replay <the quickstart mixture> --replay-fraction F`; then `eval run` on the routing
suites and the mixture's held-out text. The base's own bits/byte is the first row.
`--lora` trains a LoRA adapter (rank 16, merged) instead of every weight: the other way
to keep the base.
Goal (issue #18): bits/byte after SFT within +5% of the base, routing unchanged or better.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SFT = ["--batch-size", "16", "--warmup-fraction", "0.05", "--seq-len", "256"]


def forgeml(workspace: Path, *args: str) -> dict:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(workspace), "--json", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"forgeml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def evaluate(workspace: Path, model: str, mixture: str) -> dict:
    data = workspace / "quickstart-data" / "routing"
    suites = [
        f"--suite={data / name}" for name in ("eval-routing.jsonl", "eval-routing-unseen.jsonl")
    ]
    report = forgeml(workspace, "eval", "run", model, *suites, "--reasoning", "none",
                     "--perplexity-on", mixture, "--max-tokens", "20000", "--max-new-tokens", "32",
                     "--batch-size", "16")  # fmt: skip
    return report["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--fractions", default="0,0.25,0.5")
    parser.add_argument("--steps", type=int, default=200, help="SFT steps (the quickstart's)")
    parser.add_argument("--lr", default="1e-3", help="peak learning rate (the quickstart's)")
    parser.add_argument("--lora", action="store_true", help="LoRA (rank 16, merged)")
    args = parser.parse_args()
    root = args.workspace
    mixture = next(a["ref"] for a in forgeml(root, "artifacts", "list") if a["kind"] == "mixture")
    forgeml(root, "data", "ingest", str(root / "quickstart-data/routing/sft.jsonl"), "--name",
            "routing-sft")  # fmt: skip
    rows = [("base", evaluate(root, "quickstart-base", mixture))]
    for fraction in [float(f) for f in args.fractions.split(",")]:
        extra = ["--replay", mixture, "--replay-fraction", str(fraction)] if fraction else []
        kind = "lora" if args.lora else "full"
        name = f"replay-{fraction:g}-{args.steps}-{kind}-{args.lr}"
        forgeml(root, "train", "sft", "--model", "quickstart-base", "--data", "routing-sft",
                "--max-steps", str(args.steps), *SFT, "--lr", args.lr, *extra,
                *(["--lora", "--merge"] if args.lora else []), "--name", name)  # fmt: skip
        label = f"{args.steps} {kind} lr {args.lr}, replay {fraction:g}"
        rows.append((label, evaluate(root, name, mixture)))
    base_bpb = rows[0][1]["bits_per_byte"]
    print(f"{'model':<34} {'bits/byte':>9} {'vs base':>8} {'routing':>8} {'unseen':>7}")
    for label, metrics in rows:
        bpb = metrics["bits_per_byte"]
        print(f"{label:<34} {bpb:>9.3f} {bpb / base_bpb - 1:>+8.1%} "
              f"{metrics.get('eval-routing/json_match', 0):>8.2f} "
              f"{metrics.get('eval-routing-unseen/json_match', 0):>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
