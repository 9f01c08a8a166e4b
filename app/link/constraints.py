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

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and -1.0 <= self.threshold <= 1.0):
            raise TracklinkError(f"link threshold {self.threshold!r} is not a cosine similarity in [-1, 1]")
        if self.camera_prior is not None and self.camera_prior <= 0:
            raise TracklinkError(f"camera_prior must be positive (or None to turn centring off), got {self.camera_prior}")
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


def _centred(tracklets: Sequence[Tracklet], prior: float | None) -> dict[int, np.ndarray]:
    """id(tracklet) -> its camera-centred feature, for the tracklets that have one."""
    featured = [t for t in tracklets if t.feature is not None]
    if not featured:
        return {}
    feats = center_by_camera(np.stack([t.feature for t in featured]), [t.camera for t in featured], prior)
    return {id(t): f for t, f in zip(featured, feats)}


__all__ = ["LinkConfig", "TransitWindows", "can_join", "center_by_camera", "load_transit", "transit_ok"]
