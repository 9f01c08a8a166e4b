"""The video re-ID model: frame backbone -> BNNeck -> embedding, with temporal pooling of tracklets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from tracklink.models.heads import BNNeck
from tracklink.models.pooling import POOLINGS, temporal_pool
from tracklink.models.registry import create_backbone


@dataclass
class TrainOutput:
    feat: torch.Tensor  # (N, D) before the neck: what the metric losses see
    embedding: torch.Tensor  # (N, D) after the neck: what inference returns
    logits: torch.Tensor | None  # (N, C)


class ReIDModel(nn.Module):
    """forward(images (N, 3, H, W)) -> embeddings (N, D), un-normalised, as the exported graph returns them."""

    def __init__(self, backbone: nn.Module, num_classes: int = 0, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.backbone = backbone
        self.head = BNNeck(backbone.out_dim, num_classes)
        self.pooling = pooling

    @property
    def embedding_dim(self) -> int:
        return self.head.bn.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))[0]

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        feat = self.backbone(images)
        embedding, logits = self.head(feat)
        return TrainOutput(feat, embedding, logits)

    @torch.no_grad()
    def embed_tracklets(self, clips: torch.Tensor) -> torch.Tensor:
        """clips (B, T, 3, H, W) -> pooled tracklet embeddings (B, D)."""
        b, t = clips.shape[:2]
        embedding, logits = self.head(self.backbone(clips.flatten(0, 1)))
        logits = logits.view(b, t, -1) if logits is not None else None
        return temporal_pool(embedding.view(b, t, -1), self.pooling, logits=logits)


def build_model(arch: str, num_classes: int = 0, pooling: str = "mean") -> ReIDModel:
    return ReIDModel(create_backbone(arch), num_classes=num_classes, pooling=pooling)
