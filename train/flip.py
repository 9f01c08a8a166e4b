"""Flip test-time augmentation: a frame's feature is the mean of the embeddings of the image and its mirror.

A person seen from the left looks like a mirrored person seen from the right, so averaging both views
removes some of the pose asymmetry. It doubles the embedding cost, which is why it is an evaluation
option only and the deployed pipeline does not use it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tracklink.data.embedding import EmbedFn, FrameEmbeddings


def mirrored(embed: EmbedFn) -> EmbedFn:
    """The same embedding function, on horizontally mirrored crops."""
    def embed_mirrored(crops: Sequence[np.ndarray]):
        return embed([np.ascontiguousarray(c[:, ::-1]) for c in crops])

    return embed_mirrored


def average_views(plain: FrameEmbeddings, mirror: FrameEmbeddings) -> FrameEmbeddings:
    """Per frame: the mean of the two L2-normalised embeddings (and of their attention, for CAA pooling)."""
    if len(plain.feats) != len(mirror.feats) or not np.array_equal(plain.owner, mirror.owner):
        raise ValueError("the plain and mirrored embeddings must come from the same frames in the same order")

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    feats = ((unit(plain.feats) + unit(mirror.feats)) / 2).astype(np.float32)
    attention = None
    if plain.attention is not None and mirror.attention is not None:
        attention = ((plain.attention + mirror.attention) / 2).astype(np.float32)
    return FrameEmbeddings(feats, plain.owner, attention)


__all__ = ["average_views", "mirrored"]
