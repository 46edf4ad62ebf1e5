"""MA-Net: global multi-scale and local attention network for FER in the wild, adapted to 48x48.

How each part maps to the paper (Zhao et al., "Learning deep global multi-scale and local attention
features for facial expression recognition in the wild", IEEE TIP 2021):

* **ResNet-18 layout, shared low/mid levels** -> stem + stages 1-2 of :mod:`lrfer.models.resnet`
  (12x12 mid-level map for a 48 px face).
* **Local attention branch** -> the mid-level map is cut into 4 non-overlapping patches (2x2 grid);
  each patch has its own residual stage and its own attention layers (:class:`CBAM`: channel then
  spatial attention), so each facial region learns its own salient cues; the four pooled patch
  vectors are concatenated and classified.
* **Global multi-scale branch** -> a Res2Net-like block (:class:`Res2NetBlock`: channel groups with
  hierarchical 3x3 convolutions, so one block mixes several receptive fields) on the whole mid-level
  map, then ResNet stages 3-4 and a classifier.
* **Fusion** -> ``logits = 0.6 * local + 0.4 * global`` (the paper's weighting).
* **Lighter than the authors' network** (``zengqunzhao/MA-Net``), to train on CPUs at 48 px: each patch
  runs one residual stage with one CBAM after it (theirs: stages 3 and 4 of blocks with CBAM inside
  each residual branch); the global branch has one one-direction Res2Net block before plain stages 3-4
  (theirs: two-direction multi-scale blocks throughout stages 3-4); the four patch vectors are
  concatenated (theirs: averaged). The authors train
  each branch on its own cross-entropy with these weights (``Recipe.branch_losses``); the bundled
  ``manet-fer2013-48px`` was trained on one cross-entropy of the blend, which scored higher on the
  zoo's 5-epoch schedule (63.3 against 62.2 % PublicTest).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lrfer.models.gmenet import ChannelAttention, SpatialAttention
from lrfer.models.resnet import conv_bn, make_stage

LOCAL_WEIGHT, GLOBAL_WEIGHT = 0.6, 0.4


class CBAM(nn.Sequential):
    """Convolutional block attention: channel attention, then spatial attention."""

    def __init__(self, channels: int) -> None:
        super().__init__(ChannelAttention(channels), SpatialAttention(3))


class Res2NetBlock(nn.Module):
    """Res2Net bottleneck: ``scales`` channel groups, each 3x3 conv also sees the previous group."""

    def __init__(self, channels: int, scales: int = 4) -> None:
        super().__init__()
        if channels % scales:
            raise ValueError(f"channels ({channels}) must be divisible by scales ({scales})")
        self.scales = scales
        group = channels // scales
        self.reduce = conv_bn(channels, channels, 1)
        self.convs = nn.ModuleList(conv_bn(group, group, 3) for _ in range(scales - 1))
        self.expand = conv_bn(channels, channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(self.reduce(x), self.scales, dim=1)
        outs, previous = [groups[0]], None
        for conv, g in zip(self.convs, groups[1:]):
            previous = conv(g if previous is None else g + previous)
            outs.append(previous)
        return self.relu(x + self.expand(torch.cat(outs, 1)))


class PatchBranch(nn.Module):
    """One facial region: its own residual stage + CBAM, pooled to a vector."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.stage = make_stage(in_ch, out_ch, 2, 2)
        self.attention = CBAM(out_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.attention(self.stage(x))).flatten(1)


class MANet(nn.Module):
    """MA-Net: shared stem and stages 1-2, a local branch of 2x2 attended patches and a global
    multi-scale branch, each with its own classifier; :meth:`forward` blends their logits."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, width: int = 16, stem_stride: int = 2,
                 drop_rate: float = 0.2) -> None:
        super().__init__()
        w = [width * 2**i for i in range(4)]
        self.stem = conv_bn(in_chans, width, 3, stem_stride)
        self.stages = nn.ModuleList([make_stage(width, w[0], 2, 1), make_stage(w[0], w[1], 2, 2)])
        self.patches = nn.ModuleList(PatchBranch(w[1], w[2]) for _ in range(4))
        self.local_fc = nn.Linear(4 * w[2], num_classes)
        self.global_branch = nn.Sequential(Res2NetBlock(w[1]), make_stage(w[1], w[2], 2, 2), make_stage(w[2], w[3], 2, 2),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.global_fc = nn.Linear(w[3], num_classes)
        self.dropout = nn.Dropout(drop_rate)

    @staticmethod
    def split_patches(x: torch.Tensor) -> list[torch.Tensor]:
        """2x2 grid of non-overlapping patches: top-left, top-right, bottom-left, bottom-right."""
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        return [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]

    def forward_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local and global logits."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        local = torch.cat([branch(p) for branch, p in zip(self.patches, self.split_patches(x))], 1)
        return self.local_fc(self.dropout(local)), self.global_fc(self.dropout(self.global_branch(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, global_ = self.forward_branches(x)
        return LOCAL_WEIGHT * local + GLOBAL_WEIGHT * global_


def manet(num_classes: int = 7, in_chans: int = 1, width: int = 16, stem_stride: int = 2, drop_rate: float = 0.2) -> MANet:
    """MA-Net for 48x48 grayscale faces."""
    return MANet(num_classes, in_chans, width, stem_stride, drop_rate)
