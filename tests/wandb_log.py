"""Read an offline W&B run's `.wandb` log in tests (wandb 0.31 ships no Python reader).

The log is LevelDB-style: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
of records, each a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle,
4 last) and a chunk of a serialised `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        pending += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history(path: Path) -> list[dict[str, Any]]:
    """Every logged row, values decoded from JSON."""
    return [
        {_key(item): json.loads(item.value_json) for item in record.history.item}
        for record in records(path)
        if record.WhichOneof("record_type") == "history"
    ]


def run(path: Path) -> Any:
    """The `run` record: display_name, project, tags, config."""
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"{path} has no run record")


def config(path: Path) -> dict[str, Any]:
    """The run's config as its `run` record carries it."""
    return {_key(item): json.loads(item.value_json) for item in run(path).config.update}


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)
