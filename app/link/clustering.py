"""Batch linking: constrained average linkage over all tracklets, and the threshold calibration that uses it.

scipy's hierarchical clustering takes no cannot-link constraints, so the constrained average linkage here is
a numpy loop; `calibrate_threshold` replays the same merges, so a calibrated threshold means the same thing
in batch, online and calibration.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.app.link.constraints import LinkConfig, center_by_camera, transit_ok
from tracklink.app.records import Tracklet


def _average_linkage(features: np.ndarray, weights: np.ndarray, cannot: np.ndarray,
                     merge_ok: Callable[[list[int]], bool] | None, stop_below: float
                     ) -> tuple[list[list[int]], list[tuple[int, int, float]]]:
    """Constrained, weighted average linkage; returns (clusters as item lists, merges (a, b, similarity)).

    Greedy best-first, as scipy's 'average' method, but a pair is merged only if `cannot` allows it (a
    cannot-link between any two members forbids the clusters; it is kept exact by OR-ing rows on merge) and
    `merge_ok` accepts the merged members (checked lazily on the best pair only; a refusal blocks that pair
    until one side changes). Stops when the best allowed pair is below `stop_below`, so the merges made
    with a threshold are a prefix of those made without one.

    Memory is O(n^2): a float64 matrix of similarity sums and two boolean masks, about 10 n^2 bytes
    (250 MB for 5,000 tracklets). Each row caches its best partner, so a merge costs O(n) plus a refresh
    of the rows that pointed at the merged pair; that keeps thousands of tracklets to seconds.
    """
    n = len(features)
    if n == 0:
        return [], []
    sim = features.astype(np.float64) @ features.astype(np.float64).T
    sums = (sim + sim.T) / 2 * np.outer(weights, weights)  # exact symmetry keeps ties deterministic
    size = weights.astype(np.float64).copy()
    cannot = cannot.copy()
    np.fill_diagonal(cannot, True)
    blocked = np.zeros((n, n), dtype=bool)
    active = np.ones(n, dtype=bool)
    members = [[i] for i in range(n)]
    best = np.full(n, -np.inf)
    partner = np.zeros(n, dtype=np.int64)

    def row(i: int) -> np.ndarray:
        r = sums[i] / (size[i] * size)
        r[cannot[i] | blocked[i] | ~active] = -np.inf
        return r

    def refresh(i: int) -> None:
        r = row(i)
        partner[i] = int(np.argmax(r))
        best[i] = r[partner[i]]

    for i in range(n):
        refresh(i)
    merges: list[tuple[int, int, float]] = []
    while True:
        i = int(np.argmax(best))
        s = float(best[i])
        if not math.isfinite(s) or s < stop_below:
            break
        j = int(partner[i])
        a, b = min(i, j), max(i, j)  # the lower index survives: ids do not depend on which row found the pair
        if merge_ok is not None and not merge_ok(members[a] + members[b]):
            blocked[a, b] = blocked[b, a] = True
            refresh(a)
            refresh(b)
            continue
        merges.append((a, b, s))
        sums[a] += sums[b]
        sums[:, a] += sums[:, b]
        size[a] += size[b]
        cannot[a] |= cannot[b]
        cannot[:, a] |= cannot[:, b]
        blocked[a] = False
        blocked[:, a] = False
        active[b] = False
        best[b] = -np.inf
        members[a] += members[b]
        members[b] = []
        stale = active & ((partner == a) | (partner == b))
        stale[a] = True
        for r in np.flatnonzero(stale):
            refresh(int(r))
        to_a = row(a)
        gain = active & ~stale & (to_a > best)
        best[gain] = to_a[gain]
        partner[gain] = a
    return [m for m in members if m], merges


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
        groups, _ = _average_linkage(feats, weights, cannot, merge_ok, config.threshold)
        clusters = [[featured[i] for i in g] for g in groups]
    clusters += [[t] for t in ordered if t.feature is None]
    rank = {id(t): r for r, t in enumerate(ordered)}
    clusters.sort(key=lambda c: min(rank[id(t)] for t in c))
    return {t.key: gid for gid, c in enumerate(clusters, start=1) for t in c}


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
    _, merges = _average_linkage(feats, w, np.zeros((n, n), dtype=bool), None, -math.inf)

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


__all__ = ["calibrate_threshold", "cluster_tracklets"]
