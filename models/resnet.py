"""ResNet-50 from torchvision as a re-ID backbone (last stride 1, global average pooling).

Module names are torchvision's (conv1, bn1, layer1-4), so torchvision's ImageNet weights and torchreid's
resnet50 checkpoints load by name with `tracklink import-weights FILE.pth --arch resnet50` (or as `--init`).
"""

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
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.global_avgpool(x), 1)


@register_backbone
def resnet50(last_stride: int = 1) -> ResNetBackbone:
    # No download here: pretrained weights come in through `import-weights` or `--init`, never implicitly.
    return ResNetBackbone(torchvision.models.resnet50(weights=None), last_stride=last_stride)
