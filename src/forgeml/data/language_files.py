"""py3langid's model as plain files read through mmap, instead of ~75 MB in every process.

py3langid ships its model LZMA-compressed and unpacks it into each process's private
memory: 74 MB resident for a server that only labels the language of its requests (half
a tiny model's server). Unpacked once into raw arrays beside the installation, the same
model is mapped read-only: the kernel pages in only the rows that texts touch (a few MB
for a day of English tickets), shares them between every forgeml process on the machine,
and can drop them under memory pressure. Answers are py3langid's own: its
`LanguageIdentifier` runs over the mapped arrays (tests/data/test_language.py compares).

    python -m forgeml.data.language_files        # unpack now (the container build does)

Where the files live, first found wins, first writable is where they are unpacked:
`<sys.prefix>/share/forgeml/py3langid-<version>-<format>/` (the virtual environment or
the image), then `~/.cache/forgeml/py3langid-<version>-<format>/`. Neither writable: the caller loads the
model into memory as py3langid does.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from forgeml.core.atomic import fsync_dir, write_bytes_atomic
from forgeml.core.user_cache import cache_root

FORMAT = 2  # in the directory's name: a new layout is unpacked beside an old one
INDEX = "model.json"
STALE_SECONDS = 600  # an unpack takes ~1 s


def model_directories() -> list[Path]:
    name = f"py3langid-{version('py3langid')}-{FORMAT}"
    return [Path(sys.prefix) / "share" / "forgeml" / name, cache_root() / name]


def unpacked_model() -> Path:
    """The directory of the unpacked model, unpacking it where it is missing; OSError
    when no location is writable."""
    places = model_directories()
    for place in places:
        if _complete(place):
            return place
    error: OSError | None = None
    for place in places:
        try:
            return unpack(place)
        except OSError as failure:
            error = failure
    assert error is not None
    raise error


def _complete(place: Path) -> bool:
    try:
        return json.loads((place / INDEX).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def unpack(place: Path) -> Path:
    """Write the model's arrays into `place` as a whole: into a sibling temporary
    directory renamed into place, so a reader never sees half a model and a process
    killed midway leaves only a temporary directory (removed by the next unpack)."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE
    from py3langid.modelio import load_model

    place.parent.mkdir(parents=True, exist_ok=True)
    for stale in place.parent.glob(f".{place.name}.*"):
        # Left by a killed unpack; a younger one may be another process's, still writing.
        if time.time() - stale.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    ptc, pc, classes, nextmove, row, output = load_model(MODEL_DIR / MODEL_FILE)
    staging = Path(tempfile.mkdtemp(dir=place.parent, prefix=f".{place.name}."))
    try:
        arrays = {
            "ptc": np.ascontiguousarray(ptc, dtype=np.float16),
            "nextmove": np.frombuffer(nextmove, dtype=np.uint32),
            # Each state's first transition: py3langid computes these into a Python list
            # (3.6 MB of ints per process), mapped here like the rest.
            "rowbase": np.frombuffer(
                row, dtype=np.uint16 if row.itemsize == 2 else np.uint32
            ).astype(np.uint32)
            << 8,
            "output": np.asarray(output, dtype=np.int32),
        }
        for name, values in arrays.items():
            write_bytes_atomic(staging / name, values.tobytes())
        index = {
            "format": FORMAT,
            "classes": classes,
            "prior": np.asarray(pc, dtype=np.float32).tolist(),
            "arrays": {
                name: [values.dtype.str, list(values.shape)] for name, values in arrays.items()
            },
        }
        write_bytes_atomic(staging / INDEX, json.dumps(index).encode("utf-8"))
        staging.chmod(0o755)
        try:
            staging.rename(place)
        except OSError:
            if not _complete(place):  # another process did not win the race
                raise
            shutil.rmtree(staging, ignore_errors=True)
        fsync_dir(place.parent)
        _uncache(place)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return place


def _uncache(place: Path) -> None:
    """Drop the files just written from the page cache. A fault on a mapped file maps the
    whole cached folio it hits, and a sequential write caches folios of up to MBs: right
    after an unpack, one short text mapped 32 MB of the tables into the process, against
    ~0.5 MB once the pages come back one fault at a time (and stay cached that way)."""
    for path in place.iterdir():
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _mapped(path: Path, dtype: str, shape: list[int]) -> np.ndarray:
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    # Lookups jump around the tables: read nothing ahead, each fault brings one page.
    mapping.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mapping, dtype=np.dtype(dtype)).reshape(shape)


def mapped_identifier(place: Path, **options: Any):
    """py3langid's `LanguageIdentifier` over the arrays in `place`, mapped read-only."""
    from py3langid.langid import LanguageIdentifier

    index = json.loads((place / INDEX).read_text(encoding="utf-8"))
    arrays = {
        name: _mapped(place / name, dtype, shape)
        for name, (dtype, shape) in index["arrays"].items()
    }
    # The tokenizer's DFA walks one Python int at a time: memoryviews index as fast as
    # the array.array py3langid builds, without copying.
    identifier = LanguageIdentifier(
        arrays["ptc"],
        np.asarray(index["prior"], dtype=np.float32),
        index["classes"],
        memoryview(arrays["nextmove"]).cast("B").cast("I"),
        memoryview(arrays["output"]).cast("B").cast("i"),
        tk_row=(),
        **options,
    )
    # What __init__ would have computed from tk_row, already in the file (its only use
    # is the DFA walk; tests/data/test_language.py compares answers with py3langid's).
    identifier._rowbase = memoryview(arrays["rowbase"]).cast("B").cast("I")
    return identifier


def main() -> None:
    print(unpacked_model())


if __name__ == "__main__":
    main()
