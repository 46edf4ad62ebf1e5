"""Losses of the zoo's recipes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lrfer.models.gmenet import spatial_attention as gmenet_attention


def spatial_attention(feature_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`lrfer.models.gmenet.spatial_attention` pooled to ``size``."""
    return gmenet_attention(feature_map, size)


def attention_transfer_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017): squared distance between
    the normalised activation energy (:func:`spatial_attention`) of each student stage and of the
    matching teacher stage (both pooled to the smaller of their two sizes), summed over stages,
    averaged over the batch. The bundled GME-Net weights were distilled with it from the ResNet-18
    teacher, which has no attention modules for :func:`askd_loss` to compare."""
    loss = student_maps[0].new_zeros(())
    for s, t in zip(student_maps, teacher_maps):
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        loss = loss + (spatial_attention(s, size) - spatial_attention(t, size)).pow(2).sum(1).mean()
    return loss


def askd_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Attention similarity knowledge distillation (Shin et al., ECCV 2022), which GME-Net uses: for
    each attention module, ``1 - cos`` between the student's pre-sigmoid attention and the matching
    module's of a high-resolution teacher of the same layout, on the same face (a teacher's spatial
    map average-pooled to the student's size), averaged over the batch and summed over modules.
    Maps from :class:`lrfer.models.gmenet.AttentionRecorder`."""
    if len(student_maps) != len(teacher_maps):
        raise ValueError(f"the student has {len(student_maps)} attention maps and the teacher {len(teacher_maps)}: "
                         "attention similarity needs a teacher with the same attention modules")
    loss = student_maps[0].new_zeros(())
    for s, t in zip(student_maps, teacher_maps):
        if t.shape[-2:] != s.shape[-2:]:
            t = F.adaptive_avg_pool2d(t, (s.shape[-2], s.shape[-1]))
        loss = loss + (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean()
    return loss


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss, scaled by T^2 so its gradient is comparable to the hard loss."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1), reduction="batchmean"
    ) * temperature**2


def classification_aware_weights(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """FSR-FER's re-weighting: ``1 + beta * (1 - p_y)`` from a fixed classifier's logits (no gradient)."""
    p_true = F.softmax(logits.detach().float(), 1).gather(1, labels[:, None]).squeeze(1)
    return 1 + beta * (1 - p_true)


def weighted_feature_loss(sr: torch.Tensor, hr: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample L1 distance between feature maps, weighted."""
    return ((sr - hr).abs().flatten(1).mean(1) * weights).mean()


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
