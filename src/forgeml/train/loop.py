"""The training loop shared by the pre-training stage: a plain loop on `accelerate`.

    state = train(ctx, accelerator, model, optimizer, scheduler, data, settings)

One optimizer step consumes `batch_size` packed sequences (all processes together):
`accumulation = batch_size / (micro_batch_size x processes)` forward/backward passes
per process, gradients synchronised only on the last one. Then gradient clipping,
AdamW, the schedule. Every `eval_every` steps (and at step 0 and the end) it measures
validation loss and bits per byte; every `checkpoint_every` steps it checkpoints; it
stops at `max_steps`, at `max_seconds` (checked at step boundaries), or when the run
is cancelled (after a checkpoint, so the rerun loses nothing).

Determinism: the data position is the step number (see packing.py), the RNG states
and optimizer are restored from the checkpoint, and nothing depends on wall time
except *where* a time-budgeted run stops, which is recorded. So N steps give the same
weights whether they ran straight or across crashes and restarts.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from forgeml.core.errors import RunCancelled
from forgeml.train import sharding
from forgeml.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_partial,
    save_checkpoint,
)
from forgeml.train.packing import PackedBlocks, iter_eval_batches

CONTINUE, OUT_OF_TIME, CANCELLED = 0, 1, 2


@dataclass(frozen=True)
class LoopSettings:
    batch_size: int  # sequences per optimizer step, all processes together
    micro_batch_size: int  # sequences per forward pass, per process
    max_steps: int
    max_seconds: float | None
    max_grad_norm: float
    eval_every: int
    checkpoint_every: int
    log_every: int

    def accumulation(self, processes: int) -> int:
        """Forward/backward passes per optimizer step on each process."""
        return self.batch_size // (self.micro_batch_size * processes)


@dataclass
class TrainState:
    """Everything about progress that is not a tensor; saved with every checkpoint."""

    step: int = 0
    samples_seen: int = 0  # the data position: the next sample is number `samples_seen`
    tokens_seen: int = 0
    seconds: float = 0.0  # wall time over all attempts
    losses: list[float] = field(default_factory=list)  # mean train loss of every step
    evals: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str | None = None
    resumed_from: int | None = None
    world_size: int = 1
    torch_threads: int = 1  # CPU matmuls sum in a thread-count-dependent order


@dataclass
class TrainData:
    train: PackedBlocks
    validation: list[np.ndarray]  # blocks, in order
    byte_lengths: torch.Tensor  # UTF-8 bytes per token id, for bits per byte


@torch.no_grad()
def evaluate(accelerator, model, data: TrainData, batch_size: int) -> dict[str, float]:
    """Mean validation loss (nats/token) and bits per byte, over every process's share.

    Every process runs the same number of forward passes (a process short of batches
    repeats one and counts it zero times): DDP and FSDP forwards are collective, and
    a process with one pass fewer would leave the others waiting.
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
    lengths = data.byte_lengths.to(accelerator.device)
    batches = list(iter_eval_batches(data.validation, batch_size))
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    rounds = math.ceil(len(batches) / accelerator.num_processes)
    for index in range(rounds):
        batch = (mine[index] if index < len(mine) else batches[0]).to(accelerator.device)
        logits = model(input_ids=batch).logits[:, :-1].float()
        targets = batch[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").double()
        bytes_per_target = lengths[targets]
        # Bits per byte leaves out tokens that stand for no text (<s>, </s>), as nanochat.
        counted = torch.stack(
            [
                nll.sum(),
                torch.tensor(nll.numel(), device=nll.device, dtype=torch.float64),
                nll[bytes_per_target > 0].sum(),
                bytes_per_target.sum().double(),
            ]
        )
        if index < len(mine):
            totals += counted
    totals = accelerator.reduce(totals, "sum")
    model.train()
    loss_sum, count, text_nll, text_bytes = totals.tolist()
    return {
        "val_loss": loss_sum / max(count, 1),
        "val_bpb": text_nll / math.log(2) / max(text_bytes, 1),
    }


def _progress(ctx, accelerator) -> Progress | None:
    if not accelerator.is_main_process or ctx.quiet or not sys.stderr.isatty():
        return None
    return Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tokens_per_s]:,.0f} tok/s"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def train(
    ctx,
    accelerator,
    model,
    optimizer,
    scheduler,
    data: TrainData,
    settings: LoopSettings,
    run_record: dict[str, Any],
    fsdp: bool = False,
) -> TrainState:
    """Train from the newest checkpoint in `ctx.checkpoint_dir` (or from scratch).
    `fsdp`: the model is sharded with `fully_shard` (sharding.py), not held by accelerate."""
    world = accelerator.num_processes
    accumulation = settings.accumulation(world)
    tokens_per_step = settings.batch_size * data.train.seq_len
    threads = torch.get_num_threads()
    state = TrainState(world_size=world, torch_threads=threads)
    sharded = (model, optimizer, scheduler) if fsdp else None
    no_sync = sharding.no_sync if fsdp else accelerator.no_sync
    if accelerator.is_main_process:
        remove_partial(ctx.checkpoint_dir)
    accelerator.wait_for_everyone()
    if (latest := latest_checkpoint(ctx.checkpoint_dir)) is not None:
        saved = load_checkpoint(accelerator, latest, sharded)["state"]
        state = TrainState(**{**saved, "resumed_from": saved["step"]})
        if (state.world_size, state.torch_threads) != (world, threads):
            ctx.warn(
                f"checkpoint written by {state.world_size} process(es) with "
                f"{state.torch_threads} torch thread(s), resumed with {world} and {threads}: "
                "the data order is kept but the weights will not be bit-identical to an "
                "uninterrupted run"
            )
            state.world_size, state.torch_threads = world, threads
        ctx.log(f"resuming from step {state.step} ({latest.name})", step=state.step)

    def checkpoint() -> None:
        saved = {"state": asdict(state), **run_record}
        save_checkpoint(accelerator, ctx.checkpoint_dir, state.step, saved, sharded)

    if state.step == 0 and not state.evals and data.validation:
        state.evals.append(
            {"step": 0, **evaluate(accelerator, model, data, settings.micro_batch_size)}
        )
    model.train()
    progress = _progress(ctx, accelerator)
    if progress:
        fields = {"loss": float("nan"), "tokens_per_s": 0.0}
        task = progress.add_task("train", total=settings.max_steps, completed=state.step, **fields)
    started, seconds_before = time.monotonic(), state.seconds
    window_start, window_steps = time.monotonic(), 0
    if progress:
        progress.start()
    try:
        while state.step < settings.max_steps:
            first = state.samples_seen + accelerator.process_index * settings.micro_batch_size
            loss_sum = 0.0
            for micro in range(accumulation):
                start = first + micro * world * settings.micro_batch_size
                batch = data.train.batch(range(start, start + settings.micro_batch_size))
                batch = batch.to(accelerator.device)
                sync = micro == accumulation - 1
                with nullcontext() if sync else no_sync(model):
                    loss = model(input_ids=batch, labels=batch).loss / accumulation
                    accelerator.backward(loss)
                loss_sum += loss.item()
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.samples_seen += settings.batch_size
            state.tokens_seen += tokens_per_step
            state.seconds = seconds_before + time.monotonic() - started
            window_steps += 1

            # One collective per step: the mean loss and rank 0's verdict on stopping.
            verdict = CONTINUE
            if accelerator.is_main_process:
                if ctx.cancelled():
                    verdict = CANCELLED
                elif settings.max_seconds is not None and state.seconds >= settings.max_seconds:
                    verdict = OUT_OF_TIME
            mine = torch.tensor([[loss_sum, verdict]], dtype=torch.float64)
            shared = accelerator.gather(mine.to(accelerator.device))
            loss_value, verdict = float(shared[:, 0].mean()), int(shared[:, 1].max())
            state.losses.append(loss_value)

            # A cancelled run stops without evaluating, so its resumed run's history
            # is the same as an uninterrupted one's.
            last = state.step == settings.max_steps or verdict == OUT_OF_TIME
            if state.step % settings.log_every == 0 or last:
                elapsed = time.monotonic() - window_start
                tokens_per_s = window_steps * tokens_per_step / max(elapsed, 1e-9)
                window_loss = sum(state.losses[-window_steps:]) / window_steps
                window_start, window_steps = time.monotonic(), 0
                ctx.metric(
                    state.step,
                    loss=window_loss,
                    lr=scheduler.get_last_lr()[0],
                    grad_norm=sharding.to_float(grad_norm),
                    tokens_per_s=tokens_per_s,
                )
                if progress:
                    progress.update(task, loss=window_loss, tokens_per_s=tokens_per_s)
            if progress:
                progress.update(task, completed=state.step)
            if data.validation and (state.step % settings.eval_every == 0 or last):
                result = evaluate(accelerator, model, data, settings.micro_batch_size)
                state.evals.append({"step": state.step, **result})
                ctx.metric(state.step, **result)
            if verdict == CANCELLED:
                checkpoint()
                raise RunCancelled(f"run {ctx.run_id} was cancelled at step {state.step}")
            if verdict == OUT_OF_TIME:
                state.stopped_by = "max_seconds"
                break
            if state.step % settings.checkpoint_every == 0 and state.step < settings.max_steps:
                checkpoint()
        else:
            state.stopped_by = "max_steps"
    finally:
        if progress:
            progress.stop()
    return state
