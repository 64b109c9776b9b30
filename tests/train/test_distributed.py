"""Two CPU processes (torchrun, gloo) train like one process with the same global batch.

Rank 0 records the run and writes the model; rank 1 only trains. The only difference
from one process is the order in which the two halves of each batch's gradient are
summed, so the weights agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import TRAIN, pretrain

from forgeml.core.schema import Run

LAUNCHED = textwrap.dedent(
    """
    import json, sys
    from forgeml.core.workspace import Workspace
    from forgeml.train.distributed import run_stage_on_this_rank

    root, params, inputs = sys.argv[1:4]
    result = run_stage_on_this_rank(
        Workspace.open(root), "train.pretrain", json.loads(params), json.loads(inputs), quiet=True
    )
    if result is not None:
        print("RESULT", json.dumps({"run_id": result.run_id, "model": result.outputs["model"].path}))
    """
)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(reference, tmp_path):
    workspace, inputs, _ = reference
    # 4 sequences per step: one process does 2 micro-batches of 2, or two processes 1 each.
    # 6 validation sequences make 3 eval batches: uneven over 2 processes.
    settings = {"micro_batch_size": 2, "checkpoint_every": 4, "eval_max_sequences": 6}
    single = pretrain(workspace, inputs, **settings)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    refs = {name: artifact.ref for name, artifact in inputs.items()}
    # A different log_every: a new run key, the same training.
    params = {**TRAIN, **settings, "log_every": 4}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(workspace.root), json.dumps(params), json.dumps(refs)],
        capture_output=True, text=True, check=False, timeout=500,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    (line,) = [line for line in launched.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    one = load_file(workspace.root / single.outputs["model"].path / "model.safetensors")
    two = load_file(workspace.root / result["model"] / "model.safetensors")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    record = json.loads((workspace.root / result["model"] / "training.json").read_text())
    assert record["batch"]["processes"] == 2 and record["batch"]["gradient_accumulation_steps"] == 1
    single_record = json.loads(
        (workspace.root / single.outputs["model"].path / "training.json").read_text()
    )
    for (_, a), (_, b) in zip(record["loss_curve"], single_record["loss_curve"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # One run recorded, by rank 0, with its checkpoints (rank 1 wrote its RNG state there).
    with workspace.registry.session() as session:
        run = session.get(Run, result["run_id"])
        assert run.status == "succeeded" and run.attempt == 1
    checkpoint = workspace.run_dir(result["run_id"]) / "checkpoints" / "step-4"
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= {
        p.name for p in checkpoint.iterdir()
    }
