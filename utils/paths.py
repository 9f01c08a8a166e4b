"""Where tracklink keeps per-user files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tracklink`, else `~/.cache/tracklink` (the XDG base-directory default).

    Downloaded weights, TensorRT timing caches and ultralytics models all live here.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tracklink"


__all__ = ["cache_dir"]
