"""`forgeml batch run`: a file of API requests answered offline, on this machine.

    forgeml batch run support-bot@prod requests.jsonl -o results.jsonl
    forgeml batch run router tickets.jsonl --endpoint /v1/classifications

Each line is OpenAI's batch format (`{"custom_id", "method": "POST", "url", "body"}`);
a body without `model` asks MODEL. The requests go through the same API code a server
runs (validation, engines, request log), `--concurrency` at a time, with no port
opened. Rerun the same command after a crash or Ctrl-C: it goes on from the requests
already answered, never asking one twice. The results file has one line per request,
in input order: OpenAI's output and error lines together.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path

import typer

from forgeml.cli.output import console, emit, options
from forgeml.core.atomic import write_text_atomic
from forgeml.core.errors import ConflictError, InputError

app = typer.Typer(help="Run files of API requests offline (OpenAI's batch format).")

MAX_INPUT_BYTES = 200 * 1024 * 1024  # OpenAI's batch file limit


@app.command("run")
def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model for bodies without one: NAME, NAME@ALIAS..."),
    requests: Path = typer.Argument(..., help="JSONL of batch requests."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Results JSONL [default: REQUESTS.results.jsonl]."
    ),
    endpoint: str = typer.Option("/v1/chat/completions", "--endpoint", help="The lines' url."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256, help="In flight at once."),
) -> None:
    """Answer every request of a batch file with a local model; resumable."""
    from forgeml.jobs import files
    from forgeml.serve.auth import create_key, revoke_key
    from forgeml.serve.batches import store
    from forgeml.serve.batches.protocol import CreateBatchRequest
    from forgeml.serve.batches.serving import create_batch

    if not requests.is_file():
        raise InputError("no such file", path=requests)
    if requests.stat().st_size > MAX_INPUT_BYTES:
        raise InputError(f"larger than {MAX_INPUT_BYTES // 2**20} MiB", path=requests)
    workspace = options(ctx).open()
    content = requests.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    batch = store.find_unfinished(workspace, digest, model)
    resumed = batch is not None
    if batch is None:
        stored = files.store_file(workspace, requests.name, content, "batch")
        key, _ = create_key(workspace, f"batch-cli-{secrets.token_hex(4)}", "inference")
        body = CreateBatchRequest(input_file_id=stored.id, endpoint=endpoint)
        batch = create_batch(workspace, body, key.id, {"via": "forgeml batch run"}, model)
    status = asyncio.run(_run(workspace, batch, model, concurrency))
    done = store.get(workspace, batch.id)
    if done.api_key_id is not None:
        revoke_key(workspace, str(done.api_key_id))  # the run's own key ends with it
    target = out or requests.with_name(requests.stem + ".results.jsonl")
    lines = []
    for file_id in (done.output_file_id, done.error_file_id):
        if file_id:
            lines += files.file_content(workspace, file_id).decode().splitlines()
    order = {line["custom_id"]: n for n, line in enumerate(map(json.loads, content.splitlines()))
             if isinstance(line, dict) and "custom_id" in line}  # fmt: skip
    lines.sort(key=lambda text: order.get(json.loads(text)["custom_id"], 0))
    write_text_atomic(target, "".join(line + "\n" for line in lines))
    payload = {
        "batch": done.id,
        "status": status,
        "resumed": resumed,
        "total": done.total,
        "completed": done.completed,
        "failed": done.failed,
        "results": str(target),
    }
    emit(
        ctx,
        payload,
        lambda: console.print(
            f"{done.id}: {status}{' (resumed)' if resumed else ''}, {done.completed} answered, "
            f"{done.failed} refused of {done.total}; results in {target}"
        ),
    )


async def _run(workspace, batch, model: str, concurrency: int) -> str:
    from forgeml.serve import ServeSettings, create_app
    from forgeml.serve.batches import store

    settings = ServeSettings(job_workers=0, batch_runner=False, batch_concurrency=concurrency)
    app = create_app(workspace, [model], settings)
    runner = app.state.batches
    async with app.router.lifespan_context(app):
        claimed = await asyncio.to_thread(store.claim, workspace, runner.owner, batch.id)
        if claimed is None:
            raise ConflictError(
                f"batch {batch.id} is being run by another process",
                hint="wait for it, or cancel it: POST /v1/batches/{id}/cancel",
            )
        return await runner.run(claimed)
