"""Published re-ID weights that tracklink can fetch by name, pinned by sha256, cached per user.

`tracklink batch video.mp4` with no flags needs a re-ID model on a fresh machine: we download a published
file once into the user's cache directory (`$XDG_CACHE_HOME/tracklink`, else `~/.cache/tracklink`) and check
its checksum every time it is used, so a swapped or truncated file is never run.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tracklink import TracklinkError
from tracklink.utils.files import atomic_path, sha256_file
from tracklink.utils.paths import cache_dir

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    filename: str
    url: str
    sha256: str
    # Cosine similarity above which two tracklets are one person, for models whose file carries no
    # tracklink metadata; `provenance` says how it was measured.
    link_threshold: float
    provenance: str
    licence: str


DEFAULT_REID = "osnet_x0_25_msmt17"

CATALOGUE: dict[str, WeightsEntry] = {
    "osnet_x0_25_msmt17": WeightsEntry(
        name="osnet_x0_25_msmt17",
        filename="osnet_x0_25_msmt17.onnx",
        # torchreid's OSNet-x0.25 trained on MSMT17, exported to ONNX by BoxMOT (opset 12, dynamic batch);
        # the same file as shared/assets/models (git blob eab187e5).
        url="https://raw.githubusercontent.com/akshaydhame2001/YOLOv8_Tracking_TensorRT/"
            "9a5b6fbdf36285fd5b384532f6c2ecd15a675ca2/osnet_x0_25_msmt17.onnx",
        sha256="61b2604171ef9d58d21758626f83b35a253c3d7123976523a6e03068c3c95d7b",
        link_threshold=0.40,
        # The linker compares camera-centred tracklet features (app/link.py), so this is that similarity.
        provenance="`tracklink calibrate --model osnet_x0_25_msmt17.onnx --data folder:pku-reid-40` on the shared "
                   "PKU-Reid-40 subset (80 tracklets, cross-camera pairs): threshold 0.398, pairwise precision "
                   "0.822, recall 0.925, F1 0.871",
        licence="weights: torchreid (MIT); export tool: BoxMOT (AGPL-3.0)",
    ),
}




def identify(path: str | os.PathLike) -> WeightsEntry | None:
    """The catalogue entry whose published file this is (by checksum), to find its link threshold."""
    try:
        digest = sha256_file(path)
    except OSError:
        return None
    return next((e for e in CATALOGUE.values() if e.sha256 == digest), None)


def fetch(name: str = DEFAULT_REID, *, offline_hint: str = "--reid") -> Path:
    """The cached, checksum-verified file for a catalogue name; downloads it on first use."""
    try:
        entry = CATALOGUE[name]
    except KeyError:
        raise TracklinkError(f"unknown model name {name!r}; known: {', '.join(CATALOGUE)}, or pass a file path") \
            from None
    path = cache_dir() / entry.filename
    if path.is_file():
        if sha256_file(path) == entry.sha256:
            return path
        log.warning("%s does not match its published checksum; downloading it again", path)
    with atomic_path(path, suffix=".part") as tmp:
        log.info("downloading %s to %s", entry.url, path)
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                while block := resp.read(1 << 20):
                    out.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TracklinkError(
                f"cannot download the re-ID model {name} ({reason}); this machine may be offline. Pass a local "
                f"model with {offline_hint}, e.g. `{offline_hint} path/to/{entry.filename}` (ONNX) or a tracklink "
                "checkpoint (.pt)") from None
        digest = sha256_file(tmp)
        if digest != entry.sha256:
            raise TracklinkError(f"downloaded {entry.url} has sha256 {digest}, expected {entry.sha256}; "
                                 f"refusing to use it. Pass a local model with {offline_hint}")
    return path


def resolve_reid(spec: str | None) -> Path:
    """A catalogue name (default when None) or a path; the path must exist."""
    spec = spec or DEFAULT_REID
    if spec in CATALOGUE:
        return fetch(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TracklinkError(f"re-ID model not found: {spec} (pass a .onnx, .engine or tracklink .pt file, or "
                             f"one of: {', '.join(CATALOGUE)})")
    return path


__all__ = ["CATALOGUE", "DEFAULT_REID", "WeightsEntry", "fetch", "identify", "resolve_reid"]
