"""What linking may never do, and the similarity it is done on.

Cannot-link constraints, never overridden by appearance:
- two tracklets of one camera that overlap in time are two people;
- transit windows: for each appearance of an identity, the appearance before it (among its tracklets
  started earlier, the one seen last) was in camera A and this one is in camera B: if (A, B) has a window
  (min_s, max_s), the gap from the end of the one to the start of the other must lie inside it. Checking
  only consecutive appearances lets a person seen A -> C -> B skip the A -> B window.
A tracklet whose times are NaN (crops with no timestamps, as in `tracklink match`) overlaps nothing and is
exempt from transit windows.

Similarities are computed on camera-centred features (`center_by_camera`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.records import Tracklet
from tracklink.models.linkage import CAMERA_PRIOR, center_by_camera

TransitWindows = Mapping[tuple[str, str], tuple[float, float]]


@dataclass
class LinkConfig:
    """How tracklets become identities.

    `threshold` has no default on purpose: it belongs to the model (metadata or a calibration sidecar) or
    to the user; see `resolve_threshold`.
    """

    threshold: float  # average cosine similarity at or above which a tracklet joins an identity
    # (camera_a, camera_b) -> (min_s, max_s): someone last seen in camera_a shows up in camera_b between
    # min_s and max_s seconds later. Directional: list both orders for a symmetric pair. Unlisted pairs
    # are unconstrained; a negative min_s allows overlapping views.
    transit: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # A tracklet is first linked (is "mature") once it has this many embeddings: at 30 fps that is a
    # fraction of a second of usable crops, and one bad crop among five moves the mean little.
    min_embeddings: int = 5
    # Camera-bias removal (see `center_by_camera`): each camera's mean tracklet feature, shrunk toward the
    # all-camera mean by this many pseudo-tracklets, is subtracted before comparing. None turns it off.
    # Thresholds from `tracklink calibrate` are measured with the default; keep them together.
    camera_prior: float | None = CAMERA_PRIOR
    # Online only: an identity not seen for this many seconds (of tracklet time) leaves the search index of
    # live linking, so the cost of a link stays flat over days; it stays in the gallery and the store, and
    # comes back when a search finds it or a tracklet re-links into it. None keeps everyone (batch mode).
    gallery_ttl: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and -1.0 <= self.threshold <= 1.0):
            raise TracklinkError(f"link threshold {self.threshold!r} is not a cosine similarity in [-1, 1]")
        if self.camera_prior is not None and self.camera_prior <= 0:
            raise TracklinkError(f"camera_prior must be positive (or None to turn centring off), got {self.camera_prior}")
        if self.gallery_ttl is not None and not self.gallery_ttl > 0:
            raise TracklinkError(f"gallery_ttl must be a positive number of seconds (or None to keep every identity), "
                                 f"got {self.gallery_ttl}")
        if self.min_embeddings < 1:
            raise TracklinkError(f"min_embeddings must be at least 1, got {self.min_embeddings}")
        for pair, window in self.transit.items():
            if len(pair) != 2 or len(window) != 2 or not window[0] <= window[1]:
                raise TracklinkError(f"transit window {pair} -> {window} must map (camera_a, camera_b) to "
                                     "(min_s, max_s) with min_s <= max_s")


def load_transit(path: str | Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Transit windows from a YAML file: a list of {from, to, min_s, max_s}, optionally `both: true`.

    ```yaml
    - {from: lobby, to: door, min_s: 5, max_s: 60, both: true}   # either way, 5 s to 1 min
    - {from: door, to: car_park, min_s: 20, max_s: 300}
    ```
    """
    import yaml

    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TracklinkError(f"cannot read transit windows from {path}: {exc}") from None
    if not isinstance(entries, list):
        raise TracklinkError(f"{path}: expected a list of {{from, to, min_s, max_s}} entries, got {type(entries).__name__}")
    windows: dict[tuple[str, str], tuple[float, float]] = {}
    for n, entry in enumerate(entries, start=1):
        try:
            a, b, lo, hi = str(entry["from"]), str(entry["to"]), float(entry["min_s"]), float(entry["max_s"])
        except (TypeError, KeyError, ValueError) as exc:
            raise TracklinkError(f"{path}: entry {n} needs from, to, min_s and max_s (numbers of seconds); "
                                 f"got {entry!r} ({type(exc).__name__}: {exc})") from None
        pairs = [(a, b), (b, a)] if entry.get("both") else [(a, b)]
        windows.update({pair: (lo, hi) for pair in pairs})
    LinkConfig(threshold=0.0, transit=windows)  # the same checks as any configuration
    return windows


