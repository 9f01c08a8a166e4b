"""One way to write a file so that a kill never leaves half of it, and one way to checksum a file."""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside `path` to write into; on success it is renamed over `path`, on failure removed.

    Readers see the old file or the new one, never a partial one. The result gets the permissions a plain
    `open()` would give (mkstemp makes temp files private, which a model or a report should not be). Temp
    files of `path` left by a writer that was killed (SIGKILL runs no cleanup) are removed first: one writer
    per file is the rule everywhere in tracklink.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
        stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["atomic_path", "atomic_write", "sha256_file"]
