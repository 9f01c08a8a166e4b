"""BNNeck embedding head (Luo et al., "Bag of Tricks", 2019).

The metric losses see the features before the BN; the classifier and the test-time embedding see them
after it. The BN bias is frozen so the embedding stays centred for cosine matching.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class BNNeck(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (neck embedding, class logits or None)."""
        neck = self.bn(feat)
        logits = self.classifier(neck) if self.classifier is not None else None
        return neck, logits

    def reset_classifier(self, num_classes: int) -> None:
        """A new label set (fine-tuning on other identities) needs a fresh classifier."""
        dim = self.bn.num_features
        self.classifier = nn.Linear(dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
