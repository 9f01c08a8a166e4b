"""A link threshold from labelled tracklets: the one whose batch clustering has the best pairwise F1."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tracklink import TracklinkError
from tracklink.models.linkage import CAMERA_PRIOR, average_linkage, center_by_camera


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
                        camera_prior: float | None = CAMERA_PRIOR) -> dict:
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


__all__ = ["calibrate_threshold"]
