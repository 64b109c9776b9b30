"""Fine-tuning jobs on a Slurm cluster: `forgeml jobs worker --on slurm`.

The dispatcher claims each queued job (the claim a local worker makes, so exactly one
dispatcher or worker gets a job) and hands it to Slurm: an sbatch script that runs
`forgeml jobs run JOB --owner OWNER` on a compute node, which runs the job's stages as a
local worker would and records the outcome. The dispatcher renews the job's lease while
Slurm holds it (queued in Slurm too), the compute node while it trains. A Slurm job that
ends before its fine-tuning job did (a node lost, the time limit, `scancel`) fails the
job with Slurm's state and the path of its log. A cancel through the API `scancel`s a job
still waiting in Slurm; a running one stops at its next step, as with a local worker.

What the cluster needs is what `forgeml launch` needs: the workspace on a filesystem the
nodes share, the registry on PostgreSQL, and forgeml's Python on every node (`--python`).
The scripts and Slurm's logs are kept in the workspace under `serving/slurm/`.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from forgeml.core.atomic import write_bytes_atomic
from forgeml.core.errors import ForgeError
from forgeml.jobs import queue

if TYPE_CHECKING:
    from forgeml.core.schema import FineTuningJob
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.jobs")

# Slurm's states of a job that is not over (scontrol's JobState).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    python: str = field(default_factory=lambda: sys.executable)


def check_slurm() -> None:
    """Before any job is claimed: Slurm's commands are here and its controller answers."""
    missing = [tool for tool in ("sbatch", "scontrol", "scancel") if shutil.which(tool) is None]
    if missing:
        raise ForgeError(
            f"{', '.join(missing)} not on PATH: jobs cannot be handed to Slurm from here",
            hint="run `forgeml jobs worker --on slurm` on a machine with Slurm's client "
            "commands (a login node), or `forgeml jobs worker` to run jobs here",
        )
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    if ping.returncode != 0 or "DOWN" in ping.stdout:
        answer = (ping.stdout.strip().splitlines() or [ping.stderr.strip()])[0]
        raise ForgeError(
            f"the Slurm controller does not answer: {answer}",
            hint="check slurmctld (and SLURM_CONF); no job was claimed",
        )


def render_script(root: Path, job_id: str, owner: str, options: SlurmOptions) -> str:
    """The sbatch script that runs one claimed job on a compute node."""
    logs = root / "serving" / "slurm"
    directives = [
        f"--job-name=forgeml-{job_id}",
        "--nodes=1",
        "--ntasks=1",
        f"--output={logs}/{job_id}-%j.out",
    ]
    if options.partition:
        directives.append(f"--partition={options.partition}")
    if options.gpus_per_job:
        directives.append(f"--gpus-per-node={options.gpus_per_job}")
    command = [options.python, "-m", "forgeml", "--workspace", str(root), "jobs", "run",
               job_id, "--owner", owner]  # fmt: skip
    return (
        "#!/bin/bash\n"
        f"# Written by `forgeml jobs worker --on slurm` for fine-tuning job {job_id}.\n"
        + "".join(f"#SBATCH {directive}\n" for directive in directives)
        + "set -euo pipefail\nexport FORGEML_LAUNCH=slurm\n"
        + f"exec {shlex.join(command)}\n"
    )


def submit(script: Path) -> str:
    """sbatch the script; Slurm's job id."""
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if done.returncode != 0:
        raise ForgeError(f"sbatch refused the job: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().split(";")[0]


def slurm_state(slurm_id: str) -> str | None:
    """The Slurm job's state, or None once Slurm no longer knows it (purged: it is over)."""
    done = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    found = re.search(r"\bJobState=(\w+)", done.stdout)
    if found:
        return found[1]
    if "Invalid job id" in done.stderr:
        return None
    raise ForgeError(f"scontrol cannot tell job {slurm_id}'s state: {done.stderr.strip()}")


def _hand_over(workspace: Workspace, job: FineTuningJob, owner: str, options: SlurmOptions) -> str:
    script = workspace.root / "serving" / "slurm" / f"{job.id}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(script, render_script(workspace.root, job.id, owner, options).encode())
    slurm_id = submit(script)
    queue.note_dispatch(workspace, job.id, "slurm", slurm_id)
    log.info("%s: Slurm job %s", job.id, slurm_id)
    return slurm_id


def _watch(workspace: Workspace, job_id: str, slurm_id: str, owner: str) -> bool:
    """Renew, cancel or close one handed-over job; False once it needs no more watching."""
    # Slurm first: a compute node records the job's end before its Slurm job ends, so a
    # job still unfinished after Slurm says "over" was not finished by that node.
    state = slurm_state(slurm_id)
    job = queue.get_job(workspace, job_id)
    if queue.is_finished(job.status):
        return False
    if state in ACTIVE:
        if job.cancel_requested and state == "PENDING":  # never started: take it back
            subprocess.run(["scancel", slurm_id], capture_output=True, timeout=60)
            queue.finish(workspace, job_id, "cancelled", owner=owner)
            return False
        queue.renew_lease(workspace, job_id, owner)
        return True
    output = workspace.root / "serving" / "slurm" / f"{job_id}-{slurm_id}.out"
    queue.finish(workspace, job_id, "failed", owner=owner,
                 error=f"Slurm job {slurm_id} ended {state or 'and was purged'} before the "
                 f"fine-tuning job finished; its log: {output}")  # fmt: skip
    return False


def dispatch(
    workspace: Workspace, options: SlurmOptions, *, once: bool = False, poll_seconds: float = 2.0
) -> int:
    """Hand queued jobs to Slurm and watch them, until none is left (`once`) or forever;
    returns how many were handed over."""
    check_slurm()
    owner, handed, watching = queue.worker_id(), 0, {}
    while True:
        while (job := queue.claim_next(workspace, owner)) is not None:
            try:
                watching[job.id] = _hand_over(workspace, job, owner, options)
                handed += 1
            except ForgeError as error:  # a refused submission fails this job, not the rest
                queue.finish(workspace, job.id, "failed", owner=owner, error=error.message)
        for job_id, slurm_id in list(watching.items()):
            if not _watch(workspace, job_id, slurm_id, owner):
                del watching[job_id]
        if once and not watching:
            return handed
        time.sleep(poll_seconds)
