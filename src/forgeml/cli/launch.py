"""`forgeml launch RECIPE --on slurm|kubernetes|ray`: write (and submit) the cluster job
that runs a recipe under torchrun (deploy/launch.py, deploy/ray_jobs.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options
from forgeml.core.atomic import write_bytes_atomic
from forgeml.core.errors import ForgeError, InputError
from forgeml.core.recipes import load_recipe, parse_variables
from forgeml.deploy import ray_jobs
from forgeml.deploy.launch import (
    TARGETS,
    LaunchRequest,
    check_batches_divide,
    render_kubernetes,
    render_slurm,
)

SUBMIT = {"slurm": ["sbatch"], "kubernetes": ["kubectl", "apply", "-f"],
          "ray": ["RAY_API_SERVER_ADDRESS=http://HEAD:8265", "bash"]}  # fmt: skip
SUFFIX = {"slurm": ".sbatch", "kubernetes": ".yaml", "ray": ".ray.sh"}
RENDER = {"slurm": render_slurm, "kubernetes": render_kubernetes, "ray": ray_jobs.render_ray}


def launch(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    on: str = typer.Option(
        ...,
        "--on",
        help="Where: slurm (an sbatch script), kubernetes (an Indexed Job, its headless "
        "Service and the recipe's ConfigMap) or ray (a script running `ray job submit`; "
        "one node).",
    ),
    nodes: int = typer.Option(1, "--nodes", help="Machines."),
    procs_per_node: int = typer.Option(
        1, "--procs-per-node", help="Training processes per machine (one per GPU)."
    ),
    gpus_per_node: int = typer.Option(0, "--gpus-per-node", help="GPUs to ask for per machine."),
    variables: list[str] = typer.Option(
        [], "--var", help="Set a recipe variable `${NAME}`: NAME=VALUE (repeatable)."
    ),
    name: str | None = typer.Option(None, "--name", help="The job's name (default: the recipe's)."),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Where to write it (default: NAME.sbatch, NAME.yaml or NAME.ray.sh here).",
    ),
    python: str = typer.Option(
        sys.executable, "--python", help="Slurm, Ray: the Python with forgeml on every node."
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray: the cluster's Jobs API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS "
        "or RAY_ADDRESS).",
    ),
    image: str = typer.Option("forgeml", "--image", help="Kubernetes: the forgeml image."),
    workspace_claim: str = typer.Option(
        "forgeml-workspace", "--workspace-claim", help="Kubernetes: the workspace volume's claim."
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Submit it too: sbatch, kubectl apply -f, or Ray's Jobs API."
    ),
) -> None:
    """Write the job that runs RECIPE under torchrun on a cluster; --submit hands it to the
    scheduler (Slurm, Kubernetes or Ray)."""
    if on not in TARGETS:
        raise InputError(f"--on {on!r}: one of {', '.join(TARGETS)}", field="on")
    request = LaunchRequest(
        recipe=recipe.resolve(),
        name=name or "recipe",
        nodes=nodes,
        procs_per_node=procs_per_node,
        gpus_per_node=gpus_per_node,
        variables=list(variables),
        workspace=str(options(ctx).workspace.resolve()),
        python=python,
        image=image,
        workspace_claim=workspace_claim,
    )
    request.check()  # the request's own mistakes first: they need no recipe loaded
    loaded = load_recipe(recipe, [], parse_variables(variables))  # a bad recipe fails here
    check_batches_divide(loaded, nodes * procs_per_node)
    job = name or re.sub(r"[^a-z0-9-]+", "-", loaded.recipe.name.lower()).strip("-")
    request = dataclasses.replace(request, name=job)
    text = RENDER[on](request)
    address = ray_jobs.api_address(ray_address, dict(os.environ)) if submit and on == "ray" else ""
    path = output or Path(job + SUFFIX[on])
    write_bytes_atomic(path, text.encode("utf-8"))
    if on in ("slurm", "ray"):
        path.chmod(0o755)
    submitted = job_id = follow = None
    if submit and on == "ray":
        job_id = ray_jobs.submit(ray_jobs.ray_job(request), address)
        submitted = f"Ray job {job_id} submitted to {address}"
        follow = f"ray job logs --follow --address {address} {job_id}"
    elif submit:
        tool = SUBMIT[on]
        if shutil.which(tool[0]) is None:
            raise ForgeError(
                f"{tool[0]} is not on PATH, so the job cannot be submitted from here",
                hint=f"{path} is written: submit it where {tool[0]} runs",
            )
        if on == "slurm":
            from forgeml.jobs import slurm  # the queue's modules: only when submitting

            job_id = slurm.submit(path)  # sbatch --parsable, as the jobs dispatcher does
            submitted = f"Submitted batch job {job_id}"
        else:
            done = subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise ForgeError(f"{tool[0]} refused the job: {done.stderr.strip()[-2000:]}")
            submitted = done.stdout.strip()
    data = {"target": on, "file": str(path), "job": job, "nodes": nodes,
            "processes": nodes * procs_per_node, "submitted": submitted,
            "job_id": job_id}  # fmt: skip
    emit(ctx, data, lambda: console.print(
        f"wrote {path} ({nodes} x {procs_per_node} processes)"
        + (f"; {submitted}" if submitted else f"; submit: {' '.join(SUBMIT[on])} {path}")
        + (f"\nfollow it: {follow}" if follow else "")
    ))  # fmt: skip
