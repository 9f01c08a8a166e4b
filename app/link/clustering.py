"""Batch linking: constrained average linkage over all tracklets.

scipy's hierarchical clustering takes no cannot-link constraints, so the constrained average linkage
(`tracklink.models.linkage`, exact, O(n^2) memory) is a numpy loop, run on a sparse nearest-neighbour graph
past `EXACT_MAX` tracklets (`graph_linkage`, near-linear memory, the same merges where the graph holds every
pair above the threshold); `calibrate_threshold` (`tracklink.models.link_calibration`, below train/ so
training can calibrate too) replays the exact merges, so a calibrated threshold means the same thing in
batch, online and calibration.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tracklink.app.link.constraints import LinkConfig, cannot_link_matrix, center_by_camera_in_place, transit_ok
from tracklink.app.link.graph_linkage import EXACT_MAX, graph_average_linkage
from tracklink.app.records import Tracklet
from tracklink.models.link_calibration import calibrate_threshold
from tracklink.models.linkage import average_linkage, center_by_camera

METHODS = ("auto", "exact", "graph")
# Up to this many bytes the features of the graph method are float64 and centred as the exact method
# centres them (so the two see the same numbers); past it float32, centred in place (a million 512-d
# tracklets: 2 GB instead of 4 GB and its copies).
FLOAT64_FEATURES_MAX_BYTES = 1 << 30


def _order(tracklets: Sequence[Tracklet]) -> list[int]:
    """First appearance: start time (unknown last), then camera and track id."""
    return sorted(range(len(tracklets)), key=lambda i: (
        tracklets[i].start_time if math.isfinite(tracklets[i].start_time) else math.inf,
        tracklets[i].camera, tracklets[i].track_id))


def cluster_tracklets(tracklets: Sequence[Tracklet], config: LinkConfig, method: str = "auto") -> dict[str, int]:
    """Batch mode: constrained average linkage over all tracklets -> {tracklet.key: global id}.

    Global ids are 1, 2, ... in order of each identity's first appearance, and do not depend on the
    order of `tracklets`. A tracklet without an embedding gets an identity of its own. `method`: "exact"
    (the dense algorithm, O(n^2) memory), "graph" (on the k-nearest-neighbour graph, near-linear), or
    "auto": exact up to `EXACT_MAX` tracklets, where it takes about 2 s and 0.5 GB, so results on small
    sets are those of the exact algorithm; graph above.
    """
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    keys = [t.key for t in tracklets]
    if len(set(keys)) != len(keys):
        raise ValueError("cluster_tracklets got two tracklets with the same key")
    ordered = [tracklets[i] for i in _order(tracklets)]
    featured = [t for t in ordered if _has_feature(t)]
    clusters: list[list[Tracklet]] = []
    if featured:
        graph = method == "graph" or (method == "auto" and len(featured) > EXACT_MAX)
        feats = _centred_features(featured, config.camera_prior, graph)
        weights = np.array([t.num_embeddings for t in featured], dtype=np.float64)
        cams = np.unique([t.camera for t in featured], return_inverse=True)[1]
        start = np.array([t.start_time for t in featured])
        end = np.array([t.end_time for t in featured])
        merge_ok = (lambda items: transit_ok([featured[i] for i in items], config.transit)) if config.transit else None
        if graph:
            groups = graph_average_linkage(feats, weights, cams, start, end, merge_ok, config.threshold)
        else:
            groups, _ = average_linkage(feats, weights, cannot_link_matrix(cams, start, end), merge_ok,
                                        config.threshold)
        clusters = [[featured[i] for i in g] for g in groups]
    clusters += [[t] for t in ordered if not _has_feature(t)]
    rank = {id(t): r for r, t in enumerate(ordered)}
    clusters.sort(key=lambda c: min(rank[id(t)] for t in c))
    return {t.key: gid for gid, c in enumerate(clusters, start=1) for t in c}


def _has_feature(t: Tracklet) -> bool:
    return t.feature_sum is not None and t.num_embeddings > 0  # as `t.feature is not None`, without computing it


def _centred_features(featured: Sequence[Tracklet], prior: float | None, graph: bool) -> np.ndarray:
    """Camera-centred features, filled row by row (no list of per-tracklet copies), float32 when large."""
    dim = len(featured[0].feature_sum)
    if not graph or len(featured) * dim * 8 <= FLOAT64_FEATURES_MAX_BYTES:
        return center_by_camera(np.stack([t.feature for t in featured]), [t.camera for t in featured], prior)
    feats = np.empty((len(featured), dim), np.float32)
    for i, t in enumerate(featured):
        feats[i] = t.feature
    return center_by_camera_in_place(feats, np.unique([t.camera for t in featured], return_inverse=True)[1], prior)


__all__ = ["METHODS", "calibrate_threshold", "cluster_tracklets"]
