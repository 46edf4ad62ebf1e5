"""ResNet-18 for 48x48 grayscale faces: the high-resolution teacher of the zoo.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), BasicBlock layout [2, 2, 2, 2],
adapted to FER2013's 48x48 grayscale crops: a 3x3 stem (stride 2 by default, no max-pool) so the four
stages run at 24, 12, 6 and 3 px, and a configurable base width (``width``; 64 in the paper).

The teacher serves three purposes in lrfer: the ``resnet18-fer2013-48px`` variant itself; the source of
the attention maps that GME-Net students are distilled from (:meth:`ResNet.forward_features`); and the
fixed feature extractor and classifier of FSR-FER (:meth:`ResNet.stem_to_stage` / ``stage_to_logits``).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution + BatchNorm (+ ReLU), the unit every lrfer network is built from."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride)
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1, relu=False)
        self.shortcut = nn.Identity() if stride == 1 and in_ch == out_ch else conv_bn(in_ch, out_ch, 1, stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def make_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride), *[BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)])


class ResNet(nn.Module):
    """ResNet with BasicBlocks; ``stage_widths`` are the four stage widths."""

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        width: int = 32,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        stem_stride: int = 2,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(len(layers))]
        self.stage_widths = widths
        self.stem = conv_bn(in_chans, width, 3, stem_stride)
        self.stages = nn.ModuleList(
            make_stage(widths[i - 1] if i else width, widths[i], n, 1 if i == 0 else 2) for i, n in enumerate(layers)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.num_features = widths[-1]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output map of every stage (used for attention distillation)."""
        maps = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def stem_to_stage(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Image -> output map of ``stage`` (0-based)."""
        x = self.stem(x)
        for s in self.stages[: stage + 1]:
            x = s(x)
        return x

    def stage_to_logits(self, feat: torch.Tensor, stage: int) -> torch.Tensor:
        """Output map of ``stage`` -> logits (runs the remaining stages and the head)."""
        for s in self.stages[stage + 1 :]:
            feat = s(feat)
        return self.head(feat)

    def head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(feat).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1])


def resnet18(num_classes: int = 7, in_chans: int = 1, width: int = 32, stem_stride: int = 2, drop_rate: float = 0.2) -> ResNet:
    """ResNet-18 adapted to 48x48 grayscale faces (the zoo's HR teacher)."""
    return ResNet(num_classes, in_chans, width, (2, 2, 2, 2), stem_stride, drop_rate)
