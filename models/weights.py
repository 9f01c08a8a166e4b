"""The default models and published weights: shipped inside the package or fetched by name, pinned by sha256.

`tracklink demo` and `tracklink batch video.mp4` with no model flags run offline on a fresh machine: the
default detector (YOLOX-nano) and re-ID model (OSNet-x0.25, MSMT17) ship in `models/assets/` with their
licences and provenance (`models/assets/README.md`), and are checked against their checksums whenever they are
used. Other published files are downloaded once into the user's cache directory (`$XDG_CACHE_HOME/tracklink`,
else `~/.cache/tracklink`) and checked the same way, so a swapped or truncated file is never run.
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


ASSETS = Path(__file__).resolve().with_name("assets")


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    filename: str
    url: str | None  # None: shipped in models/assets, never downloaded
    sha256: str
    # Cosine similarity above which two tracklets are one person, for models whose file carries no
    # tracklink metadata; `provenance` says how it was measured.
    link_threshold: float | None
    provenance: str
    licence: str

    @property
    def packaged(self) -> bool:
        return self.url is None


# The linker compares camera-centred tracklet features (app/link/), so the thresholds are that similarity.
_OSNET_CALIBRATION = ("`tracklink calibrate --model osnet_x0_25_msmt17.onnx --data folder:pku-reid-40` on the shared "
                      "PKU-Reid-40 subset (80 tracklets, cross-camera pairs): threshold 0.398, pairwise precision "
                      "0.822, recall 0.925, F1 0.871")

DEFAULT_REID = "osnet_x0_25_msmt17"
DEFAULT_DETECTOR = "yolox_nano"

CATALOGUE: dict[str, WeightsEntry] = {
    "osnet_x0_25_msmt17": WeightsEntry(
        name="osnet_x0_25_msmt17",
        filename="osnet_x0_25_msmt17.onnx",
        url=None,
        # torchreid's OSNet-x0.25 MSMT17 weights, imported from BoxMOT's ONNX (below) and exported again by
        # `tracklink export` (opset 17, our metadata, parity min cosine 0.99999999 on 256 PKU crops).
        sha256="620beb1980d4d6b07bef098b2dac7e3abc5e191bc8bb5cdf12e97f8d783b7f8e",
        link_threshold=0.40,
        provenance=_OSNET_CALIBRATION,
        licence="weights: torchreid (MIT)",
    ),
    "osnet_x0_25_msmt17_boxmot": WeightsEntry(
        name="osnet_x0_25_msmt17_boxmot",
        filename="osnet_x0_25_msmt17_boxmot.onnx",
        # The same weights exported to ONNX by BoxMOT (opset 12, dynamic batch); the file in
        # shared/assets/models (git blob eab187e5). Kept so that this published file is recognised.
        url="https://raw.githubusercontent.com/akshaydhame2001/YOLOv8_Tracking_TensorRT/"
            "9a5b6fbdf36285fd5b384532f6c2ecd15a675ca2/osnet_x0_25_msmt17.onnx",
        sha256="61b2604171ef9d58d21758626f83b35a253c3d7123976523a6e03068c3c95d7b",
        link_threshold=0.40,
        provenance=_OSNET_CALIBRATION,
        licence="weights: torchreid (MIT); export tool: BoxMOT (AGPL-3.0)",
    ),
}

DETECTORS: dict[str, WeightsEntry] = {
    "yolox_nano": WeightsEntry(
        name="yolox_nano",
        filename="yolox_nano.onnx",
        url=None,
        # Megvii's YOLOX-Nano (COCO), raw grid outputs, input 1x3x416x416 BGR.
        sha256="e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd",
        link_threshold=None,
        provenance="YOLOX-Nano ONNX from GitHub Bigisland1729/object-detection-models @7f3f2fa (Megvii YOLOX)",
        licence="Apache-2.0",
    ),
    # ultralytics' own release, by name (`--detector yolo11n.pt`). A .pt is a pickle, which runs code when
    # loaded: this checksum is what makes it safe, and a same-named file anywhere else is never used.
    "yolo11n.pt": WeightsEntry(
        name="yolo11n.pt",
        filename="yolo11n.pt",
        url="https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n.pt",
        sha256="0ebbc80d4a7680d14987a577cd21342b65ecfd94632bd9a8da63ae6417644ee1",
        link_threshold=None,
        provenance="ultralytics YOLO11n (COCO), release v8.3.0",
        licence="AGPL-3.0 (ultralytics)",
    ),
}


def packaged(entry: WeightsEntry) -> Path:
    """The shipped file of a packaged entry, verified against its checksum."""
    path = ASSETS / entry.filename
    if not path.is_file():
        raise TracklinkError(f"the packaged model {path} is missing: reinstall tracklink, or pass a model file")
    if sha256_file(path) != entry.sha256:
        raise TracklinkError(f"the packaged model {path} does not match its sha256 {entry.sha256}: the installation "
                             "is damaged; reinstall tracklink")
    return path


def default_detector() -> str:
    """The default detector as a `--detector` value: the shipped YOLOX-nano, verified."""
    return f"yolox:{packaged(DETECTORS[DEFAULT_DETECTOR])}"


def identify(path: str | os.PathLike) -> WeightsEntry | None:
    """The catalogue entry whose published file this is (by checksum), to find its link threshold."""
    try:
        digest = sha256_file(path)
    except OSError:
        return None
    return next((e for e in CATALOGUE.values() if e.sha256 == digest), None)


def fetch(name: str = DEFAULT_REID, *, offline_hint: str = "--reid") -> Path:
    """The cached, checksum-verified file for a catalogue name; downloads it on first use."""
    entry = _entry(CATALOGUE, name, "model")
    hint = (f"Pass a local model with {offline_hint}, e.g. `{offline_hint} path/to/{entry.filename}` (ONNX) or a "
            "tracklink checkpoint (.pt)")
    return fetch_verified(entry, cache_dir() / entry.filename, f"the re-ID model {name}", hint)


def fetch_detector(name: str, *, offline_hint: str = "--detector") -> Path:
    """The verified file of a detector name: packaged, or published and cached (never a same-named file
    elsewhere, such as one planted in the working directory)."""
    entry = _entry(DETECTORS, name, "detector")
    hint = (f"Pass a local model with {offline_hint}, e.g. `{offline_hint} yolox:path/to/yolox_nano.onnx`, or leave "
            f"{offline_hint} out for the packaged YOLOX-nano")
    return fetch_verified(entry, cache_dir() / "ultralytics" / entry.filename, f"the detector {name}", hint)


def _entry(table: dict[str, WeightsEntry], name: str, kind: str) -> WeightsEntry:
    try:
        return table[name]
    except KeyError:
        raise TracklinkError(f"unknown {kind} name {name!r}; known: {', '.join(table)}, or pass a file path") \
            from None


def fetch_verified(entry: WeightsEntry, path: Path, what: str, hint: str) -> Path:
    """The shipped file of a packaged entry; else `path` if its checksum is the entry's, else downloaded from
    its URL (a partial download is never kept)."""
    if entry.packaged:
        return packaged(entry)
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
            raise TracklinkError(f"cannot download {what} ({reason}); this machine may be offline. {hint}") from None
        digest = sha256_file(tmp)
        if digest != entry.sha256:
            raise TracklinkError(f"downloaded {entry.url} has sha256 {digest}, expected {entry.sha256}; refusing to "
                                 f"use it. {hint}")
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


__all__ = ["ASSETS", "CATALOGUE", "DEFAULT_DETECTOR", "DEFAULT_REID", "DETECTORS", "WeightsEntry", "default_detector",
           "fetch", "fetch_detector", "fetch_verified", "identify", "packaged", "resolve_reid"]
