"""`forgeml launch RECIPE --on slurm|kubernetes`: write (and submit) the cluster job that
runs a recipe under torchrun on several nodes (deploy/launch.py)."""

from __future__ import annotations

import dataclasses
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
from forgeml.deploy.launch import TARGETS, LaunchRequest, render_kubernetes, render_slurm

SUBMIT = {"slurm": ["sbatch"], "kubernetes": ["kubectl", "apply", "-f"]}
SUFFIX = {"slurm": ".sbatch", "kubernetes": ".yaml"}


def launch(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    on: str = typer.Option(
        ...,
        "--on",
        help="Where: slurm (an sbatch script) or kubernetes (an Indexed Job, its headless "
        "Service and the recipe's ConfigMap).",
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
        None, "-o", "--output", help="Where to write it (default: NAME.sbatch or NAME.yaml here)."
    ),
    python: str = typer.Option(
        sys.executable, "--python", help="Slurm: the Python with forgeml on every node."
    ),
    image: str = typer.Option("forgeml", "--image", help="Kubernetes: the forgeml image."),
    workspace_claim: str = typer.Option(
        "forgeml-workspace", "--workspace-claim", help="Kubernetes: the workspace volume's claim."
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Submit it too: sbatch, or kubectl apply -f."
    ),
) -> None:
    """Write the job that runs RECIPE on several machines under torchrun; --submit hands
    it to the scheduler (Slurm or Kubernetes)."""
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
    job = name or re.sub(r"[^a-z0-9-]+", "-", loaded.recipe.name.lower()).strip("-")
    request = dataclasses.replace(request, name=job)
    text = render_slurm(request) if on == "slurm" else render_kubernetes(request)
    path = output or Path(job + SUFFIX[on])
    write_bytes_atomic(path, text.encode("utf-8"))
    if on == "slurm":
        path.chmod(0o755)
    submitted = job_id = None
    if submit:
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
    ))  # fmt: skip
