"""Synthetic 512-d tracklets at any scale, with known identities: P people x 8 cameras over 24 hours.

Each person has a random unit appearance; each camera adds its own cast (a fixed vector of norm 0.6,
which camera centring must remove) and each tracklet its own noise (norm 0.5-0.9), so after centring two
tracklets of one person are about 0.6-0.7 alike and two people about 0 +- 0.05. A person enters at a random
time of the day and walks through the 8 cameras in a random order, 20-120 s in view and 10-120 s between
cameras; tracklets carry 5-200 embeddings. Busy cameras see many people at once, so the one-camera
overlap rule matters. Used by tests/test_link_scale.py and bench/link_scale.py.
"""

from __future__ import annotations

import numpy as np

from tracklink.app.records import Tracklet

CAMERAS = 8
DAY_S = 24 * 3600.0
THRESHOLD = 0.45  # between the two populations above


def synthetic_tracklets(n: int, dim: int = 512, cameras: int = CAMERAS, seed: int = 0, day_s: float = DAY_S,
                        noise: tuple[float, float] = (0.5, 0.9), chunk: int = 65536
                        ) -> tuple[list[Tracklet], np.ndarray]:
    """`n` tracklets (n // cameras people, each seen once by every camera) and each one's person index.

    A larger `noise` (the norm range of each tracklet's own noise) makes people harder to tell apart.
    """
    rng = np.random.default_rng(seed)
    people = n // cameras
    n = people * cameras
    pid = np.repeat(np.arange(people), cameras)
    cam = np.concatenate([rng.permutation(cameras) for _ in range(people)])  # the order a person walks in
    duration = rng.uniform(20, 120, n)
    gap = rng.uniform(10, 120, n)
    entry = np.repeat(rng.uniform(0, day_s, people), cameras)
    walked = (duration + gap).reshape(people, cameras)
    start = entry + (np.cumsum(walked, axis=1) - walked).ravel()
    end = start + duration
    embeddings = rng.integers(5, 201, n)
    cast = rng.normal(size=(cameras, dim))
    cast *= 0.6 / np.linalg.norm(cast, axis=1, keepdims=True)
    track_ids = np.zeros(n, np.int64)
    for c in range(cameras):  # per-camera track ids in order of appearance
        rows = np.flatnonzero(cam == c)
        track_ids[rows[np.argsort(start[rows], kind="stable")]] = np.arange(1, len(rows) + 1)
    person = rng.normal(size=(people, dim)).astype(np.float32)
    person /= np.linalg.norm(person, axis=1, keepdims=True)
    tracklets: list[Tracklet] = []
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        own = rng.normal(size=(hi - lo, dim))
        own *= rng.uniform(*noise, (hi - lo, 1)) / np.linalg.norm(own, axis=1, keepdims=True)
        feats = person[pid[lo:hi]] + cast[cam[lo:hi]] + own
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        for i in range(lo, hi):
            e = int(embeddings[i])
            tracklets.append(Tracklet(f"cam{cam[i] + 1}", int(track_ids[i]), 0, 0, float(start[i]), float(end[i]),
                                      feature_sum=(feats[i - lo] * e).astype(np.float32), num_embeddings=e,
                                      num_boxes=e, ended=True))
    return tracklets, pid


def pairwise_f1(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Pairwise F1 of partition `labels_a` against `labels_b` over all pairs, in O(n) memory."""
    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) // 2).sum())

    _, a = np.unique(labels_a, return_inverse=True)
    _, b = np.unique(labels_b, return_inverse=True)
    both = pairs(np.unique(a.astype(np.int64) * (b.max() + 1) + b, return_counts=True)[1])
    in_a, in_b = pairs(np.bincount(a)), pairs(np.bincount(b))
    if in_a == in_b == 0:
        return 1.0
    return 2 * both / (in_a + in_b)


__all__ = ["CAMERAS", "DAY_S", "THRESHOLD", "pairwise_f1", "synthetic_tracklets"]
