"""Batch linking: constrained average linkage over all tracklets.

scipy's hierarchical clustering takes no cannot-link constraints, so the constrained average linkage
(`tracklink.models.linkage`) is a numpy loop; `calibrate_threshold` (`tracklink.models.link_calibration`,
below train/ so training can calibrate too) replays the same merges, so a calibrated threshold means the
same thing in batch, online and calibration.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tracklink.app.link.constraints import LinkConfig, transit_ok
from tracklink.app.records import Tracklet
from tracklink.models.link_calibration import calibrate_threshold
from tracklink.models.linkage import average_linkage, center_by_camera


def _order(tracklets: Sequence[Tracklet]) -> list[int]:
    """First appearance: start time (unknown last), then camera and track id."""
    return sorted(range(len(tracklets)), key=lambda i: (
        tracklets[i].start_time if math.isfinite(tracklets[i].start_time) else math.inf,
        tracklets[i].camera, tracklets[i].track_id))


def cluster_tracklets(tracklets: Sequence[Tracklet], config: LinkConfig) -> dict[str, int]:
    """Batch mode: constrained average linkage over all tracklets -> {tracklet.key: global id}.

    Global ids are 1, 2, ... in order of each identity's first appearance, and do not depend on the
    order of `tracklets`. A tracklet without an embedding gets an identity of its own.
    """
    keys = [t.key for t in tracklets]
    if len(set(keys)) != len(keys):
        raise ValueError("cluster_tracklets got two tracklets with the same key")
    ordered = [tracklets[i] for i in _order(tracklets)]
    featured = [t for t in ordered if t.feature is not None]
    clusters: list[list[Tracklet]] = []
    if featured:
        feats = center_by_camera(np.stack([t.feature for t in featured]), [t.camera for t in featured],
                                 config.camera_prior)
        weights = np.array([t.num_embeddings for t in featured], dtype=np.float64)
        cams = np.unique([t.camera for t in featured], return_inverse=True)[1]
        start = np.array([t.start_time for t in featured])
        end = np.array([t.end_time for t in featured])
        # NaN times compare False, so tracklets without times overlap nothing.
        cannot = (cams[:, None] == cams[None, :]) & (start[:, None] <= end[None, :]) & (start[None, :] <= end[:, None])
        merge_ok = (lambda items: transit_ok([featured[i] for i in items], config.transit)) if config.transit else None
        groups, _ = average_linkage(feats, weights, cannot, merge_ok, config.threshold)
        clusters = [[featured[i] for i in g] for g in groups]
    clusters += [[t] for t in ordered if t.feature is None]
    rank = {id(t): r for r, t in enumerate(ordered)}
    clusters.sort(key=lambda c: min(rank[id(t)] for t in c))
    return {t.key: gid for gid, c in enumerate(clusters, start=1) for t in c}


__all__ = ["calibrate_threshold", "cluster_tracklets"]
