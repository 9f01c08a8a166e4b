"""Evaluate an embedder on a labelled video re-ID dataset: image-level and tracklet-level CMC/mAP.

The protocol is cross-camera (see `metrics.cmc_map`). Tracklet features are pooled by the chosen rule; the
default is the test-time rule of the OSM+CAA spec, the mean of L2-normalised frame embeddings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tracklink.data.datasets import LabelledTracklet, VideoDataset
from tracklink.data.embedding import EmbedFn, embed_tracklets
from tracklink.models.pooling import pool_by_tracklet
from tracklink.train.metrics import cmc_map


def evaluate(embed: EmbedFn, dataset: VideoDataset, batch_size: int = 64, progress: bool = True,
             rank: int = 0, world_size: int = 1, gather: Callable[[object], list] | None = None,
             pooling: str = "mean") -> dict:
    """Returns image_* and tracklet_* rank1/rank5/mAP, plus the sample counts and the pooling used.

    `pooling` makes tracklet features by the pipeline's rule (`tracklink.models.pooling`); for "caa",
    `embed` must return (embeddings, attention), as `Embedder.embed_with_attention` does.

    Distributed: every rank embeds a shard (see `embed_tracklets`); rank 0 scores, the others return {}.
    """
    same_set = dataset.query is dataset.gallery or dataset.query == dataset.gallery
    splits = [("query", dataset.query)] if same_set else [("query", dataset.query), ("gallery", dataset.gallery)]
    embedded = {name: embed_tracklets(embed, tracks, batch_size, progress, desc=f"embed {name}",
                                      rank=rank, world_size=world_size, gather=gather)
                for name, tracks in splits}
    if rank != 0:
        return {}
    if same_set:
        embedded["gallery"] = embedded["query"]

    def labels(tracks: Sequence[LabelledTracklet], owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pids = np.array([t.pid for t in tracks])
        cams = np.array([t.cam for t in tracks])
        return pids[owner], cams[owner]

    (qf, q_owner, q_att), (gf, g_owner, g_att) = embedded["query"], embedded["gallery"]
    q_pid, q_cam = labels(dataset.query, q_owner)
    g_pid, g_cam = labels(dataset.gallery, g_owner)
    image = cmc_map(qf, q_pid, q_cam, gf, g_pid, g_cam, same_set=same_set)

    q_track, q_idx = pool_by_tracklet(qf, q_owner, pooling, q_att)
    g_track, g_idx = pool_by_tracklet(gf, g_owner, pooling, g_att)
    qp, qc = labels(dataset.query, q_idx)
    gp, gc = labels(dataset.gallery, g_idx)
    tracklet = cmc_map(q_track, qp, qc, g_track, gp, gc, same_set=same_set)

    return {
        "image_rank1": image["rank1"], "image_rank5": image["rank5"], "image_mAP": image["mAP"],
        "tracklet_rank1": tracklet["rank1"], "tracklet_rank5": tracklet["rank5"], "tracklet_mAP": tracklet["mAP"],
        "num_query_images": int(len(qf)), "num_gallery_images": int(len(gf)),
        "num_query_tracklets": int(len(q_track)), "num_gallery_tracklets": int(len(g_track)),
        "num_identities": int(len(set(q_pid.tolist()) | set(g_pid.tolist()))),
        "pooling": pooling,
    }
