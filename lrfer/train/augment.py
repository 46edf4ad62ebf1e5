"""Batched training augmentation on 48x48 faces (one affine_grid/grid_sample call per batch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, max_rotate: float = 10.0,
                  scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.08, flip: bool = True) -> torch.Tensor:
    """Random rotation (degrees), scale, shift (fraction of the side) and horizontal flip."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-max_rotate, max_rotate) * math.pi / 180
    s = uniform(*scale)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([
        torch.stack([cos * sign, -sin, uniform(-max_shift, max_shift) * 2], 1),
        torch.stack([sin * sign, cos, uniform(-max_shift, max_shift) * 2], 1),
    ], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_erase(x: torch.Tensor, generator: torch.Generator, prob: float = 0.25, max_frac: float = 0.3) -> torch.Tensor:
    """Zero a random rectangle in a fraction ``prob`` of the images (occlusion robustness)."""
    n, _, h, w = x.shape
    keep = torch.ones_like(x)
    pick = torch.rand(n, generator=generator) < prob
    for i in torch.nonzero(pick).flatten().tolist():
        eh = int(h * max_frac * torch.rand((), generator=generator)) + 1
        ew = int(w * max_frac * torch.rand((), generator=generator)) + 1
        y0 = int(torch.randint(0, h - eh + 1, (), generator=generator))
        x0 = int(torch.randint(0, w - ew + 1, (), generator=generator))
        keep[i, :, y0:y0 + eh, x0:x0 + ew] = 0
    return x * keep