def _timed(t: Tracklet) -> bool:
    return math.isfinite(t.start_time) and math.isfinite(t.end_time)


def transit_ok(members: Sequence[Tracklet], windows: TransitWindows) -> bool:
    """True when every appearance is reachable from the one before it (see the module docstring)."""
    if not windows:
        return True
    timed = sorted((m for m in members if _timed(m)), key=lambda m: (m.start_time, m.end_time))
    previous: Tracklet | None = None  # among the members started so far, the one seen last
    for m in timed:
        if previous is not None and previous.camera != m.camera:
            window = windows.get((previous.camera, m.camera))
            if window is not None and not window[0] <= m.start_time - previous.end_time <= window[1]:
                return False
        if previous is None or m.end_time > previous.end_time:
            previous = m
    return True


def can_join(tracklet: Tracklet, members: Sequence[Tracklet], windows: TransitWindows) -> bool:
    """Whether `tracklet` may be the same person as all of `members` (overlap checked against every one)."""
    if any(tracklet.overlaps(m) for m in members):
        return False
    return transit_ok([*members, tracklet], windows)


def cannot_link_matrix(cams: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Pairs that can never be one person: one camera (integer codes) and overlapping in time.

    NaN times compare False, so tracklets without times overlap nothing.
    """
    return (cams[:, None] == cams[None, :]) & (start[:, None] <= end[None, :]) & (start[None, :] <= end[:, None])


def _shrunk_mean(cam_sum: np.ndarray, cam_count: float, overall: np.ndarray, prior: float) -> np.ndarray:
    """A camera's mean tracklet feature shrunk toward `overall` by `prior` pseudo-tracklets: the mean that
    `center_by_camera` subtracts."""
    return (cam_sum + prior * overall) / (cam_count + prior)


def center_by_camera_in_place(features: np.ndarray, cams: np.ndarray, prior: float | None,
                              chunk: int = 65536) -> np.ndarray:
    """`center_by_camera` on a float32 array, in place, for sets too large for float64 copies.

    Sums are taken in float64, so it differs from `center_by_camera` by float32 rounding only. A million
    512-d tracklets are 2 GB in float32; `center_by_camera` would hold three 4 GB copies.
    """
    if prior is not None and len(features):
        overall = features.sum(axis=0, dtype=np.float64) / (len(features) + prior)
        for cam in np.unique(cams):
            rows = np.flatnonzero(cams == cam)
            mean = _shrunk_mean(features[rows].sum(axis=0, dtype=np.float64), len(rows), overall, prior)
            features[rows] -= mean.astype(features.dtype)
    for lo in range(0, len(features), chunk):
        part = features[lo:lo + chunk]
        part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    return features


class CameraMeans:
    """Running per-camera sums of tracklet features, so online linking centres a feature in O(dim).

    The same shrunk camera mean as `center_by_camera`, kept up to date by adding and removing features
    instead of recomputing it over the gallery at every link.
    """

    def __init__(self, prior: float | None) -> None:
        self.prior = prior
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._total: np.ndarray | None = None
        self._count = 0

    def add(self, camera: str, feature: np.ndarray, sign: int = 1) -> None:
        """Count a feature in (sign 1) or out (sign -1) of its camera's mean."""
        f = np.asarray(feature, dtype=np.float64)
        if self._total is None:
            self._total = np.zeros_like(f)
        self._total += sign * f
        self._count += sign
        self._sums[camera] = self._sums.get(camera, np.zeros_like(f)) + sign * f
        self._counts[camera] = self._counts.get(camera, 0) + sign
        if self._counts[camera] == 0:
            del self._sums[camera], self._counts[camera]

    def centre(self, camera: str, feature: np.ndarray) -> np.ndarray:
        """The feature minus its camera's current mean, re-normalised (as given when centring is off)."""
        f = np.asarray(feature, dtype=np.float64)
        if self.prior is None:
            return f
        if self._total is not None:
            overall = self._total / (self._count + self.prior)
            zero = np.zeros_like(f)
            f = f - _shrunk_mean(self._sums.get(camera, zero), self._counts.get(camera, 0), overall, self.prior)
        return f / max(float(np.linalg.norm(f)), 1e-12)


__all__ = ["CameraMeans", "LinkConfig", "TransitWindows", "can_join", "cannot_link_matrix", "center_by_camera",
           "center_by_camera_in_place", "load_transit", "transit_ok"]
