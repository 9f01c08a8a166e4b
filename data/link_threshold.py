"""Calibrate a model's link threshold on labelled data: embed, pool each tracklet, pick the best-F1 threshold.

One routine for `tracklink calibrate` and for training with held-out identities, so a threshold stored by
`tracklink train --eval-ids` is the one `tracklink calibrate --write` would have stored. Tracklets are
pooled by the pipeline's rule (`tracklink.models.pooling`) and weighted by their number of embeddings, as
`tracklink batch` and `tracklink match` weight them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tracklink.data.datasets import LabelledTracklet, VideoDataset
from tracklink.data.embedding import EmbedFn, embed_frames
from tracklink.models.link_calibration import calibrate_threshold
from tracklink.models.pooling import pool_by_tracklet


def unique_tracklets(dataset: VideoDataset) -> list[LabelledTracklet]:
    """Every tracklet once: the folder layout lists each one in all three splits."""
    return list({t.key: t for t in dataset.split("all")}.values())


def calibrate_on_tracklets(embed: EmbedFn, tracklets: Sequence[LabelledTracklet], pooling: str = "mean",
                           batch_size: int = 64, progress: bool = True, cross_camera_only: bool = True) -> dict:
    """`calibrate_threshold` on the pooled features of labelled tracklets.

    `embed` returns (embeddings, attention) for "caa" pooling (`Embedder.embed_with_attention`), else
    embeddings. Tracklets without frames are left out.
    """
    feats, owner, attention = embed_frames(embed, [t.frames for t in tracklets], batch_size, progress,
                                           desc="embed for calibration")
    pooled, index = pool_by_tracklet(feats, owner, pooling, attention)
    counts = np.bincount(owner, minlength=len(tracklets))
    chosen = [tracklets[i] for i in index]
    return calibrate_threshold(pooled, [t.pid for t in chosen], [t.cam for t in chosen], weights=counts[index],
                               cross_camera_only=cross_camera_only)


def seen_in_training(identities: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The identities a model was trained on (its `ModelMeta.classes`) among those given, in their order."""
    known = set(classes)
    return [pid for pid in identities if pid in known]


__all__ = ["calibrate_on_tracklets", "seen_in_training", "unique_tracklets"]
