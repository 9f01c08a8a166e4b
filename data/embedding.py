"""Embed the image files of labelled tracklets with any model, in shared batches, optionally across ranks."""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from tracklink.data.datasets import LabelledTracklet
from tracklink.models.preprocess import read_image
from tracklink.utils.progress import bar_disabled

# crops -> embeddings (N, D), or (embeddings, attention (N,)) for CAA pooling
EmbedFn = Callable[[list[np.ndarray]], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


class FrameEmbeddings(NamedTuple):
    feats: np.ndarray  # (F, D), one row per frame file
    owner: np.ndarray  # (F,) index of each frame's tracklet
    attention: np.ndarray | None  # (F,) class-aware attention when the embed function gave it


def embed_tracklets(embed: EmbedFn, tracklets: Sequence[LabelledTracklet], batch_size: int = 64,
                    progress: bool = True, desc: str = "embed", rank: int = 0, world_size: int = 1,
                    gather: Callable[[object], list] | None = None) -> FrameEmbeddings:
    """Embed every frame of the tracklets once, in order."""
    return embed_frames(embed, [t.frames for t in tracklets], batch_size, progress, desc, rank, world_size, gather)


def _embed_block(embed: EmbedFn, images: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """The embeddings of a batch, with the attention (if any) as a last column so shards travel as one array."""
    out = embed(images)
    if isinstance(out, tuple):
        feats, attention = out
        return np.concatenate([np.asarray(feats, np.float32), np.asarray(attention, np.float32)[:, None]], 1), True
    return np.asarray(out, dtype=np.float32), False


def embed_frames(embed: EmbedFn, frame_lists: Sequence[Sequence], batch_size: int = 64, progress: bool = True,
                 desc: str = "embed", rank: int = 0, world_size: int = 1,
                 gather: Callable[[object], list] | None = None) -> FrameEmbeddings:
    """Embed the image files of several tracklets in shared batches.

    With world_size > 1 this rank embeds frames rank, rank + world_size, ... and `gather` (an all-gather
    of Python objects) assembles the full matrix on every rank.
    """
    frames = [(i, path) for i, paths in enumerate(frame_lists) for path in paths]
    mine = frames[rank::world_size]
    blocks: list[np.ndarray] = []
    weighted = False
    with tqdm(total=len(mine), desc=desc, unit="img", disable=bar_disabled(progress), leave=False) as bar:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            block, weighted = _embed_block(embed, [read_image(p) for _, p in chunk])
            blocks.append(block)
            bar.update(len(chunk))
    local = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    if world_size > 1:
        shards = gather(local)
        full = np.empty((len(frames), max(s.shape[1] for s in shards)), np.float32)
        for r, shard in enumerate(shards):
            if len(shard):
                full[r::world_size] = shard
        local = full
    owner = np.fromiter((i for i, _ in frames), dtype=np.int64, count=len(frames))
    if weighted:
        return FrameEmbeddings(local[:, :-1], owner, local[:, -1].copy())
    return FrameEmbeddings(local, owner, None)


__all__ = ["EmbedFn", "FrameEmbeddings", "embed_frames", "embed_tracklets"]
