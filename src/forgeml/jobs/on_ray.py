"""Fine-tuning jobs on a Ray cluster: `forgeml jobs worker --on ray --ray-address URL`.

As with Slurm (jobs/slurm.py): the dispatcher claims each queued job and hands it to
the cluster, here as a Ray job (Ray's Jobs API, the head's dashboard address) whose
entrypoint runs `forgeml jobs run JOB --owner ray:SUBMISSION_ID` on a node with the CPUs
and GPUs asked for. The submission id is chosen here, so the job's lease passes to
`ray:ID` *before* the submission: the lease belongs to the Ray job from its first moment,
a dispatcher that stops leaves its jobs to Ray, the next one watches them on, and no
worker takes up a job Ray still has pending or running (a lapsed `ray:` lease is checked
with the cluster at the address recorded with the job). A Ray job that ends before its
fine-tuning job did fails the job with Ray's status and message. A cancel through the
API cancels a job Ray has not started, and asks Ray to stop it (Ray delivers that stop
when it schedules the job, so a job waiting for a GPU stays listed as pending; if it
ever starts, `jobs run` finds the job cancelled and exits); a running one stops at its
next step, as with a local worker.

The cluster needs what `forgeml launch --on ray` needs: forgeml on its nodes, the
workspace where they see it (a shared filesystem, or the registry on PostgreSQL with a
shared artifact store).
"""

from __future__ import annotations

import logging
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forgeml.deploy import ray_jobs
from forgeml.jobs import queue

if TYPE_CHECKING:
    from forgeml.core.schema import FineTuningJob
    from forgeml.core.workspace import Workspace

log = logging.getLogger("forgeml.jobs")
ACTIVE = {"PENDING", "RUNNING"}  # Ray's job states that are not over


@dataclass(frozen=True)
class RayOptions:
    address: str  # the Jobs API: http://HEAD:8265
    gpus_per_job: int = 0
    python: str = field(default_factory=lambda: sys.executable)


def _entrypoint(root: str, job_id: str, submission_id: str, python: str) -> str:
    command = [python, "-m", "forgeml", "--workspace", root, "jobs", "run", job_id,
               "--owner", f"ray:{submission_id}"]  # fmt: skip
    return shlex.join(command)


def _status(jobs: Any, submission_id: str) -> tuple[str | None, str]:
    """Ray's status of the job and its message; (None, "") once Ray does not know it."""
    try:
        info = jobs.get_job_info(submission_id)
    except RuntimeError as exc:  # how the client reports an HTTP error
        if "status code 404" in str(exc):
            return None, ""
        raise
    return str(info.status.value), info.message or ""


def _hand_over(workspace: Workspace, jobs: Any, job: FineTuningJob, owner: str,
               options: RayOptions) -> None:  # fmt: skip
    submission_id = f"forgeml-{job.id}-{secrets.token_hex(4)}"
    details = {"address": options.address}
    if not queue.hand_over(workspace, job.id, owner, "ray", submission_id, details):
        return  # cancelled meanwhile
    ray_job = ray_jobs.RayJob(
        entrypoint=_entrypoint(str(workspace.root), job.id, submission_id, options.python),
        num_cpus=1,
        num_gpus=options.gpus_per_job,
        env_vars={"FORGEML_LAUNCH": "ray"},
        metadata={"forgeml_fine_tuning_job": job.id},
    )
    try:
        ray_jobs.submit_job(jobs, **ray_job.submit_kwargs(), submission_id=submission_id)
    except Exception as exc:  # Ray's client raises RuntimeError, ConnectionError, its own
        queue.finish(workspace, job.id, "failed", owner=f"ray:{submission_id}",
                     error=f"the Ray cluster at {options.address} refused the job: "
                     f"{str(exc)[-2000:]}")  # fmt: skip
        return
    log.info("%s: Ray job %s", job.id, submission_id)


def _watch(workspace: Workspace, clients: dict[str, Any], job: FineTuningJob) -> bool:
    """`_watch_one`, and a cluster that does not answer is a warning and another look
    later, not the end of the dispatcher (its other jobs still need watching; the
    lapsed lease stays Ray's while Ray cannot be asked: `still_has`)."""
    try:
        return _watch_one(workspace, clients, job)
    except Exception as exc:  # the cluster unreachable, its client's errors
        log.warning("%s: cannot ask Ray about job %s: %s", job.id, job.lease_owner, exc)
        return True


def _watch_one(workspace: Workspace, clients: dict[str, Any], job: FineTuningJob) -> bool:
    """Renew, cancel or close one job Ray holds; False once it needs no more watching.
    Asked of the cluster the job went to (another dispatcher may have used another)."""
    owner = job.lease_owner
    submission_id = owner.removeprefix("ray:")
    address = (job.spec or {}).get("dispatched", {}).get("address", "")
    if address not in clients:
        clients[address] = ray_jobs.client(address)
    jobs = clients[address]
    # Ray first: the node records the job's end before its Ray job ends, so a job still
    # unfinished after Ray says "over" was not finished by that node.
    status, message = _status(jobs, submission_id)
    job = queue.get_job(workspace, job.id)
    if queue.is_finished(job.status) or job.lease_owner != owner:
        return False
    if status in ACTIVE:
        if job.cancel_requested and status == "PENDING":  # never started: take it back
            jobs.stop_job(submission_id)
            queue.finish(workspace, job.id, "cancelled", owner=owner)
            return False
        queue.renew_lease(workspace, job.id, owner)
        return True
    queue.finish(workspace, job.id, "failed", owner=owner,
                 error=f"Ray job {submission_id} ended {status or 'and was forgotten'} before "
                 f"the fine-tuning job finished{': ' + message if message else ''}; its log: "
                 f"ray job logs {submission_id}")  # fmt: skip
    return False


def still_has(submission_id: str, dispatched: dict) -> bool:
    """Ray has the job pending or running; True too when the cluster cannot say (a
    fine-tuning job is never run twice on a guess)."""
    address = dispatched.get("address")
    if not address:
        return False
    try:
        status, _ = _status(ray_jobs.client(address), submission_id)
    except Exception:  # the cluster or its client unreachable from here
        log.warning("Ray cannot tell job %s's state; leaving it to Ray", submission_id)
        return True
    return status in ACTIVE


def dispatch(
    workspace: Workspace, options: RayOptions, *, once: bool = False, poll_seconds: float = 2.0
) -> int:
    """Hand queued jobs to Ray and watch every job Ray holds (a stopped dispatcher's too),
    until none is left (`once`) or forever; returns how many were handed over."""
    clients = {options.address: ray_jobs.client(options.address)}  # dead: before any claim
    owner, handed = queue.worker_id(), 0
    while True:
        while (job := queue.claim_next(workspace, owner)) is not None:
            _hand_over(workspace, clients[options.address], job, owner, options)
            handed += 1
        watching = [job for job in queue.dispatched(workspace, "ray")
                    if _watch(workspace, clients, job)]  # fmt: skip
        if once and not watching:
            return handed
        time.sleep(poll_seconds)
