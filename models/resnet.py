"""ResNet-50 from torchvision as a re-ID backbone (last stride 1, global average pooling)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

from tracklink.models.registry import register_backbone


class ResNetBackbone(nn.Module):
    def __init__(self, net: torchvision.models.ResNet, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride == 1:
            # Bag-of-tricks re-ID: keep a 16x8 map at 256x128 input; it costs little and helps rank-1.
            net.layer4[0].conv2.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                  net.layer1, net.layer2, net.layer3, net.layer4)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.global_avgpool(self.body(x)), 1)


@register_backbone
def resnet50(last_stride: int = 1, **kwargs) -> ResNetBackbone:
    # No download here: ImageNet weights come in through `--init` or torchvision's cache, never implicitly.
    return ResNetBackbone(torchvision.models.resnet50(weights=None), last_stride=last_stride)
