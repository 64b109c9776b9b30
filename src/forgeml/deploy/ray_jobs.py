"""`forgeml launch RECIPE --on ray`: a recipe as a Ray job, through the cluster's Jobs
API (its dashboard address, `http://HEAD:8265`).

Ray schedules the job's entrypoint on a node with the CPUs and GPUs it asks for; the
entrypoint is `torchrun --standalone` with `--procs-per-node` processes there, each
running `forgeml run RECIPE` (rank 0 runs each step; core/recipes.py). One node: Ray
Jobs has no multi-node rendezvous of its own, so several nodes are Slurm's or
Kubernetes' (`--on slurm|kubernetes`). The workspace must be where the node sees it (a
shared filesystem, or the registry on PostgreSQL with a shared artifact store).

What is written is a script that runs `ray job submit` with the same entrypoint,
resources and environment that `--submit` sends through Ray's Python client; each run
records the Ray job it ran in (core/runs.py `launch_record`).
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from dataclasses import dataclass
from typing import Any

from forgeml.core.errors import ForgeError, InputError
from forgeml.deploy.launch import LaunchRequest

CONNECT_SECONDS = 5.0
AGENT_WAIT_SECONDS = 60.0
API_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")  # what `ray job submit` reads


@dataclass(frozen=True)
class RayJob:
    entrypoint: str
    num_cpus: int
    num_gpus: int
    env_vars: dict[str, str]
    metadata: dict[str, str]

    def submit_kwargs(self) -> dict[str, Any]:
        """For `JobSubmissionClient.submit_job`."""
        kwargs: dict[str, Any] = {
            "entrypoint": self.entrypoint,
            "entrypoint_num_cpus": self.num_cpus,
            "runtime_env": {"env_vars": dict(self.env_vars)},
            "metadata": dict(self.metadata),
        }
        if self.num_gpus:
            kwargs["entrypoint_num_gpus"] = self.num_gpus
        return kwargs


def ray_job(request: LaunchRequest) -> RayJob:
    request.check()
    if request.nodes != 1:
        raise InputError(
            f"--on ray runs a recipe on one node of the cluster, not {request.nodes}",
            field="nodes",
            hint="several nodes: --on slurm or --on kubernetes (torchrun's rendezvous across "
            "machines); on Ray, --procs-per-node processes on one node",
        )
    if not request.workspace:
        raise InputError("a Ray launch needs the workspace's path as the cluster's node sees it")
    torchrun = [request.python, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(request.procs_per_node)]  # fmt: skip
    entrypoint = shlex.join(torchrun + request.forgeml_args(request.workspace, str(request.recipe)))
    return RayJob(
        entrypoint=entrypoint,
        num_cpus=request.procs_per_node,  # a core per process at the least
        num_gpus=request.gpus_per_node,
        env_vars={"FORGEML_LAUNCH": "ray", "FORGEML_WORKSPACE": request.workspace},
        metadata={"forgeml_job": request.name, "forgeml_recipe": request.recipe.name},
    )


def render_ray(request: LaunchRequest) -> str:
    """A script that submits the job with Ray's own CLI (`ray job submit --no-wait`)."""
    job = ray_job(request)
    gpus = f"  --entrypoint-num-gpus {job.num_gpus} \\\n" if job.num_gpus else ""
    runtime_env = json.dumps({"env_vars": job.env_vars}, sort_keys=True)
    metadata = json.dumps(job.metadata, sort_keys=True)
    return f"""#!/bin/bash
# Written by `forgeml launch {request.recipe.name} --on ray`: run it to submit the job.
# The cluster's Jobs API (its dashboard): RAY_API_SERVER_ADDRESS=http://HEAD:8265; a
# cluster with token authentication (Ray's default since 2.5x) also RAY_AUTH_MODE=token.
# Follow it: ray job logs --follow SUBMISSION-ID
set -euo pipefail
exec "${{RAY:-ray}}" job submit --no-wait \\
  --entrypoint-num-cpus {job.num_cpus} \\
{gpus}  --runtime-env-json {shlex.quote(runtime_env)} \\
  --metadata-json {shlex.quote(metadata)} \\
  -- {job.entrypoint}
"""


def api_address(given: str | None, environ: dict[str, str]) -> str:
    """The Jobs API's URL: --ray-address, else what `ray job submit` reads."""
    address = given or next((environ[name] for name in API_ADDRESS_ENV if environ.get(name)), "")
    if not address:
        raise InputError(
            "submitting to Ray needs the cluster's Jobs API address",
            field="ray_address",
            hint="--ray-address http://HEAD:8265 (the dashboard's port), or RAY_API_SERVER_ADDRESS",
        )
    if address.startswith("ray://"):
        raise InputError(
            f"{address} is a Ray Client address; jobs are submitted to the dashboard's",
            field="ray_address",
            hint="http://HEAD:8265",
        )
    return address if "://" in address else f"http://{address}"


def client(address: str) -> Any:
    """Ray's Jobs API client for `address` (a URL). A dead address is an error in seconds,
    before anything is submitted (Ray's client would otherwise wait)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ForgeError(
            "submitting to Ray needs Ray's client here", hint="pip install 'forgeml[ray]'"
        )
    host, _, port = address.split("://", 1)[-1].split("/", 1)[0].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port or 80)), CONNECT_SECONDS).close()
    except (OSError, ValueError) as exc:
        raise ForgeError(
            f"the Ray Jobs API at {address} does not answer: {exc}",
            hint="the head node's dashboard address and port (8265 by default); "
            "nothing was submitted",
        ) from exc
    from forgeml.data.ray_executor import use_token_if_given

    use_token_if_given()  # before Ray is imported: it reads RAY_AUTH_MODE then
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # Ray's client raises RuntimeError, ConnectionError, its own
        raise ForgeError(f"the Ray Jobs API at {address} refused this client: {exc}") from exc


def submit_job(jobs: Any, **kwargs: Any) -> str:
    """`jobs.submit_job(**kwargs)`, again while the head says its job agent is not up yet
    (a cluster just started answers "No available agent to submit job, please try again
    later" for its first seconds); Ray's error after AGENT_WAIT_SECONDS."""
    deadline = time.monotonic() + AGENT_WAIT_SECONDS
    while True:
        try:
            return jobs.submit_job(**kwargs)
        except RuntimeError as exc:
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def submit(job: RayJob, address: str, submission_id: str | None = None) -> str:
    """Submit through Ray's Jobs API; the submission id."""
    jobs = client(address)
    try:
        return submit_job(jobs, **job.submit_kwargs(), submission_id=submission_id)
    except Exception as exc:  # Ray's client raises RuntimeError, ConnectionError, its own
        raise ForgeError(f"the Ray cluster at {address} refused the job: {exc}") from exc
