"""The per-user cache directory: files forgeml can rebuild from what is installed."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/forgeml`, or `~/.cache/forgeml`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "forgeml"
