"""`forgeml launch RECIPE --on kubernetes|slurm|ray`: what it writes, validated offline against
the Kubernetes API schemas (kubernetes-validate, strict), and its refusals. The Slurm
script is run for real, under torchrun, in tests/train/test_distributed_recipe.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_fixtures import forgeml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/sft-dpo-from-openai-jsonl.yaml"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def test_the_kubernetes_job_is_valid_and_meets_at_pod_zero(tmp_path):
    out = tmp_path / "job.yaml"
    made = forgeml(tmp_path / "ws", "--json", "launch", str(RECIPE), "--on", "kubernetes",
                   "--nodes", "2", "--procs-per-node", "4", "--gpus-per-node", "4",
                   "--image", "registry.example/forgeml:cuda", "--var", "base=my-model@prod",
                   "-o", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["processes"] == 8
    documents = list(yaml.safe_load_all(out.read_text()))
    for document in documents:
        for version in VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
    config, service, job = documents
    name = "sft-dpo-from-openai-jsonl"
    assert config["data"] == {RECIPE.name: RECIPE.read_text()}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {
        "job-name": name
    }
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name  # pod i is <name>-i.<name> through the Service
    container = pod["containers"][0]
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    flags = dict(zip(command[3:13:2], command[4:14:2], strict=True))
    assert flags == {"--nnodes": "2", "--nproc-per-node": "4",
                     "--node-rank": "$(JOB_COMPLETION_INDEX)",
                     "--master-addr": f"{name}-0.{name}", "--master-port": "29500"}  # fmt: skip
    assert command[13:] == ["-m", "forgeml", "--workspace", "/var/lib/forgeml/workspace", "run",
                            f"/etc/forgeml/recipe/{RECIPE.name}", "--var", "base=my-model@prod"]  # fmt: skip
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 4}}
    # The same request writes the same bytes.
    again = tmp_path / "again.yaml"
    forgeml(tmp_path / "ws", "launch", str(RECIPE), "--on", "kubernetes", "--nodes", "2",
            "--procs-per-node", "4", "--gpus-per-node", "4", "--image",
            "registry.example/forgeml:cuda", "--var", "base=my-model@prod", "-o", str(again))  # fmt: skip
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--on", "yarn"], "one of slurm, kubernetes"),
        (["--on", "slurm", "--nodes", "0"], "--nodes must be 1 to 1024"),
        (["--on", "kubernetes", "--procs-per-node", "8", "--gpus-per-node", "4"],
         "8 processes per node on 4 GPUs"),
        (["--on", "kubernetes", "--name", "Big_Job"], "letters, digits and dashes"),
        (["--on", "slurm", "--submit"], "sbatch is not on PATH"),
    ],
    ids=["target", "nodes", "gpus", "name", "no-sbatch"],
)  # fmt: skip
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, args, says):
    out = tmp_path / "job.out"
    # A PATH without sbatch or kubectl (CI's machine has a Slurm: nothing must reach it).
    env = {**os.environ, "PATH": str(tmp_path)}
    refused = forgeml(tmp_path / "ws", "launch", str(RECIPE), *args, "-o", str(out),
                      cwd=tmp_path, env=env)  # fmt: skip
    assert refused.returncode != 0
    assert says in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # The submit failure comes after writing (the file is what to submit elsewhere).
    assert out.exists() == ("--submit" in args)


def test_a_broken_recipe_is_refused_with_its_line(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: broken\nsteps:\n  - name: a\n    uses: no.such_stage\n")
    refused = forgeml(tmp_path / "ws", "launch", str(recipe), "--on", "slurm")
    assert refused.returncode != 0 and "no.such_stage" in refused.stderr
    assert "broken.yaml:4:" in refused.stderr, refused.stderr  # the file and line


@pytest.mark.parametrize("on", ["slurm", "kubernetes", "ray"])
def test_a_batch_that_does_not_divide_over_the_processes_is_refused_first(tmp_path, on):
    recipe = tmp_path / "uneven.yaml"
    recipe.write_text(
        "name: uneven\nsteps:\n  - name: chats\n    uses: data.ingest\n"
        "    with: {paths: [chats.jsonl], name: chats}\n"
        "  - name: sft\n    uses: train.sft\n    inputs: {model: base, dataset: chats}\n"
        "    with:\n      max_steps: 3\n      batch_size: 6\n"
    )
    out = tmp_path / "job.out"
    refused = forgeml(tmp_path / "ws", "launch", str(recipe), "--on", on, "--nodes", "1",
                      "--procs-per-node", "4", "-o", str(out), "--submit")  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert f"{recipe}:11: steps[1].with.batch_size: step 'sft': batch_size 6 does not " \
           "divide over 4 processes\n" in refused.stderr, refused.stderr  # fmt: skip
    assert not out.exists() and "Traceback" not in refused.stderr
    fits = forgeml(tmp_path / "ws", "launch", str(recipe), "--on", on, "--procs-per-node", "3",
                   "-o", str(out))  # fmt: skip
    assert fits.returncode == 0, fits.stderr
