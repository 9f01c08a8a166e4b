"""Evaluate an embedder on a labelled video re-ID dataset: image-level and tracklet-level CMC/mAP.

The protocol is cross-camera (see `metrics.cmc_map`). Tracklet features are pooled by the chosen rule; the
default is the test-time rule of the OSM+CAA spec, the mean of L2-normalised frame embeddings.
Re-ranking (`rerank`) and flip test-time augmentation (`flip`) are reported beside the plain protocol under
their own key prefixes, never in place of it, so numbers stay comparable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tracklink.data.datasets import LabelledTracklet, VideoDataset
from tracklink.data.embedding import EmbedFn, FrameEmbeddings, embed_tracklets
from tracklink.models.pooling import pool_by_tracklet
from tracklink.train.metrics import RANKS, cmc_map, cmc_map_from_scores


@dataclass
class EmbeddedSplits:
    """Query and gallery tracklets with the embeddings of their frames (the gallery's are the query's when
    the dataset uses one set for both)."""

    query: Sequence[LabelledTracklet]
    gallery: Sequence[LabelledTracklet]
    q: FrameEmbeddings
    g: FrameEmbeddings
    same_set: bool

    def frame_labels(self, side: str, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(pids, cams) of each frame of a side ("query"/"gallery"), or of the tracklets `index` lists."""
        tracks, emb = (self.query, self.q) if side == "query" else (self.gallery, self.g)
        which = emb.owner if index is None else index
        return np.array([t.pid for t in tracks])[which], np.array([t.cam for t in tracks])[which]

    def frame_paths(self, side: str) -> list[str]:
        tracks = self.query if side == "query" else self.gallery
        return [str(p) for t in tracks for p in t.frames]


def embed_splits(embed: EmbedFn, dataset: VideoDataset, batch_size: int = 64, progress: bool = True,
                 rank: int = 0, world_size: int = 1, gather: Callable[[object], list] | None = None,
                 desc: str = "embed") -> EmbeddedSplits | None:
    """Embed the query and gallery frames once each; distributed, rank 0 gets them all, the others None."""
    same_set = dataset.query is dataset.gallery or dataset.query == dataset.gallery
    splits = [("query", dataset.query)] if same_set else [("query", dataset.query), ("gallery", dataset.gallery)]
    embedded = {name: embed_tracklets(embed, tracks, batch_size, progress, desc=f"{desc} {name}",
                                      rank=rank, world_size=world_size, gather=gather)
                for name, tracks in splits}
    if rank != 0:
        return None
    return EmbeddedSplits(dataset.query, dataset.gallery, embedded["query"],
                          embedded["query"] if same_set else embedded["gallery"], same_set)


def _ranked(q: np.ndarray, q_labels: tuple, g: np.ndarray, g_labels: tuple, same_set: bool, rerank: bool) -> dict:
    if not rerank:
        return cmc_map(q, *q_labels, g, *g_labels, same_set=same_set)
    from tracklink.train.rerank import k_reciprocal_distance

    distance = k_reciprocal_distance(q, None if same_set else g)
    return cmc_map_from_scores(-distance, *q_labels, *g_labels, same_set=same_set)


def score_splits(splits: EmbeddedSplits, pooling: str = "mean", rerank: bool = False, prefix: str = "") -> dict:
    """image_* and tracklet_* rank-1/5/10/20, mAP and CMC (the first 20 ranks), keys led by `prefix`."""
    q, g = splits.q, splits.g
    image = _ranked(q.feats, splits.frame_labels("query"), g.feats, splits.frame_labels("gallery"),
                    splits.same_set, rerank)
    q_track, q_idx = pool_by_tracklet(q.feats, q.owner, pooling, q.attention)
    g_track, g_idx = pool_by_tracklet(g.feats, g.owner, pooling, g.attention)
    tracklet = _ranked(q_track, splits.frame_labels("query", q_idx), g_track, splits.frame_labels("gallery", g_idx),
                       splits.same_set, rerank)
    result = {}
    for level, metrics in (("image", image), ("tracklet", tracklet)):
        result.update({f"{prefix}{level}_rank{r}": metrics[f"rank{r}"] for r in RANKS})
        result[f"{prefix}{level}_mAP"] = metrics["mAP"]
        result[f"{prefix}{level}_cmc"] = metrics["cmc"]
    return result


def counts(splits: EmbeddedSplits, pooling: str) -> dict:
    q_pid = splits.frame_labels("query")[0]
    g_pid = splits.frame_labels("gallery")[0]
    return {
        "num_query_images": int(len(splits.q.feats)), "num_gallery_images": int(len(splits.g.feats)),
        "num_query_tracklets": int(len(np.unique(splits.q.owner))),
        "num_gallery_tracklets": int(len(np.unique(splits.g.owner))),
        "num_identities": int(len(set(q_pid.tolist()) | set(g_pid.tolist()))),
        "pooling": pooling,
    }


def evaluate(embed: EmbedFn, dataset: VideoDataset, batch_size: int = 64, progress: bool = True,
             rank: int = 0, world_size: int = 1, gather: Callable[[object], list] | None = None,
             pooling: str = "mean") -> dict:
    """Returns image_* and tracklet_* rank1/5/10/20, mAP and cmc, plus the sample counts and the pooling used.

    `pooling` makes tracklet features by the pipeline's rule (`tracklink.models.pooling`); for "caa",
    `embed` must return (embeddings, attention), as `Embedder.embed_with_attention` does.

    Distributed: every rank embeds a shard (see `embed_tracklets`); rank 0 scores, the others return {}.
    """
    splits = embed_splits(embed, dataset, batch_size, progress, rank, world_size, gather)
    if splits is None:
        return {}
    return {**score_splits(splits, pooling), **counts(splits, pooling)}


__all__ = ["EmbeddedSplits", "counts", "embed_splits", "evaluate", "score_splits"]
