"""`forgeml launch RECIPE --on slurm|kubernetes|ray`: a recipe as a job for the cluster's
own scheduler, run by `torchrun` on every node (Ray: deploy/ray_jobs.py).

    forgeml launch recipe.yaml --on slurm --nodes 2 --procs-per-node 8 --gpus-per-node 8
    forgeml launch recipe.yaml --on kubernetes --nodes 2 --procs-per-node 8 --image registry/forgeml:cuda

forgeml does not manage a cluster: it writes what the cluster's scheduler takes, and
submits it when asked (`--submit`: `sbatch`, or `kubectl apply`).

- **Slurm**: an sbatch script. One task per node (`srun`) starts `torchrun`, whose c10d
  rendezvous on the first node of the allocation joins the nodes; every process runs
  `forgeml run RECIPE` (core/recipes.py: rank 0 runs each step, the others train beside
  it). The workspace, the recipe and the Python environment must be on a filesystem
  every node sees (or the registry on PostgreSQL: `database_url`).
- **Kubernetes**: an Indexed Job (one pod per node, `completionMode: Indexed`), a
  headless Service that gives pod 0 the name the others rendezvous at, and a ConfigMap
  holding the recipe. The pods mount the workspace volume (`forgeml-workspace`, as
  deploy/kubernetes makes it) and read the deployment's `forgeml-config`.

Each run records where it ran (core/runs.py `launch_record`: the Slurm job or the
Kubernetes pod, the launch's processes). The same request renders the same bytes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forgeml.core.errors import InputError

TARGETS = ("slurm", "kubernetes", "ray")
RENDEZVOUS_PORT = 29500
MAX_NODES = 1024
MAX_PROCS_PER_NODE = 64
K8S_WORKSPACE = "/var/lib/forgeml/workspace"  # where deploy/kubernetes mounts it
K8S_RECIPE_DIR = "/etc/forgeml/recipe"


@dataclass(frozen=True)
class LaunchRequest:
    recipe: Path  # absolute: the nodes read it there (Slurm), or its text goes in a ConfigMap
    name: str  # the job's name: letters, digits and dashes
    nodes: int = 1
    procs_per_node: int = 1
    gpus_per_node: int = 0
    variables: list[str] = field(default_factory=list)  # `--var NAME=VALUE`, passed on
    workspace: str = ""  # Slurm: the workspace's path on the shared filesystem
    python: str = "python3"  # Slurm: the Python with forgeml installed, on every node
    image: str = "forgeml"  # Kubernetes: the forgeml image
    workspace_claim: str = "forgeml-workspace"  # Kubernetes: the workspace volume's claim

    def check(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise InputError(f"--nodes must be 1 to {MAX_NODES}, not {self.nodes}", field="nodes")
        if not 1 <= self.procs_per_node <= MAX_PROCS_PER_NODE:
            raise InputError(
                f"--procs-per-node must be 1 to {MAX_PROCS_PER_NODE}, not {self.procs_per_node}",
                field="procs_per_node",
            )
        if not 0 <= self.gpus_per_node <= MAX_PROCS_PER_NODE:
            raise InputError("--gpus-per-node must be 0 or more", field="gpus_per_node")
        if self.gpus_per_node and self.procs_per_node > self.gpus_per_node:
            raise InputError(
                f"{self.procs_per_node} processes per node on {self.gpus_per_node} GPUs",
                field="procs_per_node",
                hint="one process per GPU: --procs-per-node equal to --gpus-per-node",
            )
        if not self.name or len(self.name) > 52 or not self.name.replace("-", "").isalnum():
            raise InputError(
                f"a job name of letters, digits and dashes (at most 52), not {self.name!r}",
                field="name",
            )
        if self.name != self.name.lower() or self.name[0] == "-" or self.name[-1] == "-":
            raise InputError(
                f"{self.name!r}: lower case, not starting or ending with a dash "
                "(Kubernetes names its pods after it)",
                field="name",
            )

    def forgeml_args(self, workspace: str, recipe: str) -> list[str]:
        """`forgeml --workspace W run RECIPE --var ...` as torchrun's module arguments."""
        variables = [part for item in self.variables for part in ("--var", item)]
        return ["-m", "forgeml", "--workspace", workspace, "run", recipe, *variables]


