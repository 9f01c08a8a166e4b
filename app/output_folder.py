"""The batch output folder: file names that cannot collide, a folder checked writable before the run, results
of an unfinished run that never look finished, and write failures as one line that keeps the data.

A full disk mid-run leaves the store consistent (SQLite rolls back the open transaction; everything committed
before stays), so the advice is to free space and run the same command again, never to delete the folder.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from tracklink import TracklinkError

if TYPE_CHECKING:
    from tracklink.app.sources import SourceSpec

SUMMARY = "summary.json"
PROBE_BYTES = 256 * 1024  # what the start of a run writes (store schema, WAL) fits in this, with room
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def camera_files(camera: str) -> list[str]:
    """The files batch mode writes for one camera (the videos only with --save-video; the raw recording of a
    live camera is a working file, turned into the annotated video at the end)."""
    return [f"{camera}.txt", f"{camera}.global.txt", f"{camera}.mp4", f".{camera}.raw.avi"]


def check_output_names(specs: Iterable["SourceSpec"], out: Path) -> None:
    """Refuse cameras whose output files would be the same file (`cam` and `cam.global` both write
    cam.global.txt; `Cam` and `cam` are one file on macOS and Windows), and outputs that are inputs."""
    specs = list(specs)
    owner: dict[str, str] = {}
    for spec in specs:
        for name in camera_files(spec.name):
            other = owner.setdefault(name.casefold(), spec.name)
            if other != spec.name:
                raise TracklinkError(f"cameras {other!r} and {spec.name!r} would both write {name} in {out}; "
                                     f"name one of them with NAME=SOURCE, e.g. {spec.name.replace('.', '_')}="
                                     f"{spec.display}")
    inputs = {Path(s.target).resolve(): s for s in specs if s.kind == "video"}
    for spec in specs:
        for name in camera_files(spec.name):
            if (out / name).resolve() in inputs:
                raise TracklinkError(f"--out {out} would overwrite the input video {out / name} with camera "
                                     f"{spec.name}'s output; choose another --out")


def prepare(out: Path) -> None:
    """Create --out and write (then drop) a small file in it, so that a read-only folder or a full disk is
    reported before any work, as one line."""
    with write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as probe:  # unlinked at once: nothing is left behind
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())


def retract(out: Path, cameras: Iterable[str]) -> None:
    """At the start of a run: the summary says "running" and the cameras about to run lose their old
    files, so a run that is killed leaves nothing that claims to be finished."""
    from tracklink.utils.files import atomic_write

    cameras = list(cameras)
    for camera in cameras:
        for name in camera_files(camera):
            (out / name).unlink(missing_ok=True)
    atomic_write(out / SUMMARY, json.dumps({"status": "running", "running": cameras}, indent=2) + "\n")


@contextmanager
def write_errors(out: Path) -> Iterator[None]:
    """A write failure in --out (full disk, read-only, I/O error, from Python or SQLite) as one line that
    names the folder, the cause and what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorname", "")
        kind = "read-only" if code in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM") else "full"
        raise write_error(out, str(exc), kind) from None
    except OSError as exc:
        if exc.errno in _FULL:
            raise write_error(out, os.strerror(exc.errno), "full") from None
        if exc.errno in _NOT_WRITABLE:
            raise write_error(out, os.strerror(exc.errno), "read-only") from None
        raise


def write_error(out: Path, cause: str, kind: str) -> TracklinkError:
    if kind == "read-only":
        return TracklinkError(f"cannot write to --out {out}: {cause}; choose a folder you can write to with --out")
    return TracklinkError(f"cannot write to --out {out}: {cause}. What it holds is kept and consistent: free some "
                          "space (or move the whole folder to a bigger disk) and run the same command again to "
                          "continue where it stopped")


__all__ = ["SUMMARY", "camera_files", "check_output_names", "prepare", "retract", "write_error", "write_errors"]
