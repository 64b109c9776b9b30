"""How close `forgeml plan` comes: its estimate of each quickstart training step next to
the step's recorded duration, for several quickstart configurations.

    python benchmarks/plan_accuracy.py                 # ~9 min on 2 cores, machine idle
    python benchmarks/plan_accuracy.py --configs tiny  # one configuration

The `cpu-2` row of src/forgeml/plan/hardware.py is fitted to the `tiny` and `mini-200`
configurations; `mini-100` is a configuration it was not fitted to. Run it on a quiet
machine: the table is wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from forgeml.core.schema import Run
from forgeml.core.workspace import Workspace

RECIPE = Path(__file__).resolve().parents[1] / "src/forgeml/recipes/quickstart.yaml"
CONFIGS = {
    "tiny": {},
    "mini-200": {"size": "mini", "pretrain_steps": 200, "sft_steps": 200, "dpo_steps": 40,
                 "grpo_steps": 20},
    "mini-100": {"size": "mini", "pretrain_steps": 100, "sft_steps": 100, "dpo_steps": 20,
                 "grpo_steps": 10},
}  # fmt: skip


def forgeml(root: Path, *args: str) -> str:
    command = [sys.executable, "-m", "forgeml", "--workspace", str(root), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"forgeml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def measure(root: Path, config: dict) -> list[tuple[str, float, float]]:
    options = [f"--{key.replace('_', '-')}={value}" for key, value in config.items()]
    forgeml(root, "quickstart", *options)
    variables = [f"--var={key}={value}" for key, value in config.items()]
    plan = json.loads(
        forgeml(
            root, "--json", "plan", str(RECIPE), f"--var=data={root}/quickstart-data", *variables
        )
    )
    estimated = {s["step"]: s["seconds"] for s in plan["steps"] if s["seconds"] is not None}
    workspace = Workspace.open(root)
    rows = []
    with workspace.registry.session() as session:
        for run in session.query(Run).filter(Run.step.in_(estimated)):
            took = (run.finished_at - run.started_at).total_seconds()
            rows.append((run.step, took, estimated[run.step]))
    workspace.close()
    return sorted(rows, key=lambda row: list(estimated).index(row[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    print(f"{'config':<10} {'step':<10} {'measured':>9} {'estimated':>10} {'error':>7}")
    for name in args.configs.split(","):
        scratch = Path(tempfile.mkdtemp(prefix="forgeml-plan-"))
        try:
            for step, took, guess in measure(scratch / "ws", CONFIGS[name]):
                error = (guess - took) / took
                print(f"{name:<10} {step:<10} {took:>8.1f}s {guess:>9.1f}s {error:>+7.0%}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
