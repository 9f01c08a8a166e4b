"""Evaluate an embedder on a labelled video re-ID dataset: image-level and tracklet-level CMC/mAP.

The protocol is cross-camera (see `metrics.cmc_map`). Tracklet features are the test-time rule of the
OSM+CAA spec: the mean of L2-normalised frame embeddings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from tracklink.models.preprocess import read_image
from tracklink.train.datasets import Tracklet, VideoDataset
from tracklink.train.metrics import cmc_map, pool_by_tracklet

EmbedFn = Callable[[list[np.ndarray]], np.ndarray]


def embed_tracklets(embed: EmbedFn, tracklets: Sequence[Tracklet], batch_size: int = 64,
                    progress: bool = True, desc: str = "embed", rank: int = 0, world_size: int = 1,
                    gather: Callable[[object], list] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed every frame once; returns (features (F, D), index of each frame's tracklet (F,))."""
    return embed_frames(embed, [t.frames for t in tracklets], batch_size, progress, desc, rank, world_size, gather)


def embed_frames(embed: EmbedFn, frame_lists: Sequence[Sequence], batch_size: int = 64, progress: bool = True,
                 desc: str = "embed", rank: int = 0, world_size: int = 1,
                 gather: Callable[[object], list] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed the image files of several tracklets in shared batches; returns (features (F, D), index of each
    frame's tracklet (F,)).

    With world_size > 1 this rank embeds frames rank, rank + world_size, ... and `gather` (an all-gather
    of Python objects) assembles the full matrix on every rank.
    """
    frames = [(i, path) for i, paths in enumerate(frame_lists) for path in paths]
    mine = frames[rank::world_size]
    feats: list[np.ndarray] = []
    with tqdm(total=len(mine), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            feats.append(np.asarray(embed([read_image(p) for _, p in chunk]), dtype=np.float32))
            bar.update(len(chunk))
    local = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    if world_size > 1:
        shards = gather(local)
        full = np.empty((len(frames), max(s.shape[1] for s in shards)), np.float32)
        for r, shard in enumerate(shards):
            if len(shard):
                full[r::world_size] = shard
        local = full
    owner = np.fromiter((i for i, _ in frames), dtype=np.int64, count=len(frames))
    return local, owner


def evaluate(embed: EmbedFn, dataset: VideoDataset, batch_size: int = 64, progress: bool = True,
             rank: int = 0, world_size: int = 1, gather: Callable[[object], list] | None = None) -> dict:
    """Returns image_* and tracklet_* rank1/rank5/mAP, plus the sample counts.

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

    def labels(tracks: Sequence[Tracklet], owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pids = np.array([t.pid for t in tracks])
        cams = np.array([t.cam for t in tracks])
        return pids[owner], cams[owner]

    (qf, q_owner), (gf, g_owner) = embedded["query"], embedded["gallery"]
    q_pid, q_cam = labels(dataset.query, q_owner)
    g_pid, g_cam = labels(dataset.gallery, g_owner)
    image = cmc_map(qf, q_pid, q_cam, gf, g_pid, g_cam, same_set=same_set)

    q_track, q_idx = pool_by_tracklet(qf, q_owner)
    g_track, g_idx = pool_by_tracklet(gf, g_owner)
    qp, qc = labels(dataset.query, q_idx)
    gp, gc = labels(dataset.gallery, g_idx)
    tracklet = cmc_map(q_track, qp, qc, g_track, gp, gc, same_set=same_set)

    return {
        "image_rank1": image["rank1"], "image_rank5": image["rank5"], "image_mAP": image["mAP"],
        "tracklet_rank1": tracklet["rank1"], "tracklet_rank5": tracklet["rank5"], "tracklet_mAP": tracklet["mAP"],
        "num_query_images": int(len(qf)), "num_gallery_images": int(len(gf)),
        "num_query_tracklets": int(len(q_track)), "num_gallery_tracklets": int(len(g_track)),
        "num_identities": int(len(set(q_pid.tolist()) | set(g_pid.tolist()))),
    }
