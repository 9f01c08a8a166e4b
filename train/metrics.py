"""Re-ID evaluation: cross-camera CMC and mAP (tracklet pooling lives in `tracklink.models.pooling`).

Written with numpy rather than taken from torchreid, whose evaluator pulls in its whole package; the
protocol is the usual MARS/Market one: cosine similarity, and a query never matches a gallery sample from
its own camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracklink import TracklinkError


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _features(x: Any, name: str) -> np.ndarray:
    feats = _as_numpy(x).astype(np.float32, copy=False)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {feats.shape}")
    return _l2_normalise(feats)


RANKS = (1, 5, 10, 20)  # the ranks reported, as torchreid reports them


def cmc_map(
    query_feats: Any,
    query_pids: Any,
    query_cams: Any,
    gallery_feats: Any,
    gallery_pids: Any,
    gallery_cams: Any,
    max_rank: int = 20,
    same_set: bool = False,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Cross-camera CMC and mAP of queries against a gallery, ranked by cosine similarity.

    Gallery samples from the query's own camera are never counted (so a query never finds itself);
    same_set=True says query i and gallery i are the same sample and excludes that pair explicitly too.
    Queries left without any valid positive are skipped; "num_valid_queries" says how many counted.
    Ties keep gallery order. Returns "rank1", "rank5", "rank10", "rank20", "mAP" (fractions in [0, 1]),
    "cmc" (the first max_rank CMC values) and "num_valid_queries".
    Queries are processed chunk_size at a time, so memory is O(chunk_size * len(gallery)).
    """
    q, g = _features(query_feats, "query_feats"), _features(gallery_feats, "gallery_feats")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery feature dims differ: {q.shape[1]} vs {g.shape[1]}")
    return _ranked_metrics(lambda start, stop: q[start:stop] @ g.T, len(q), len(g), query_pids, query_cams,
                           gallery_pids, gallery_cams, max_rank, same_set, chunk_size)


def cmc_map_from_scores(scores: Any, query_pids: Any, query_cams: Any, gallery_pids: Any, gallery_cams: Any,
                        max_rank: int = 20, same_set: bool = False) -> dict[str, Any]:
    """`cmc_map` on a given (Q, G) score matrix, higher = more alike (e.g. minus a re-ranked distance)."""
    s = _as_numpy(scores).astype(np.float64, copy=False)
    if s.ndim != 2:
        raise ValueError(f"scores must be (Q, G), got shape {s.shape}")
    return _ranked_metrics(lambda start, stop: s[start:stop], s.shape[0], s.shape[1], query_pids, query_cams,
                           gallery_pids, gallery_cams, max_rank, same_set, chunk_size=256)


def allowed_pairs(q_cams: np.ndarray, g_cams: np.ndarray, start: int, stop: int, same_set: bool) -> np.ndarray:
    """(stop - start, G) mask of the gallery samples queries start..stop may be matched with: other cameras,
    never the query itself."""
    allowed = g_cams[None, :] != q_cams[start:stop, None]
    if same_set:
        allowed[np.arange(stop - start), np.arange(start, stop)] = False
    return allowed


def _ranked_metrics(score_rows, num_q: int, num_g: int, query_pids: Any, query_cams: Any, gallery_pids: Any,
                    gallery_cams: Any, max_rank: int, same_set: bool, chunk_size: int) -> dict[str, Any]:
    """The CMC/mAP loop over chunks of queries; `score_rows(start, stop)` gives their (n, G) scores."""
    q_pids, q_cams = _as_numpy(query_pids).ravel(), _as_numpy(query_cams).ravel()
    g_pids, g_cams = _as_numpy(gallery_pids).ravel(), _as_numpy(gallery_cams).ravel()
    if not num_q == len(q_pids) == len(q_cams) or not num_g == len(g_pids) == len(g_cams):
        raise ValueError(f"features, pids and cams disagree in length: query {num_q}/{len(q_pids)}/"
                         f"{len(q_cams)}, gallery {num_g}/{len(g_pids)}/{len(g_cams)}")
    if num_q == 0 or num_g == 0:
        raise TracklinkError(f"cannot evaluate {num_q} queries against {num_g} gallery samples; "
                             "both sets must be non-empty")
    if same_set and num_q != num_g:
        raise ValueError(f"same_set=True needs query and gallery of equal length, got {num_q} and {num_g}")

    num_ranks = max(max_rank, *RANKS)
    cmc_hits = np.zeros(num_ranks, dtype=np.int64)
    ap_sum, num_valid = 0.0, 0
    positions = np.arange(1, num_g + 1)
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        allowed = allowed_pairs(q_cams, g_cams, start, stop, same_set)
        sim = np.where(allowed, score_rows(start, stop), -np.inf)  # excluded samples rank last
        order = np.argsort(-sim, axis=1, kind="stable")
        hits = (g_pids[order] == q_pids[start:stop, None]) & np.take_along_axis(allowed, order, axis=1)
        num_rel = hits.sum(axis=1)
        hits, num_rel = hits[num_rel > 0], num_rel[num_rel > 0]

        first_hit = hits.argmax(axis=1)
        cmc_hits += (first_hit[:, None] < np.arange(1, num_ranks + 1)[None, :]).sum(axis=0)
        precision = np.cumsum(hits, axis=1) / positions
        ap_sum += float(((precision * hits).sum(axis=1) / num_rel).sum())
        num_valid += len(hits)

    if num_valid == 0:
        raise TracklinkError(f"none of the {num_q} queries has a same-identity gallery sample from another "
                             "camera; check the camera ids and that query identities appear in the gallery")
    cmc = cmc_hits / num_valid
    return {
        **{f"rank{r}": float(cmc[r - 1]) for r in RANKS},
        "mAP": ap_sum / num_valid,
        "cmc": [float(v) for v in cmc[:max_rank]],
        "num_valid_queries": num_valid,
    }
