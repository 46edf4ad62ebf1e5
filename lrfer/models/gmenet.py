"""GME-Net: Global Multiple Extraction Network for low-resolution facial expression recognition.

How each part maps to the paper's description (GME-Net, low-resolution FER, 2025):

* **Local module, hybrid attention** -> :class:`HybridAttentionBlock`: a residual block whose residual
  branch is re-weighted, before the shortcut is added, by channel attention (average- and max-pooled
  descriptors through a shared bottleneck MLP) followed by spatial attention (a convolution over the
  channel-wise average and maximum maps).
  Three stages of these blocks (:attr:`GMENet.local_stages`) run at the native resolution r, r/2, r/4.
* **Attention-similarity knowledge distillation** (ASKD, Shin et al., ECCV 2022) ->
  ``Recipe(attention_distillation="askd")``: :class:`AttentionRecorder` collects the pre-sigmoid map of
  every channel and spatial attention module, and :func:`lrfer.train.losses.askd_loss` pulls each
  towards the matching module's of a high-resolution teacher with the same modules (a GME-Net trained
  at 48 px) on the *same* face at 48 px (``1 - cos``). The teacher is used only in training; the
  deployed network runs on the low-resolution face alone.
* **The bundled weights were distilled otherwise** (``attention_distillation="activation"``, the
  default): by attention transfer (Zagoruyko & Komodakis 2017) from the ResNet-18 teacher
  ``resnet18-fer2013-48px``, which has no attention modules: :func:`spatial_attention` of each local
  stage's output (channel mean of squared activations, L2-normalised) against the teacher stage's
  (:func:`lrfer.train.losses.attention_transfer_loss`). ASKD needs a 48 px GME-Net teacher, about
  nine times the default's multiply-adds per face: not trained on this project's CPUs yet.
* **Multi-scale global module with a quasi-symmetric structure** -> :class:`QuasiSymmetricGlobalBlock`:
  parallel 3x3 branches with dilation 1, 2 and 3 (small, medium and large receptive fields on the
  whole face) are fused symmetrically around the middle branch: (small + medium) and (medium + large)
  are each projected, then merged, and added back to the input. Aggregating over the whole face
  suppresses the noise that single local regions carry at low resolution.
* **Fusion and classification** -> local and global features are pooled, concatenated and classified.

The network runs at the variant's native resolution (8-24 px): there is no upsampling to 48 px, which
is where lrfer's speed comes from. ``attention=False, global_branch=False`` gives the plain backbone
used by the ``baseline`` ablation (:mod:`lrfer.models.baseline`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lrfer.models.resnet import conv_bn


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over both average- and max-pooled channel descriptors."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The channel attention before its sigmoid, (N, C, 1, 1)."""
        return self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.logits(x))


