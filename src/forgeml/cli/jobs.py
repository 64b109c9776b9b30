"""`forgeml jobs`: fine-tuning jobs submitted through the API, and the worker that runs them."""

from __future__ import annotations

import os
import sys

import typer

from forgeml.cli.output import console, emit, options, short_time, table
from forgeml.core.errors import InputError
from forgeml.jobs import queue, worker

app = typer.Typer(
    help="Fine-tuning jobs (from the API) and the worker that runs them.", no_args_is_help=True
)


@app.command("worker")
def run_worker(
    ctx: typer.Context,
    once: bool = typer.Option(
        False, "--once", help="Run the queued jobs (on Slurm: until they end), then exit."
    ),
    poll: float = typer.Option(
        2.0, envvar="FORGEML_JOBS_POLL", help="Seconds between looks at the queue."
    ),
    on: str = typer.Option(
        "local",
        "--on",
        help="local (run jobs here, one at a time), slurm (sbatch each) or ray (a Ray job each).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray: the cluster's Jobs API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS "
        "or RAY_ADDRESS).",
    ),
    partition: str | None = typer.Option(None, "--partition", help="Slurm partition."),
    gpus_per_job: int = typer.Option(0, "--gpus-per-job", min=0, max=64, help="GPUs per job."),
    python: str | None = typer.Option(
        None, "--python", help="forgeml's Python on the compute nodes (default: this one)."
    ),
) -> None:
    """Run queued fine-tuning jobs one at a time (`forgeml serve` starts one for you), or
    hand each to Slurm (`--on slurm`: a compute node runs it; see forgeml/jobs/slurm.py)
    or Ray (`--on ray`: forgeml/jobs/on_ray.py)."""
    if on not in ("local", "slurm", "ray"):
        raise InputError(f"--on {on!r}: one of local, slurm, ray", field="on")
    if on == "ray":
        from forgeml.deploy import ray_jobs
        from forgeml.jobs import on_ray

        address = ray_jobs.api_address(ray_address, dict(os.environ))
        settings = on_ray.RayOptions(address, gpus_per_job, python or sys.executable)
        workspace = options(ctx).open()
        handed = on_ray.dispatch(workspace, settings, once=once, poll_seconds=poll)
        emit(ctx, {"jobs_handed_to_ray": handed},
             lambda: console.print(f"{handed} jobs handed to Ray"))  # fmt: skip
        return
    workspace = options(ctx).open()
    if on == "slurm":
        from forgeml.jobs import slurm

        settings = slurm.SlurmOptions(partition, gpus_per_job, python or sys.executable)
        handed = slurm.dispatch(workspace, settings, once=once, poll_seconds=poll)
        emit(ctx, {"jobs_handed_to_slurm": handed},
             lambda: console.print(f"{handed} jobs handed to Slurm"))  # fmt: skip
        return
    done = worker.work(workspace, once=once, poll_seconds=poll)
    emit(ctx, {"jobs_run": done}, lambda: console.print(f"{done} jobs run"))


@app.command("run", hidden=True)
def run_claimed(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="ftjob-..."),
    owner: str = typer.Option(
        ..., "--owner", help="The lease owner the job was handed to (slurm:ID)."
    ),
) -> None:
    """Run one job a dispatcher claimed and handed here (what a Slurm job runs)."""
    workspace = options(ctx).open()
    job = worker.execute_claimed(workspace, queue.held_by(workspace, job_id, owner), owner)
    emit(ctx, {"id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model,
               "error": job.error},
         lambda: console.print(f"{job.id}: {job.status}"))  # fmt: skip


@app.command("list")
def list_jobs(ctx: typer.Context, limit: int = typer.Option(20, help="Newest N.")) -> None:
    """List fine-tuning jobs, newest first."""
    workspace = options(ctx).open()
    jobs = queue.list_jobs(workspace, limit)
    data = [
        {
            "id": j.id,
            "method": j.method,
            "base_model": j.base_model,
            "status": j.status,
            "fine_tuned_model": j.fine_tuned_model,
            "run_id": j.run_id,
            "error": j.error,
            "dispatched": (j.spec or {}).get("dispatched"),  # {"backend": "slurm", "job": id}
            "created_at": j.created_at.isoformat(),
        }
        for j in jobs
    ]
    emit(
        ctx,
        data,
        lambda: table(
            None,
            ["job", "method", "base", "status", "model", "created"],
            [
                [
                    j.id,
                    j.method,
                    j.base_model,
                    j.status,
                    j.fine_tuned_model or "",
                    short_time(j.created_at),
                ]
                for j in jobs
            ],
        ),
    )


def _change(ctx: typer.Context, action, job_id: str) -> None:
    job = action(options(ctx).open(), job_id)
    emit(
        ctx, {"id": job.id, "status": job.status}, lambda: console.print(f"{job.id}: {job.status}")
    )


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: str = typer.Argument(..., help="ftjob-...")) -> None:
    """Cancel a queued or running job."""
    _change(ctx, queue.cancel, job_id)


@app.command("pause")
def pause(ctx: typer.Context, job_id: str = typer.Argument(..., help="ftjob-...")) -> None:
    """Pause a queued or running job: its training stops after a checkpoint."""
    _change(ctx, queue.pause, job_id)


@app.command("resume")
def resume(ctx: typer.Context, job_id: str = typer.Argument(..., help="ftjob-...")) -> None:
    """Queue a paused job again; its training continues from its last checkpoint."""
    _change(ctx, queue.resume, job_id)
