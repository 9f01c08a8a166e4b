"""Temporal pooling: many frame embeddings of one tracklet -> one tracklet embedding.

Written here rather than borrowed because CAA attention pooling is part of the OSM+CAA method itself.
One rule, in two array libraries: PyTorch for training (the functions take (B, T, D) frame features and
return (B, D)), NumPy for inference, where a tracklet grows one frame at a time (`accumulate`, then the
direction of the accumulator is the tracklet's feature) or is pooled at once (`pool_by_tracklet`).

- mean: the test-time rule of the OSM+CAA spec, the mean of L2-normalised frame embeddings;
- max: the element-wise maximum of the L2-normalised frame embeddings;
- caa: the mean weighted by each frame's class-aware attention (`caa_attention`), which needs the
  classifier of a model trained with classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

POOLINGS = ("mean", "max", "caa")

# CAA constants from the authors' code: a_i = exp(-(p_i - 1)^2 / (2 * 0.68^2)).
CAA_SIGMA = 0.68


def caa_attention(true_class_prob: "torch.Tensor") -> "torch.Tensor":
    """Class-aware attention of each sample, detached: a sample the classifier finds atypical gets little."""
    import torch

    p = true_class_prob.detach()
    return torch.exp(-((p - 1.0) ** 2) / (2 * CAA_SIGMA**2))


def mean_pool(frames: "torch.Tensor") -> "torch.Tensor":
    """The test-time rule of the spec: mean of L2-normalised frame embeddings."""
    import torch.nn.functional as F

    return F.normalize(frames, dim=-1).mean(dim=1)


def max_pool(frames: "torch.Tensor") -> "torch.Tensor":
    """Element-wise maximum of the L2-normalised frame embeddings (as at inference)."""
    import torch.nn.functional as F

    return F.normalize(frames, dim=-1).max(dim=1).values


def attention_pool(frames: "torch.Tensor", attention: "torch.Tensor", eps: float = 1e-12) -> "torch.Tensor":
    """F = sum_t a_hat_t f_t with a_hat L1-normalised inside each tracklet; f_t L2-normalised."""
    import torch.nn.functional as F

    weights = attention / (attention.sum(dim=1, keepdim=True) + eps)
    return (weights.unsqueeze(-1) * F.normalize(frames, dim=-1)).sum(dim=1)


def temporal_pool(frames: "torch.Tensor", method: str = "mean", logits: "torch.Tensor | None" = None,
                  labels: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Pool (B, T, D) frame features by name.

    For "caa", `logits` (B, T, C) give the attention: the probability of the true class when `labels` (B,)
    are known (training), otherwise the classifier's top probability (inference on known classes).
    """
    if method == "mean":
        return mean_pool(frames)
    if method == "max":
        return max_pool(frames)
    if method == "caa":
        if logits is None:
            return mean_pool(frames)  # no classifier (an imported or open-set model): CAA is undefined
        probs = logits.detach().softmax(dim=-1)
        if labels is not None:
            p = probs.gather(-1, labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(-1)
        else:
            p = probs.max(dim=-1).values
        return attention_pool(frames, caa_attention(p))
    raise ValueError(f"unknown pooling {method!r}; choose one of {POOLINGS}")


# ---------------------------------------------------------------------------------------------- inference


def caa_attention_np(logits: np.ndarray) -> np.ndarray:
    """Inference-time CAA attention of each frame from its class logits (N, C): the classifier's top
    probability stands for the true class, which is unknown at inference."""
    z = logits - logits.max(axis=1, keepdims=True)
    top = 1.0 / np.exp(z).sum(axis=1)  # softmax of the arg-max class
    return np.exp(-((top - 1.0) ** 2) / (2 * CAA_SIGMA**2)).astype(np.float32)


def accumulate(acc: np.ndarray | None, frames: np.ndarray, method: str = "mean",
               weights: np.ndarray | None = None) -> np.ndarray | None:
    """Fold L2-normalised frame embeddings (N, D) into a tracklet's running pool; its direction is the feature.

    mean and caa keep a (weighted) sum, max an element-wise maximum: both are exact however the frames
    arrive, one at a time or all at once.
    """
    if len(frames) == 0:
        return acc
    frames = np.asarray(frames, dtype=np.float32)
    if method == "max":
        top = frames.max(axis=0)
        return top if acc is None else np.maximum(acc, top)
    if method == "caa":
        if weights is None:
            raise ValueError("caa pooling needs each frame's attention")
        part = (np.asarray(weights, np.float32)[:, None] * frames).sum(axis=0)
    elif method == "mean":
        part = frames.sum(axis=0)
    else:
        raise ValueError(f"unknown pooling {method!r}; choose one of {POOLINGS}")
    return part if acc is None else acc + part


def direction(acc: np.ndarray | None) -> np.ndarray | None:
    """The pooled feature: the accumulator, L2-normalised."""
    if acc is None:
        return None
    return acc / max(float(np.linalg.norm(acc)), 1e-12)


def pool_by_tracklet(feats: np.ndarray, tracklet_ids: np.ndarray, method: str = "mean",
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pool frame features (F, D) by tracklet id (F,); returns (pooled (U, D) float32, sorted unique ids (U,)).

    Frames are L2-normalised first; each pooled feature is L2-normalised again (its direction is what
    counts, as in `direction`).
    """
    f = np.asarray(feats, dtype=np.float32)
    ids = np.asarray(tracklet_ids).ravel()
    if len(ids) != len(f):
        raise ValueError(f"got {len(f)} features but {len(ids)} tracklet ids")
    if len(ids) == 0:
        return f, ids
    if method not in POOLINGS or (method == "caa" and weights is None):
        raise ValueError(f"pooling {method!r} needs one of {POOLINGS}, and caa each frame's attention")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    unique, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(unique)))
    f = f[order]
    if method == "max":
        pooled = np.maximum.reduceat(f, starts, axis=0)
    else:
        w = np.ones(len(f), np.float32) if method == "mean" else np.asarray(weights, np.float32)[order]
        pooled = np.add.reduceat(f * w[:, None], starts, axis=0)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12), unique
