"""Where a model's link threshold comes from, and where a calibrated one is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tracklink import TracklinkError
from tracklink.models.weights import identify
from tracklink.utils.files import atomic_write
from tracklink.utils.suffixes import BACKEND_BY_SUFFIX

SIDECAR_SUFFIX = ".link.json"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """Where a calibrated threshold lives for models we cannot write metadata into (ONNX, engines)."""
    return Path(str(model_path) + SIDECAR_SUFFIX)


def resolve_threshold(model_path: str | os.PathLike, meta, cli_value: float | None) -> float:
    """The link threshold: the command line, else the calibration sidecar, else the model's metadata, else
    the catalogue entry of a published model file (by checksum).

    The sidecar beats the metadata because it is the more specific of the two: `calibrate --write` only
    writes one for an ONNX or engine file, whose metadata was frozen at export (from the checkpoint's), so
    a sidecar is a later calibration of that very file.
    """
    side = sidecar_path(model_path)
    if cli_value is not None:
        value, origin = cli_value, "--link-threshold"
    elif side.is_file():
        try:
            value = json.loads(side.read_text())["link_threshold"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TracklinkError(f"cannot read the link threshold from {side} ({type(exc).__name__}: {exc}); "
                                 f"re-run `tracklink calibrate --model {model_path} --write` or delete it") from None
        origin = str(side)
    elif meta is not None and getattr(meta, "link_threshold", None) is not None:
        value, origin = meta.link_threshold, f"the metadata of {model_path}"
    elif (entry := identify(model_path)) is not None:  # a published file: its catalogue entry was calibrated
        value, origin = entry.link_threshold, f"the catalogue entry {entry.name}"
    else:
        raise TracklinkError(
            f"no link threshold for {model_path}: its metadata has none and there is no {side.name}. "
            f"Run `tracklink calibrate --model {model_path} --data KIND:PATH --write` on labelled data, "
            "or pass --link-threshold (a cosine similarity)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
        raise TracklinkError(f"link threshold {value!r} from {origin} is not a cosine similarity in [-1, 1]")
    return float(value)


def write_threshold(model_path: str | os.PathLike, threshold: float, details: dict | None = None) -> Path:
    """Store a calibrated threshold with the model: in a tracklink checkpoint's metadata, else a sidecar.

    The checkpoint is rewritten from its raw payload (atomically), so any extra keys it holds survive.
    """
    path = Path(model_path)
    if BACKEND_BY_SUFFIX.get(path.suffix.lower()) != "torch":  # ONNX and engines: metadata frozen at export
        return atomic_write(sidecar_path(path), json.dumps({"link_threshold": threshold, **(details or {})}, indent=2))
    from tracklink.models.checkpoint import update_meta

    update_meta(path, link_threshold=float(threshold))
    return path


__all__ = ["SIDECAR_SUFFIX", "resolve_threshold", "sidecar_path", "write_threshold"]