def render_slurm(request: LaunchRequest) -> str:
    request.check()
    if not request.workspace:
        raise InputError("a Slurm launch needs the workspace's path on the shared filesystem")
    torchrun = [
        "srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        "\"$FORGEML_PYTHON\"", "-m", "torch.distributed.run",
        "--nnodes", "\"$SLURM_NNODES\"", "--nproc-per-node", str(request.procs_per_node),
        "--rdzv-id", "\"$SLURM_JOB_ID\"", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "\"$head:$FORGEML_RDZV_PORT\"",
    ]  # fmt: skip
    command = (
        " ".join(torchrun)
        + " \\\n  "
        + shlex.join(request.forgeml_args(request.workspace, str(request.recipe)))
    )
    gpus = f"#SBATCH --gpus-per-node={request.gpus_per_node}\n" if request.gpus_per_node else ""
    return f"""#!/bin/bash
# Written by `forgeml launch {request.recipe.name} --on slurm`: submit with sbatch.
#SBATCH --job-name={request.name}
#SBATCH --nodes={request.nodes}
#SBATCH --ntasks-per-node=1
{gpus}#SBATCH --output={request.name}-%j.out
set -euo pipefail
# The Python environment with forgeml, on every node (a shared filesystem).
FORGEML_PYTHON=${{FORGEML_PYTHON:-{shlex.quote(request.python)}}}
# torchrun's rendezvous: the first node of the allocation.
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
FORGEML_RDZV_PORT=${{FORGEML_RDZV_PORT:-{RENDEZVOUS_PORT}}}
export FORGEML_LAUNCH=slurm
{command}
"""


def render_kubernetes(request: LaunchRequest) -> str:
    """A ConfigMap (the recipe), a headless Service and an Indexed Job, as one YAML
    stream for `kubectl apply -f`."""
    request.check()
    name = request.name
    recipe_file = f"{K8S_RECIPE_DIR}/{request.recipe.name}"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "forgeml"}
    torchrun = [
        "python", "-m", "torch.distributed.run",
        "--nnodes", str(request.nodes), "--nproc-per-node", str(request.procs_per_node),
        "--node-rank", "$(JOB_COMPLETION_INDEX)",
        # pod 0 of the Job, by the name the headless Service gives it
        "--master-addr", f"{name}-0.{name}", "--master-port", str(RENDEZVOUS_PORT),
        *request.forgeml_args(K8S_WORKSPACE, recipe_file),
    ]  # fmt: skip
    container: dict = {
        "name": "train",
        "image": request.image,
        "command": torchrun,
        "env": [
            {"name": "FORGEML_LAUNCH", "value": "kubernetes"},
            {"name": "FORGEML_WORKSPACE", "value": K8S_WORKSPACE},
        ],
        "envFrom": [{"configMapRef": {"name": "forgeml-config", "optional": True}}],
        "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}],
        "volumeMounts": [
            {"name": "workspace", "mountPath": K8S_WORKSPACE},
            {"name": "recipe", "mountPath": K8S_RECIPE_DIR, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},  # torch's workers share memory
        ],
    }
    if request.gpus_per_node:
        container["resources"] = {"limits": {"nvidia.com/gpu": request.gpus_per_node}}
    documents = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-recipe", "labels": {**labels}},
            "data": {request.recipe.name: request.recipe.read_text(encoding="utf-8")},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {**labels}},
            "spec": {
                "clusterIP": "None",  # headless: DNS names for the Job's pods
                "selector": {"job-name": name},
                "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": {**labels}},
            "spec": {
                "completionMode": "Indexed",
                "completions": request.nodes,
                "parallelism": request.nodes,
                # A failed pod fails the launch: the recipe resumes from its checkpoints
                # when launched again, rather than a lone pod rejoining a dead group.
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {**labels}},
                    "spec": {
                        "subdomain": name,
                        "restartPolicy": "Never",
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "workspace",
                                "persistentVolumeClaim": {"claimName": request.workspace_claim},
                            },
                            {"name": "recipe", "configMap": {"name": f"{name}-recipe"}},
                            {"name": "shm", "emptyDir": {"medium": "Memory"}},
                        ],
                    },
                },
            },
        },
    ]
    header = (
        f"# Written by `forgeml launch {request.recipe.name} --on kubernetes`: kubectl apply -f\n"
    )
    return header + yaml.safe_dump_all(documents, sort_keys=False, width=100)


def check_batches_divide(loaded: Any, processes: int) -> None:
    """Each training step's batch divides over the launch's processes, as the stage will
    require once it runs: said now, before anything is written or submitted, with the
    recipe's line. (A batch the recipe leaves to the stage is chosen to fit.)"""
    from forgeml.core.stages import get_stage

    for index, step in enumerate(loaded.recipe.steps):
        try:
            trains = get_stage(step.uses).every_rank
        except Exception:  # an unknown stage: `forgeml run` names it when it loads the recipe
            continue
        batch, given = step.with_.get("batch_size"), step.with_.get("micro_batch_size")
        if not trains or not isinstance(batch, int) or batch < 1:
            continue
        given = given if isinstance(given, int) and given > 0 else None
        micro = given or max(1, batch // processes)
        if batch % (micro * processes):
            raise loaded.error(
                f"step {step.name!r}: batch_size {batch} does not divide over {processes} "
                f"processes" + (f" in micro-batches of {given}" if given else ""),
                "steps", index, "with", "batch_size",
                hint="a batch_size that is a multiple of nodes x procs-per-node (x "
                "micro_batch_size), or fewer processes",
            )  # fmt: skip
