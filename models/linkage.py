"""The similarity linking is done on, and the constrained average linkage over it: plain numpy on features.

Below app/ so that training can calibrate a link threshold exactly as `tracklink calibrate` does, and
app/link (batch clustering, online linking) builds on the same two functions: one similarity everywhere.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

# Camera-bias removal: pseudo-tracklets by which each camera's mean shrinks toward the all-camera mean
# (see `center_by_camera`). Thresholds from `tracklink calibrate` are measured with it; keep them together.
CAMERA_PRIOR = 5.0


def center_by_camera(features: np.ndarray, cams: Sequence[str], prior: float | None) -> np.ndarray:
    """Subtract each camera's mean tracklet feature and re-normalise; `prior` None returns them as given.

    Tracklets of one camera share its light, colour cast and background. On PKU ids 21-40 with OSNet, two
    different people in one camera (median cosine 0.61) look almost as alike as one person across cameras
    (0.68); removing the camera mean lifts pairwise linking F1 from 0.44 (uncentred, even at the best
    threshold) to 0.70 (at a threshold calibrated on other people): bench/linking_pku.py. The mean
    is over tracklets, not frames, so a person who stays in view does not become the camera's mean. It
    shrinks toward the all-camera mean by `prior` pseudo-tracklets, and that toward zero, so a camera that
    has seen one person is not centred on that person.
    """
    feats = np.asarray(features, dtype=np.float64)
    if prior is None or len(feats) == 0:
        return feats
    cams = np.asarray(cams)
    overall = feats.sum(axis=0) / (len(feats) + prior)
    centred = feats.copy()
    for cam in np.unique(cams):
        rows = cams == cam
        centred[rows] -= (feats[rows].sum(axis=0) + prior * overall) / (rows.sum() + prior)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)



def average_linkage(features: np.ndarray, weights: np.ndarray, cannot: np.ndarray,
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


__all__ = ["CAMERA_PRIOR", "average_linkage", "center_by_camera"]
