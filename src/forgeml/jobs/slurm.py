"""Fine-tuning jobs on a Slurm cluster: `forgeml jobs worker --on slurm`.

The dispatcher claims each queued job (the claim a local worker makes, so exactly one
dispatcher or worker gets a job) and hands it to Slurm: an sbatch script that runs
`forgeml jobs run JOB --owner slurm:SLURM_JOB_ID` on a compute node, which runs the job's
stages as a local worker would and records the outcome. The job is submitted held, its
lease passed to `slurm:ID`, then released, so the lease belongs to the Slurm job, not to
the dispatcher's process: a dispatcher that stops leaves its jobs to Slurm, the next one
watches them on, and no worker takes up a job Slurm still has queued or running (an
expired `slurm:` lease is checked with scontrol). Dispatchers renew the leases while Slurm
holds a job; the compute node renews it while it trains. A Slurm job that
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


def render_script(root: Path, job_id: str, options: SlurmOptions) -> str:
    """The sbatch script that runs one handed-over job on a compute node. The node holds
    the job as `slurm:$SLURM_JOB_ID`, the owner `queue.hand_over` gave it."""
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
    command = [options.python, "-m", "forgeml", "--workspace", str(root), "jobs", "run", job_id]
    return (
        "#!/bin/bash\n"
        f"# Written by `forgeml jobs worker --on slurm` for fine-tuning job {job_id}.\n"
        + "".join(f"#SBATCH {directive}\n" for directive in directives)
        + "set -euo pipefail\nexport FORGEML_LAUNCH=slurm\n"
        + f'exec {shlex.join(command)} --owner "slurm:${{SLURM_JOB_ID}}"\n'
    )


def submit(script: Path, *, hold: bool = False) -> str:
    """sbatch the script (held: it waits for `release`); Slurm's job id."""
    command = ["sbatch", "--parsable", *(["--hold"] if hold else []), str(script)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ForgeError(f"sbatch refused the job: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().split(";")[0]


def _scontrol(*args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ForgeError(f"scontrol {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")


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


def still_has(slurm_id: str) -> bool:
    """Slurm has the job queued or running; True too when its controller cannot say (a
    fine-tuning job is never run twice on a guess), False without Slurm's commands here."""
    if shutil.which("scontrol") is None:
        return False
    try:
        state = slurm_state(slurm_id)
    except (ForgeError, subprocess.TimeoutExpired):
        log.warning("Slurm cannot tell job %s's state; leaving it to Slurm", slurm_id)
        return True
    return state in ACTIVE


def _hand_over(workspace: Workspace, job: FineTuningJob, owner: str, options: SlurmOptions) -> None:
    """Submit held, pass the job's lease to the Slurm job, then release it: the node that
    runs it finds the job already its own, and the lease no longer dies with this process."""
    script = workspace.root / "serving" / "slurm" / f"{job.id}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(script, render_script(workspace.root, job.id, options).encode())
    slurm_id = submit(script, hold=True)
    if not queue.hand_over(workspace, job.id, owner, "slurm", slurm_id):  # cancelled meanwhile
        subprocess.run(["scancel", slurm_id], capture_output=True, timeout=60)
        return
    try:
        _scontrol("release", slurm_id)
    except ForgeError as error:
        subprocess.run(["scancel", slurm_id], capture_output=True, timeout=60)
        queue.finish(workspace, job.id, "failed", owner=f"slurm:{slurm_id}", error=error.message)
        return
    log.info("%s: Slurm job %s", job.id, slurm_id)


def _watch(workspace: Workspace, job: FineTuningJob) -> bool:
    """Renew, cancel or close one job Slurm holds; False once it needs no more watching."""
    owner = job.lease_owner
    slurm_id = owner.removeprefix("slurm:")
    # Slurm first: a compute node records the job's end before its Slurm job ends, so a
    # job still unfinished after Slurm says "over" was not finished by that node.
    state = slurm_state(slurm_id)
    job = queue.get_job(workspace, job.id)
    if queue.is_finished(job.status) or job.lease_owner != owner:
        return False
    if state in ACTIVE:
        if job.cancel_requested and state == "PENDING":  # never started: take it back
            subprocess.run(["scancel", slurm_id], capture_output=True, timeout=60)
            queue.finish(workspace, job.id, "cancelled", owner=owner)
            return False
        queue.renew_lease(workspace, job.id, owner)
        return True
    output = workspace.root / "serving" / "slurm" / f"{job.id}-{slurm_id}.out"
    queue.finish(workspace, job.id, "failed", owner=owner,
                 error=f"Slurm job {slurm_id} ended {state or 'and was purged'} before the "
                 f"fine-tuning job finished; its log: {output}")  # fmt: skip
    return False


def dispatch(
    workspace: Workspace, options: SlurmOptions, *, once: bool = False, poll_seconds: float = 2.0
) -> int:
    """Hand queued jobs to Slurm and watch every job Slurm holds (a stopped dispatcher's
    too), until none is left (`once`) or forever; returns how many were handed over."""
    check_slurm()
    owner, handed = queue.worker_id(), 0
    while True:
        while (job := queue.claim_next(workspace, owner)) is not None:
            try:
                _hand_over(workspace, job, owner, options)
                handed += 1
            except ForgeError as error:  # a refused submission fails this job, not the rest
                queue.finish(workspace, job.id, "failed", owner=owner, error=error.message)
        watching = [job for job in queue.dispatched(workspace, "slurm") if _watch(workspace, job)]
        if once and not watching:
            return handed
        time.sleep(poll_seconds)
