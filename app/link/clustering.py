"""Batch linking: constrained average linkage over all tracklets, and the threshold calibration that uses it.

scipy's hierarchical clustering takes no cannot-link constraints, so the constrained average linkage is a
numpy loop (`linkage`, exact, O(n^2) memory), run on a sparse nearest-neighbour graph past `EXACT_MAX`
tracklets (`graph_linkage`, near-linear memory, the same merges where the graph holds every pair above the
threshold); `calibrate_threshold` replays the exact merges, so a calibrated threshold means the same thing
in batch, online and calibration.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.link.constraints import LinkConfig, center_by_camera, center_by_camera_in_place, transit_ok
from tracklink.app.link.graph_linkage import EXACT_MAX, graph_average_linkage
from tracklink.app.link.linkage import average_linkage, cannot_link_matrix
from tracklink.app.records import Tracklet

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


def _pair_counts(labels: np.ndarray, cams: np.ndarray, cross_camera_only: bool) -> int:
    """Number of same-label pairs that count (cross-camera only, or all)."""
    total = 0
    for label in np.unique(labels):
        in_label = cams[labels == label]
        n = len(in_label)
        same_cam = sum(c * (c - 1) // 2 for c in np.unique(in_label, return_counts=True)[1]) if cross_camera_only else 0
        total += n * (n - 1) // 2 - same_cam
    return int(total)


def calibrate_threshold(features: np.ndarray, labels: Sequence, cams: Sequence, weights: Sequence[float] | None = None,
                        cross_camera_only: bool = True,
                        camera_prior: float | None = LinkConfig.camera_prior) -> dict:
    """The link threshold that maximises pairwise F1 of batch clustering on labelled tracklets.

    Runs the same average linkage as `cluster_tracklets` once, without a threshold (times are unknown,
    so no constraint applies), on features centred as the linker centres them, and scores every prefix
    of its merges: the clustering a threshold T gives is the prefix that stops at the first merge below
    T. Pairs are tracklet pairs; with `cross_camera_only` only pairs from different cameras count. Among
    the best prefixes the threshold is the middle of the range that produces them. Returns threshold,
    precision, recall, f1 and the counts behind them.
    """
    feats = np.asarray(features, dtype=np.float64)
    n = len(feats)
    labels_arr, cams_arr = np.asarray(labels), np.asarray(cams)
    if n < 2 or len(labels_arr) != n or len(cams_arr) != n:
        raise TracklinkError(f"calibration needs at least 2 tracklets with one label and camera each; got {n} "
                             f"features, {len(labels_arr)} labels, {len(cams_arr)} cameras")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    feats = center_by_camera(feats, cams_arr, camera_prior)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    positives = _pair_counts(labels_arr, cams_arr, cross_camera_only)
    if positives == 0:
        raise TracklinkError("the calibration data has no pair of tracklets of one identity"
                             + (" seen by two cameras" if cross_camera_only else "")
                             + "; it needs identities with several tracklets")
    _, merges = average_linkage(feats, w, np.zeros((n, n), dtype=bool), None, -math.inf)

    # Replay the merges with per-cluster counts of labels, cameras and (label, camera), so each prefix's
    # predicted and correct pair counts follow in O(cluster size).
    count_l = [{labels_arr[i]: 1} for i in range(n)]
    count_c = [{cams_arr[i]: 1} for i in range(n)]
    count_lc = [{(labels_arr[i], cams_arr[i]): 1} for i in range(n)]
    size = [1] * n

    def dot(x: dict, y: dict) -> int:
        if len(x) > len(y):
            x, y = y, x
        return sum(v * y.get(key, 0) for key, v in x.items())

    def absorb(x: dict, y: dict) -> None:
        for key, v in y.items():
            x[key] = x.get(key, 0) + v

    predicted, correct = [0], [0]
    for a, b, _ in merges:
        pairs, good = size[a] * size[b], dot(count_l[a], count_l[b])
        if cross_camera_only:
            pairs -= dot(count_c[a], count_c[b])
            good -= dot(count_lc[a], count_lc[b])
        predicted.append(predicted[-1] + pairs)
        correct.append(correct[-1] + good)
        size[a] += size[b]
        for counts in (count_l, count_c, count_lc):
            absorb(counts[a], counts[b])

    # Prefix k (k merges made) comes from thresholds T with s_k < T <= min(s_0 .. s_{k-1}).
    sims = np.array([s for _, _, s in merges] + [-1.0])
    upper = np.minimum.accumulate(np.concatenate([[1.0], sims[:-1]]))
    lower = sims
    reachable = lower < upper
    tp, pred = np.array(correct, dtype=np.float64), np.array(predicted, dtype=np.float64)
    precision = np.divide(tp, pred, out=np.ones_like(tp), where=pred > 0)
    recall = tp / positives
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    f1[~reachable] = -1.0
    first = int(np.argmax(f1))
    last = first
    for k in range(first + 1, len(f1)):  # extend over the plateau, skipping unreachable prefixes
        if not reachable[k]:
            continue
        if f1[k] < f1[first] - 1e-12:
            break
        last = k
    threshold = float((upper[first] + lower[last]) / 2)
    k = next(i for i in range(first, last + 1) if reachable[i] and lower[i] < threshold <= upper[i])
    return {"threshold": threshold, "precision": float(precision[k]), "recall": float(recall[k]),
            "f1": float(f1[k]), "tracklets": n, "identities": int(len(np.unique(labels_arr))),
            "positive_pairs": positives, "pairs": "cross-camera" if cross_camera_only else "all"}


__all__ = ["METHODS", "calibrate_threshold", "cluster_tracklets"]
