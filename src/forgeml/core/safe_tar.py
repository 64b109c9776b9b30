"""Unpacking tar archives without trusting them.

Python's tarfile "data" filter refuses absolute paths, links out of the folder and
device files, but Python 3.11 has it only from 3.11.4 and Debian 12 ships 3.11.2.
Where it is missing we accept plain files and folders inside the target only.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path


def extract_plain(
    tar: tarfile.TarFile, root: Path, members: Sequence[tarfile.TarInfo] | None = None
) -> None:
    """Unpack `members` (all by default) into `root`, refusing anything but plain
    files and folders whose paths stay inside it."""
    chosen = list(tar.getmembers() if members is None else members)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, members=chosen, filter="data")
        return
    for member in chosen:
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise tarfile.TarError(f"refusing {member.name!r}: not a plain file inside the archive")
    tar.extractall(root, members=chosen)
