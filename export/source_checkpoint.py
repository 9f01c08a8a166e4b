"""Which checkpoint a tracklink ONNX export came from, and finding it again.

An export records the file it was made from (absolute path) and that file's sha256 in its metadata, so
PyTorch can run "the same model" later (`tracklink bench --backends torch,onnxruntime` on the ONNX): the
checkpoint is looked for at the recorded path, then beside the ONNX under the same name, and used only if
its sha256 still matches, since `last.pt` is rewritten every epoch of a run that goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from tracklink import TracklinkError
from tracklink.utils.files import sha256_file

log = logging.getLogger(__name__)

PATH_KEY, SHA_KEY = "exported_from", "exported_from_sha256"


def source_record(source: str | os.PathLike | None) -> dict[str, Any]:
    """The metadata keys an export stores about its source file (none for an in-memory model)."""
    if source is None or not Path(source).is_file():
        return {}
    return {PATH_KEY: str(Path(source).resolve()), SHA_KEY: sha256_file(source)}


def find_source(onnx_path: Path, meta: Mapping[str, Any]) -> Path:
    """The unchanged source file of an export, or a one-line error that names the flag to use instead."""
    recorded, digest = meta.get(PATH_KEY), meta.get(SHA_KEY)
    how = (f"pass the checkpoint itself: `tracklink bench --model {onnx_path} --backends "
           "onnxruntime,torch=CHECKPOINT.pt`, or --model CHECKPOINT.pt elsewhere")
    if not recorded:
        raise TracklinkError(f"{onnx_path} is a tracklink export that does not record its checkpoint (exported before "
                             f"tracklink kept it); for PyTorch, {how}")
    candidates = list(dict.fromkeys([Path(recorded), onnx_path.parent / Path(recorded).name]))
    changed = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if digest is None or sha256_file(candidate) == digest:
            log.info("%s: PyTorch runs the checkpoint it was exported from, %s", onnx_path.name, candidate)
            return candidate
        changed.append(str(candidate))
    where = " or ".join(str(c) for c in candidates)
    if changed:
        raise TracklinkError(f"{onnx_path} was exported from {recorded} (sha256 {str(digest)[:12]}), but "
                             f"{', '.join(changed)} has changed since (another sha256); re-export it, or {how}")
    raise TracklinkError(f"{onnx_path} was exported from {recorded} (sha256 {str(digest)[:12]}), which is not at "
                         f"{where}; {how}")


__all__ = ["PATH_KEY", "SHA_KEY", "find_source", "source_record"]