class SpatialAttention(nn.Module):
    """A convolution over the channel-wise mean and max maps gives one weight per position."""

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial attention before its sigmoid, (N, 1, H, W)."""
        return self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.logits(x))


class AttentionRecorder:
    """Within ``with``, the pre-sigmoid attention of every channel and spatial attention module of
    ``model``, in the order they run: ``maps`` holds (N, C, 1, 1) and (N, 1, H, W) tensors, with their
    gradients. For attention-similarity distillation (:func:`lrfer.train.losses.askd_loss`).

    Forward hooks recompute each module's logits from its input (a 1x1 MLP or a 2-channel
    convolution: cheap), so the network's own forward, which serving traces and rewrites
    (:mod:`lrfer.inplace`), is untouched.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, (ChannelAttention, SpatialAttention))]
        self.maps: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _record(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        self.maps.append(module.logits(inputs[0]))  # type: ignore[operator]

    def __enter__(self) -> "AttentionRecorder":
        self.maps = []
        self._handles = [m.register_forward_hook(self._record) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def spatial_attention(feature_map: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A stage's spatial attention for distillation: the channel mean of squared activations,
    average-pooled to ``size`` if given, flattened and L2-normalised, (N, H * W)."""
    attention = feature_map.pow(2).mean(1, keepdim=True)
    if size is not None and attention.shape[-2:] != size:
        attention = F.adaptive_avg_pool2d(attention, size)
    return F.normalize(attention.flatten(1), dim=1)


class HybridAttentionBlock(nn.Module):
    """Residual block whose residual branch goes through channel then spatial attention before the
    shortcut is added (the local module's unit)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, attention: bool = True) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride)
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1, relu=False)
        self.attention = nn.Sequential(ChannelAttention(out_ch), SpatialAttention()) if attention else nn.Identity()
        self.shortcut = nn.Identity() if stride == 1 and in_ch == out_ch else conv_bn(in_ch, out_ch, 1, stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.attention(self.conv2(self.conv1(x))) + self.shortcut(x))


class QuasiSymmetricGlobalBlock(nn.Module):
    """Three dilated branches fused pairwise around the middle one: (d1+d2), (d2+d3) -> merge."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False),
                conv_bn(channels, channels, 1),
            )
            for d in (1, 2, 3)
        )
        self.fuse_small = conv_bn(channels, channels, 1)
        self.fuse_large = conv_bn(channels, channels, 1)
        self.merge = conv_bn(channels, channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small, medium, large = (branch(x) for branch in self.branches)
        fused = self.fuse_small(small + medium) + self.fuse_large(medium + large)
        return self.relu(x + self.merge(fused))


class GMENet(nn.Module):
    """Local hybrid-attention stages + multi-scale global module, at the native low resolution."""

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        width: int = 32,
        input_size: int = 16,
        blocks_per_stage: int = 1,
        global_blocks: int = 1,
        attention: bool = True,
        global_branch: bool = True,
        drop_rate: float = 0.2,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        widths = (width, width * 2, width * 4)
        self.stem = conv_bn(in_chans, width, 3, stem_stride)
        self.local_stages = nn.ModuleList()
        in_ch = width
        for i, out_ch in enumerate(widths):
            blocks = [HybridAttentionBlock(in_ch if b == 0 else out_ch, out_ch, 2 if (i > 0 and b == 0) else 1, attention)
                      for b in range(blocks_per_stage)]
            self.local_stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        # The global module reads the r/2 map of the local path (whole face, wide receptive fields).
        self.global_module = (
            nn.Sequential(*[QuasiSymmetricGlobalBlock(widths[1]) for _ in range(global_blocks)], conv_bn(widths[1], widths[2], 3, 2))
            if global_branch
            else None
        )
        self.num_features = widths[2] * (2 if global_branch else 1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled fused features and the output map of every local stage."""
        x = self.stem(x)
        maps = []
        for stage in self.local_stages:
            x = stage(x)
            maps.append(x)
        pooled = [F.adaptive_avg_pool2d(maps[-1], 1).flatten(1)]
        if self.global_module is not None:
            pooled.append(F.adaptive_avg_pool2d(self.global_module(maps[1]), 1).flatten(1))
        return torch.cat(pooled, dim=1), maps

    @staticmethod
    def attention_maps(maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """:func:`spatial_attention` of each map, at its own size."""
        return [spatial_attention(m) for m in maps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _ = self.forward_features(x)
        return self.fc(self.dropout(features))


def gmenet(
    num_classes: int = 7,
    in_chans: int = 1,
    width: int = 32,
    input_size: int = 16,
    blocks_per_stage: int = 1,
    global_blocks: int = 1,
    drop_rate: float = 0.2,
    stem_stride: int = 1,
) -> GMENet:
    """GME-Net at native ``input_size`` px (8, 12, 16 or 24 in the zoo).

    ``stem_stride=2`` runs the local stages at r/2, r/4, r/8 instead of r, r/2, r/4: about a quarter
    of the multiply-adds (``gmenet-fast-fer2013-16px``).
    """
    return GMENet(num_classes, in_chans, width, input_size, blocks_per_stage, global_blocks, True, True, drop_rate, stem_stride)
