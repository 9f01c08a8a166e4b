"""Temporal pooling: many frame embeddings of one tracklet -> one tracklet embedding.

Written here rather than borrowed because CAA attention pooling is part of the OSM+CAA method itself.
Every function takes frame features (B, T, D) and returns (B, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLINGS = ("mean", "max", "caa")

# CAA constants from the authors' code: a_i = exp(-(p_i - 1)^2 / (2 * 0.68^2)).
CAA_SIGMA = 0.68


def caa_attention(true_class_prob: torch.Tensor) -> torch.Tensor:
    """Class-aware attention of each sample, detached: a sample the classifier finds atypical gets little."""
    p = true_class_prob.detach()
    return torch.exp(-((p - 1.0) ** 2) / (2 * CAA_SIGMA**2))


def mean_pool(frames: torch.Tensor) -> torch.Tensor:
    """The test-time rule of the spec: mean of L2-normalised frame embeddings."""
    return F.normalize(frames, dim=-1).mean(dim=1)


def max_pool(frames: torch.Tensor) -> torch.Tensor:
    return frames.max(dim=1).values


def attention_pool(frames: torch.Tensor, attention: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """F = sum_t a_hat_t f_t with a_hat L1-normalised inside each tracklet; f_t L2-normalised."""
    weights = attention / (attention.sum(dim=1, keepdim=True) + eps)
    return (weights.unsqueeze(-1) * F.normalize(frames, dim=-1)).sum(dim=1)


def temporal_pool(frames: torch.Tensor, method: str = "mean", logits: torch.Tensor | None = None,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
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
