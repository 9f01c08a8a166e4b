"""Cross-camera linking: per-camera tracklets -> global identities, online or in one batch.

This module is tracklink's own contribution and is written by hand: trackers (BoxMOT, ultralytics) stop at
one camera, and no well-kept library does constrained re-ID linking. It uses scipy where it can
(`linear_sum_assignment`); scipy's hierarchical clustering takes no cannot-link constraints, so the
constrained average linkage below is a numpy loop.

One similarity everywhere: the average cosine similarity between the members of two groups of tracklets,
each tracklet weighted by its number of embeddings, on tracklet features with their camera's mean removed
(`center_by_camera`: without that, people in one camera look more alike than one person across cameras).
An identity is scored against a tracklet by the dot product with its weighted mean feature (which is that
average), and batch clustering merges by the same average (average linkage). So one threshold means the
same thing online, in batch and in `calibrate_threshold`. Weighting by embedding count makes an
identity's feature (nearly) the mean over all of its frames, as if its tracklets were one long tracklet:
the rule tracklet pooling already follows within a camera, and a 3-frame fragment cannot outvote a
tracklet seen for a minute.

Cannot-link constraints, never overridden by appearance:
- two tracklets of one camera that overlap in time are two people;
- transit windows: for each appearance of an identity, the appearance before it (among its tracklets
  started earlier, the one seen last) was in camera A and this one is in camera B: if (A, B) has a window
  (min_s, max_s), the gap from the end of the one to the start of the other must lie inside it. Checking
  only consecutive appearances lets a person seen A -> C -> B skip the A -> B window.
A tracklet whose times are NaN (crops with no timestamps, as in `tracklink match`) overlaps nothing and is
exempt from transit windows.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tracklink import TracklinkError
from tracklink.app.records import Identity, Tracklet
from tracklink.app.weights import identify

TransitWindows = Mapping[tuple[str, str], tuple[float, float]]
SIDECAR_SUFFIX = ".link.json"
ENGINE_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")  # models that carry no tracklink metadata we can rewrite


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
    camera_prior: float | None = 5.0

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


# --------------------------------------------------------------------------------------------- constraints


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


# --------------------------------------------------------------------------------------------- features


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


def _centred(tracklets: Sequence[Tracklet], prior: float | None) -> dict[int, np.ndarray]:
    """id(tracklet) -> its camera-centred feature, for the tracklets that have one."""
    featured = [t for t in tracklets if t.feature is not None]
    if not featured:
        return {}
    feats = center_by_camera(np.stack([t.feature for t in featured]), [t.camera for t in featured], prior)
    return {id(t): f for t, f in zip(featured, feats)}


# --------------------------------------------------------------------------------------------- online


class OnlineLinker:
    """A gallery of identities that live tracklets join, once when they mature and again when they end.

    Each call scores the tracklets against every identity and solves one assignment
    (`linear_sum_assignment`), so two tracklets of one step never both join the same identity; a tracklet
    staying in its own identity does not compete for it. A tracklet already linked is scored against its
    identity without itself, so it moves when another identity now fits better, and leaves to a new
    identity when none reaches the threshold. Camera means are recomputed at each call from the gallery
    and the new tracklets, so they follow the scene; early on they are shrunk toward the overall mean
    (see `center_by_camera`). Global ids start at `first_id` and are never reused.
    """

    def __init__(self, config: LinkConfig, first_id: int = 1) -> None:
        self.config = config
        self._identities: dict[int, Identity] = {}
        self._next_id = first_id

    @property
    def identities(self) -> list[Identity]:
        return list(self._identities.values())

    def restore(self, tracklets: Sequence[Tracklet]) -> None:
        """Put stored, already linked tracklets back under their global ids (a viewer reopening a store).

        New ids continue after the largest restored one, so a restored person never shares an id.
        """
        for t in tracklets:
            if t.global_id is None:
                raise ValueError(f"restore got {t.key} without a global id; link it instead")
            self._identities.setdefault(t.global_id, Identity(t.global_id)).members.append(t)
        self._next_id = max([self._next_id, *(g + 1 for g in self._identities)])

    def forget(self, camera: str) -> None:
        """Drop a camera's tracklets (a camera that failed: its results are incomplete and will be redone),
        and the identities left without members."""
        for gid in list(self._identities):
            identity = self._identities[gid]
            identity.members = [m for m in identity.members if m.camera != camera]
            if not identity.members:
                del self._identities[gid]

    def mature(self, tracklet: Tracklet) -> bool:
        return tracklet.num_embeddings >= self.config.min_embeddings

    def link(self, tracklet: Tracklet) -> int:
        return self.link_many([tracklet])[0]

    def link_many(self, tracklets: Sequence[Tracklet]) -> list[int]:
        """Link tracklets that mature or end at the same step; returns their global ids, in order."""
        if len({id(t) for t in tracklets}) != len(tracklets):
            raise ValueError("link_many got the same tracklet twice")
        if not tracklets:
            return []
        cfg = self.config
        gids = list(self._identities)
        known = {id(m) for g in gids for m in self._identities[g].members}
        feature = _centred([m for g in gids for m in self._identities[g].members]
                           + [t for t in tracklets if id(t) not in known], cfg.camera_prior)
        # Identity appearance: members' features weighted by embedding count (see the module docstring).
        totals, weights, cols_j = [], [], []
        for j, g in enumerate(gids):
            featured = [m for m in self._identities[g].members if id(m) in feature]
            if featured:
                totals.append(sum(feature[id(m)] * m.num_embeddings for m in featured))
                weights.append(float(sum(m.num_embeddings for m in featured)))
                cols_j.append(j)
        rows_i = [i for i, t in enumerate(tracklets) if id(t) in feature]
        n, k = len(tracklets), len(gids)
        # Columns: one per identity (joins compete), then one "stay" column per tracklet (no competition).
        benefit = np.zeros((n, k + n))
        valid = np.zeros((n, k + n), dtype=bool)
        if rows_i and cols_j:
            feats = np.stack([feature[id(tracklets[i])] for i in rows_i])
            dots = feats @ np.stack(totals).T
            weight = np.tile(np.array(weights), (len(rows_i), 1))
            column = np.tile(np.array(cols_j), (len(rows_i), 1))
            where = {gids[j]: b for b, j in enumerate(cols_j)}
            for a, i in enumerate(rows_i):
                t, own = tracklets[i], where.get(tracklets[i].global_id)
                if own is None:
                    continue
                # Its own identity: scored without itself, in its private column. Alone there, it has no
                # score (weight 0): keeping the id is then the fallback below, not a match.
                if any(m is t for m in self._identities[t.global_id].members):
                    dots[a, own] -= t.num_embeddings * float(feats[a] @ feats[a])
                    weight[a, own] -= t.num_embeddings
                column[a, own] = k + i
            scores = np.divide(dots, weight, out=np.full(dots.shape, -np.inf), where=weight > 0)
            for a, b in zip(*np.nonzero(scores >= cfg.threshold)):
                t = tracklets[rows_i[a]]
                members = [m for m in self._identities[gids[cols_j[b]]].members if m is not t]
                if can_join(t, members, cfg.transit):
                    benefit[rows_i[a], column[a, b]] = scores[a, b] - cfg.threshold
                    valid[rows_i[a], column[a, b]] = True
        rows, cols = linear_sum_assignment(benefit, maximize=True)
        chosen = {int(r): int(c) for r, c in zip(rows, cols) if valid[r, c]}

        result = []
        for i, t in enumerate(tracklets):
            current = self._identities.get(t.global_id) if t.global_id is not None else None
            c = chosen.get(i)
            if c is not None and c < k:
                target = self._identities[gids[c]]  # joins (or moves to) the identity it fits best
            elif c is not None:
                target = current  # still fits its own identity best
            elif current is not None and not any(id(m) in feature for m in current.members if m is not t):
                target = current  # nothing fits, and it is alone in its identity: keep the id
            else:
                target = Identity(self._next_id)
                self._identities[target.global_id] = target
                self._next_id += 1
            if current is not None and current is not target:
                current.members = [m for m in current.members if m is not t]
                if not current.members:
                    del self._identities[current.global_id]
            if not any(m is t for m in target.members):
                target.members.append(t)
            t.global_id = target.global_id
            result.append(target.global_id)
        return result


# --------------------------------------------------------------------------------------------- batch


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


# --------------------------------------------------------------------------------------------- calibration


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


# --------------------------------------------------------------------------------------------- thresholds


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """Where a calibrated threshold lives for models we cannot write metadata into (ONNX, engines)."""
    return Path(str(model_path) + SIDECAR_SUFFIX)


def resolve_threshold(model_path: str | os.PathLike, meta, cli_value: float | None) -> float:
    """The link threshold: the command line, else the calibration sidecar, else the model's metadata, else
    the catalogue entry of a published model file (by checksum).

    The sidecar beats the metadata because it is the more specific of the two: `calibrate --write` only
    writes one for an ONNX or engine file, whose metadata was frozen at export (from the checkpoint's), so
    a sidecar is a later calibration of that very file.
    """
    side = sidecar_path(model_path)
    if cli_value is not None:
        value, origin = cli_value, "--link-threshold"
    elif side.is_file():
        try:
            value = json.loads(side.read_text())["link_threshold"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TracklinkError(f"cannot read the link threshold from {side} ({type(exc).__name__}: {exc}); "
                                 f"re-run `tracklink calibrate --model {model_path} --write` or delete it") from None
        origin = str(side)
    elif meta is not None and getattr(meta, "link_threshold", None) is not None:
        value, origin = meta.link_threshold, f"the metadata of {model_path}"
    elif (entry := identify(model_path)) is not None:  # a published file: its catalogue entry was calibrated
        value, origin = entry.link_threshold, f"the catalogue entry {entry.name}"
    else:
        raise TracklinkError(
            f"no link threshold for {model_path}: its metadata has none and there is no {side.name}. "
            f"Run `tracklink calibrate --model {model_path} --data KIND:PATH --write` on labelled data, "
            "or pass --link-threshold (a cosine similarity)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
        raise TracklinkError(f"link threshold {value!r} from {origin} is not a cosine similarity in [-1, 1]")
    return float(value)


def write_threshold(model_path: str | os.PathLike, threshold: float, details: dict | None = None) -> Path:
    """Store a calibrated threshold with the model: in a tracklink checkpoint's metadata, else a sidecar.

    The checkpoint is rewritten from its raw payload (atomically), so any extra keys it holds survive.
    """
    path = Path(model_path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        target = sidecar_path(path)
        payload = {"link_threshold": threshold, **(details or {})}
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, target)
        return target
    from tracklink.models.checkpoint import atomic_torch_save, read_checkpoint

    payload = read_checkpoint(path)
    payload["meta"]["link_threshold"] = float(threshold)
    atomic_torch_save(payload, path)
    return path
