"""FSR-FER: feature super-resolution with a GAN for low-resolution facial expression recognition.

How each part maps to the paper (feature-level super-resolution GAN for low-resolution FER):

* **Fixed, pre-trained FER feature extractor** -> :attr:`FSRFER.extractor`, the zoo's 48 px ResNet-18
  teacher (:mod:`lrfer.models.resnet`), frozen. A low-resolution face is resized back to 48 px
  (bicubic: the paper's "down-sample, then resize back" protocol) and run up to stage ``sr_stage``.
* **Generator of residual-in-residual dense blocks** -> :class:`FeatureGenerator`: RRDBs
  (ESRGAN's block: three densely connected 5-conv blocks, residual scaling 0.2) acting on the feature
  map, predicting the residual that moves the LR features towards the features of the HR face.
* **Discriminator** -> :class:`FeatureDiscriminator` (training only, not part of the served weights):
  tells HR features from super-resolved ones.
* **Classification-aware loss re-weighting** -> :func:`lrfer.train.losses.classification_aware_weights`:
  each sample's feature and classification losses are weighted by ``1 + beta * (1 - p_y)``, where
  ``p_y`` is the fixed FER classifier's probability of the true class on the *LR* features, so the
  samples the classifier finds hard get more of the generator's capacity.
* **Classification** -> the frozen teacher's remaining stages and head on the super-resolved features.

Unlike GME-Net this network runs the 48 px extractor: it trades speed for reuse of a fixed HR model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lrfer.constants import HR_SIZE
from lrfer.models.resnet import ResNet, resnet18

RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling, keeps the deep residual stack stable


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing all earlier outputs (ESRGAN's RDB)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(features, 1))
            if i < 4:
                features.append(self.act(out))
        return x + RESIDUAL_SCALE * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks inside a scaled residual."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[DenseBlock(channels, growth) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.blocks(x)


class FeatureGenerator(nn.Module):
    """LR feature map -> residual towards the HR feature map (same shape)."""

    def __init__(self, channels: int, hidden: int = 64, growth: int = 32, num_blocks: int = 2) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(hidden, growth) for _ in range(num_blocks)])
        self.conv_out = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as the identity map on features
        assert self.conv_out.bias is not None  # a Conv2d's bias is None only when built with bias=False
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(feat)
        return feat + self.conv_out(x + self.body(x))


class FeatureDiscriminator(nn.Module):
    """Real (HR) vs super-resolved feature maps; one logit per sample."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 1),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat).squeeze(1)


class FSRFER(nn.Module):
    """LR face (native ``input_size``) -> resize to 48 -> fixed extractor -> generator -> fixed head."""

    def __init__(self, extractor: ResNet, input_size: int = 16, sr_stage: int = 2,
                 hidden: int = 64, growth: int = 32, num_blocks: int = 2) -> None:
        super().__init__()
        self.input_size = input_size
        self.sr_stage = sr_stage
        self.extractor = extractor
        self.generator = FeatureGenerator(extractor.stage_widths[sr_stage], hidden, growth, num_blocks)

    def lr_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised LR faces -> extractor features of the faces resized back to 48 px."""
        x = F.interpolate(x, size=(HR_SIZE, HR_SIZE), mode="bicubic", align_corners=False)
        return self.extractor.stem_to_stage(x, self.sr_stage)

    def classify_features(self, feat: torch.Tensor) -> torch.Tensor:
        return self.extractor.stage_to_logits(feat, self.sr_stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_features(self.generator(self.lr_features(x)))


def fsrfer(num_classes: int = 7, in_chans: int = 1, input_size: int = 16, extractor_width: int = 16,
           sr_stage: int = 2, hidden: int = 64, growth: int = 32, num_blocks: int = 2) -> FSRFER:
    """FSR-FER over a ResNet-18 extractor of base width ``extractor_width``."""
    extractor = resnet18(num_classes, in_chans, extractor_width)
    return FSRFER(extractor, input_size, sr_stage, hidden, growth, num_blocks)
