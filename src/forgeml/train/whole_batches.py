"""Every optimizer step trains on the same examples, whatever the number of processes.

transformers' trainers shuffle with accelerate's seeded sampler and then deal micro
batches out to the processes. An epoch whose length is not a multiple of the global
batch ends in a short step, and how that step is filled depends on the world size: one
process trains on the few examples left; several processes pad their shards with
examples from the start of the epoch (accelerate's `even_batches`). So a run launched on
two processes and resumed on one (or the other way round) saw different examples from
the first epoch's end on (measured: step 4 of a 15-example, batch-4 run differed by
0.27% in loss, and every later step with it).

`WholeBatchSampler` pads each epoch's shuffled order to a multiple of the global batch
itself, repeating its first examples, so every step is a whole batch and consists of the
same examples at any world size; the processes then only change the order of float sums.
The order is accelerate's (a `randperm` seeded with seed + epoch), so an epoch that
already divides into batches is shuffled exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from forgeml.core.atomic import write_json_atomic
from forgeml.core.runs import launch_rank
from forgeml.train.checkpoint_files import CHECKPOINT_PREFIX


class WholeBatchSampler(Sampler[int]):
    """A seeded shuffle per epoch, padded to whole batches of `batch_size`.

    Not a `RandomSampler` subclass on purpose: accelerate swaps any `RandomSampler`
    for its own, which would drop the padding."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.batch_size) * self.batch_size if self.size else 0

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        while order and len(order) % self.batch_size:
            order.extend(order[: self.batch_size - len(order) % self.batch_size])
        yield from order
        self.epoch += 1  # as accelerate's sampler does when nobody calls set_epoch


def with_whole_batches(trainer_class: type) -> type:
    """`trainer_class` whose training data comes through a `WholeBatchSampler` sized to
    its global batch (micro batch x accumulation x processes)."""

    class WholeBatches(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            batch = self.get_total_train_batch_size(self.args)
            return WholeBatchSampler(len(dataset), batch, seed)

    WholeBatches.__name__ = WholeBatches.__qualname__ = trainer_class.__name__
    return WholeBatches


# --- resuming on another launch ------------------------------------------------------------

LAUNCH_FILE = "forgeml_launch.json"  # in each checkpoint: the launch that wrote it


class LaunchRecord(TrainerCallback):
    """Writes the processes and torch threads of this launch into every checkpoint, so a
    resume can say when it continues on another (pre-training keeps them in its state)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if folder.is_dir():
                write_json_atomic(folder / LAUNCH_FILE, this_launch())


def this_launch() -> dict[str, int]:
    return {"processes": launch_rank()[1], "torch_threads": torch.get_num_threads()}


def launch_change(checkpoint: Path) -> str | None:
    """What a resume from `checkpoint` should say when this launch differs from the one
    that wrote it (None when it does not, or the checkpoint does not say)."""
    try:
        then = json.loads((checkpoint / LAUNCH_FILE).read_text())
    except (OSError, ValueError):
        return None  # written before launches were recorded, or cut short: nothing to compare
    now = this_launch()
    if (then.get("processes"), then.get("torch_threads")) == (
        now["processes"],
        now["torch_threads"],
    ):
        return None
    return (
        f"checkpoint written by {then.get('processes')} process(es) with "
        f"{then.get('torch_threads')} torch thread(s), resumed with {now['processes']} and "
        f"{now['torch_threads']}: the weights will not be bit-identical to an uninterrupted "
        "run (float sums run in another order)"
    )
