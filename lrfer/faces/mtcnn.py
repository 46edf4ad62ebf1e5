"""lrfer's own MTCNN face detector, torch only (no torchvision, no PIL, no pickles).

MTCNN (Zhang, Zhang, Li & Qiao, "Joint Face Detection and Alignment Using Multitask Cascaded
Convolutional Networks", IEEE SPL 2016) is a cascade of three small CNNs. The layer layout below is
exactly facenet-pytorch's (Tim Esler, MIT), so its weights, converted to safetensors by
``scripts/convert_mtcnn_weights.py`` and bundled in ``lrfer/weights/``, load with ``strict=True``.

Stages, each a small function:

1. :func:`pyramid_scales` - image pyramid, from ``min_face`` down by ``PYRAMID_FACTOR`` (0.709); a
   ``min_face`` below 12 px adds one enlarged level first (bilinear: ``UPSCALE_MODE``);
2. :func:`propose` - P-Net, fully convolutional, on every scale (batched over equal-size images),
   :func:`pnet_candidates` turns its maps into boxes, NMS per scale then across scales. The scales
   are torch's ``area`` resizes (:meth:`MipVolume.resized`; on CPU from integral images, the same
   values);
3. :func:`refine` - R-Net on 24x24 crops of the squared candidates, NMS, box regression;
4. :func:`output` - O-Net on 48x48 crops: score, box regression, five landmarks, final "min" NMS.

Crops are sampled from all images at once on the detector's device (:func:`lrfer.faces.align.sample_patches`,
zero padding outside the image, an area filter for large boxes). Coordinates are continuous pixel
coordinates: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.

>>> det = MTCNN(min_face=20)
>>> det.detect([torch.zeros(3, 120, 160, dtype=torch.uint8)])[0].boxes.shape
torch.Size([0, 4])
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrfer.constants import CPU_ACTIVATION_BUDGET
from lrfer.faces import align
from lrfer.faces.align import (
    area_resize_integral,
    cpu_image_groups,
    images_by_size,
    images_by_size_bucket,
    integral_image,
    mean_2x2_zero_padded,
    sample_patches,
    stack_images,
)
from lrfer.faces.detect import (
    Detections,
    NetworkDetector,
    check_images,
    check_min_face,
    concat_per_image,
    detection_mode,
    has_area,
    read_bundled_weights,
    split_by_image,
)
from lrfer.faces.workspace import reusable_empty
from lrfer.overlap import stop_if_cancelled
from lrfer.shapes import PHOTO_ROWS, bucket, bucket_side, memory_format_of, to_device

log = logging.getLogger(__name__)

#: Pixel normalisation of the original MTCNN: (x - 127.5) / 128, i.e. facenet's ``* 0.0078125``.
PIXEL_CENTER = 127.5
PIXEL_SCALE = 1.0 / 128.0
#: P-Net sees 12x12 windows, with a stride of 2 pixels on its output map.
PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_INPUT = 24
ONET_INPUT = 48
#: Ratio between successive pyramid scales.
PYRAMID_FACTOR = 0.709
#: How P-Net's pyramid enlarges the photo at scales above 1 (``min_face`` below :data:`PNET_WINDOW`).
UPSCALE_MODE = "bilinear"
DEFAULT_MIN_FACE = 20
#: Score thresholds of P-Net, R-Net and O-Net (facenet-pytorch's defaults).
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
#: IoU thresholds of the NMS steps (the original MTCNN / facenet-pytorch values).
NMS_PER_SCALE = 0.5
NMS_ACROSS_SCALES = 0.7
NMS_REFINE = 0.7
NMS_OUTPUT = 0.7  # with overlap measured as intersection / smaller area
#: Boxes per R-Net / O-Net forward pass, and most sampled pixels per crop batch (memory caps).
NET_CHUNK = 512
# On CPU (lrfer.constants.CPU_ACTIVATION_BUDGET) P-Net runs on bands of rows, R-Net and O-Net on
# fewer crops per call (154 and 30). Measured on 2 cores: P-Net on 768x1152 (a 1920 px photo's first
# scale) 74 ms whole, 32 ms in bands; a 1920 px crowd mosaic 1,250 ms with 512 crops per call, 990 ms
# with these; the same outputs.
#: Input rows shared by consecutive bands: P-Net's 12-row window minus its 2-row stride.
PNET_BAND_OVERLAP = PNET_WINDOW - PNET_STRIDE
NMS_PAIR_CHUNK = 1 << 20  # candidate box pairs per overlap batch in nms()
#: Off the CPU, nms() compares every pair of up to this many boxes in one call: a handful of kernels
#: and one host sync, where the bands cost some 40 small kernels and three syncs per call.
NMS_DENSE_MAX = 2048
CROP_CHUNK_SAMPLES = 1 << 22
#: Boxes cropped and scored per pass of R-Net or O-Net: bounds the crops held at once (8,192 R-Net
#: crops are 57 MB as floats, twice that while normalised) however many candidates P-Net proposes
#: (119,000 in an 8000x6000 crowd mosaic: 1.6 GB in one pass).
CROPS_PER_PASS = 8192
#: Crops are sampled from 2x-area-reduced copies of the images (up to 2**MAX_MIP_LEVEL smaller),
#: with at most MAX_CROP_OVERSAMPLE^2 bilinear samples per output pixel.
MAX_MIP_LEVEL = 6
MAX_CROP_OVERSAMPLE = 4
#: P-Net's pyramid levels are resized from 2x2-averaged mip levels when that widens the averaging
#: windows by at most this factor (see :func:`pyramid_source_level`). On group4, the largest gap
#: between MTCNN's own landmarks and O-Net's on BlazeFace's boxes is 10.5 % of the face width when
#: resizing from the full image, 10.1 % at 1.15, 12.4 % at 1.2 (the shared test allows 12 %).
PYRAMID_MAX_WIDENING = 1.15
#: Height in pixels of the bands of rows that order crops for sampling (see :func:`crop_boxes`).
CROP_ORDER_BAND = 64
#: P-Net's weight and activation dtypes by ``pnet_precision`` (R-Net and O-Net, which place the final
#: boxes and landmarks, always run in float32).
PNET_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: sha256 of the bundled safetensors files (written by scripts/convert_mtcnn_weights.py).
WEIGHT_SHA256 = {
    "pnet": "caccc0a9da1f1226106d4ee10a90d3345d49f094b4b32bacc450455c41f0ce25",
    "rnet": "7298a722c3cd3ef869436942505addd91d452e457b4f312cd06815b533f39f70",
    "onet": "9077feb212426615d752ddb6cecf4aa007a4f5293348e6283fbf78ad6dee75f6",
}


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field; returns (box offsets, face probs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor, regions: Sequence[tuple[int, int, int, int]] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """``regions``: for an input padded beyond its images, ``(first row, end row, height, width)``
        of each run of rows holding images of one size (see :func:`propose_padded`)."""
        x = prelu_by_rows(self.conv1(x), self.prelu1.weight)
        x = max_pool_2x2_ceil(pool_as_if_unpadded(x, regions))
        x = prelu_by_rows(self.conv2(x), self.prelu2.weight)
        x = prelu_by_rows(self.conv3(x), self.prelu3.weight)
        # Both 1x1 heads in one convolution: one pass over the 32-channel map instead of two.
        assert self.conv4_1.bias is not None and self.conv4_2.bias is not None  # built with biases
        heads = F.conv2d(x, torch.cat([self.conv4_2.weight, self.conv4_1.weight]), torch.cat([self.conv4_2.bias, self.conv4_1.bias]))
        return heads[:, :4], self.softmax4_1(heads[:, 4:])


def prelu_by_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.prelu(x, weight)`` for a channels_last ``x``, computed on its rows of ``W * C`` values.

    ATen's PReLU on channels_last maps with 10 channels (P-Net's first layer) loops over 10 values at
    a time: 3-6x slower than this (measured 3.7 vs 0.6 ms on 10x180x1150); in bf16 it is slow at
    any width (16 channels: 2.7 vs 0.13 ms on 16x85x573, 2 cores). float32 maps with 16 or more
    channels go to ATen, a little faster there. The same values either way.

    >>> x, w = torch.randn(2, 10, 3, 4).contiguous(memory_format=torch.channels_last), torch.rand(10) - 0.5
    >>> torch.equal(prelu_by_rows(x, w), F.prelu(x, w))
    True
    """
    few_channels_or_bf16 = x.dim() == 4 and (x.shape[1] < 16 or x.dtype != torch.float32)
    if not few_channels_or_bf16 or not x.is_contiguous(memory_format=torch.channels_last):
        return F.prelu(x, weight)
    n, c, h, w = x.shape
    # The weight of each row's W * C values, expanded and copied: the same values as weight.repeat(w), which
    # took about 40 us a call inside detection against 15 (36 calls per 1920 px photo, P-Net's bands).
    rows = F.prelu(x.permute(0, 2, 3, 1).reshape(n * h, w * c), weight.expand(w, c).reshape(w * c))
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def pool_as_if_unpadded(x: torch.Tensor, regions: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
    """P-Net's first feature map of padded images, made to pool as the unpadded images' map would.

    On an image ``h`` rows high, the first convolution gives ``h - 2`` rows; when that is odd, the
    ceil-mode pooling takes its last row alone. Padded, that row is paired with a row computed
    partly from padding: so it is overwritten with a copy of the last valid row (max(a, a) = a),
    and the same for columns. Every P-Net output inside the image is then the unpadded one.
    """
    for start, end, height, width in regions:
        if (height - 2) % 2 and height - 2 < x.shape[-2]:
            x[start:end, :, height - 2] = x[start:end, :, height - 3]
        if (width - 2) % 2 and width - 2 < x.shape[-1]:
            x[start:end, :, :, width - 2] = x[start:end, :, :, width - 3]
    return x


def pnet_output_side(side: int) -> int:
    """Side of P-Net's output map for an input side (3x3 conv, 2x2 ceil pool, two 3x3 convs).

    >>> [pnet_output_side(n) for n in (12, 13, 14, 100)]
    [1, 2, 2, 45]
    """
    return (side - 1) // 2 - 4


def max_pool_2x2_ceil(x: torch.Tensor) -> torch.Tensor:
    """``nn.MaxPool2d(2, 2, ceil_mode=True)`` as the maximum of four strided views: the same values,
    3-5x faster on CPU than ATen's pooling kernel on P-Net's large maps (measured on 648x1152). A last
    odd row or column is pooled on its own (padding the map with -inf cost a copy of it).

    >>> max_pool_2x2_ceil(torch.arange(9.).view(1, 1, 3, 3)).flatten().tolist()
    [4.0, 5.0, 7.0, 8.0]
    """
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last and align.cpu_tuned(x):
        return _max_pool_2x2_ceil_channels_last(x)
    height, width = x.shape[-2:]
    even_h, even_w = height - height % 2, width - width % 2
    shape = (*x.shape[:-2], (height + 1) // 2, (width + 1) // 2)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    rows, cols = slice(0, even_h, 2), slice(0, even_w, 2)
    next_rows, next_cols = slice(1, even_h, 2), slice(1, even_w, 2)
    body = out[..., : even_h // 2, : even_w // 2]
    torch.maximum(x[..., rows, cols], x[..., rows, next_cols], out=body)
    torch.maximum(body, torch.maximum(x[..., next_rows, cols], x[..., next_rows, next_cols]), out=body)
    if height % 2:
        torch.maximum(x[..., -1, cols], x[..., -1, next_cols], out=out[..., -1, : even_w // 2])
    if width % 2:
        torch.maximum(x[..., rows, -1], x[..., next_rows, -1], out=out[..., : even_h // 2, -1])
    if height % 2 and width % 2:
        out[..., -1, -1] = x[..., -1, -1]
    return out


def _max_pool_2x2_ceil_channels_last(x: torch.Tensor) -> torch.Tensor:
    """:func:`max_pool_2x2_ceil` of a channels_last map on CPU: pairs of rows first (each row ``W * C``
    contiguous values), then pairs of columns on the half-height map. About 1.5x faster than the
    four strided views on P-Net's 10-channel maps, whose runs of contiguous values are 10 long."""
    n, channels, height, width = x.shape
    even_h, even_w = height - height % 2, width - width % 2
    pixels = x.permute(0, 2, 3, 1)  # (N, H, W, C), contiguous
    rows = pixels.new_empty(n, (height + 1) // 2, width, channels)
    torch.maximum(pixels[:, 0:even_h:2], pixels[:, 1:even_h:2], out=rows[:, : even_h // 2])
    if height % 2:
        rows[:, -1] = pixels[:, -1]
    out = pixels.new_empty(n, (height + 1) // 2, (width + 1) // 2, channels)
    torch.maximum(rows[:, :, 0:even_w:2], rows[:, :, 1:even_w:2], out=out[:, :, : even_w // 2])
    if width % 2:
        out[:, :, -1] = rows[:, :, -1]
    return out.permute(0, 3, 1, 2)


class RNet(nn.Module):
    """Refinement network on 24x24 crops; returns (box offsets, face probs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # the original (Caffe/TF) weights expect W, H, C order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output network on 48x48 crops; returns (box offsets, landmarks x1..x5 y1..y5, face probs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


NETWORKS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


# --------------------------------------------------------------------------------------------- weights
def weights_path(name: str) -> Path:
    """Path of a bundled network's safetensors file (``name`` in pnet, rnet, onet)."""
    return WEIGHTS_DIR / f"mtcnn_{name}.safetensors"


@lru_cache(maxsize=None)
def _verified_state_dict(name: str) -> dict[str, torch.Tensor]:
    return read_bundled_weights(weights_path(name), WEIGHT_SHA256[name], "MTCNN", "scripts/convert_mtcnn_weights.py")


@overload
def load_network(name: Literal["pnet"], device: torch.device | str = "cpu") -> PNet: ...
@overload
def load_network(name: Literal["rnet"], device: torch.device | str = "cpu") -> RNet: ...
@overload
def load_network(name: Literal["onet"], device: torch.device | str = "cpu") -> ONet: ...
@overload
def load_network(name: str, device: torch.device | str = "cpu") -> nn.Module: ...


def load_network(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """Build P-, R- or O-Net, load its verified bundled weights (strict) and set eval mode.

    >>> load_network("pnet").conv1.weight.shape
    torch.Size([10, 3, 3, 3])
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown MTCNN network {name!r}; use one of {tuple(NETWORKS)}")
    net = NETWORKS[name]().float()  # float32 whatever the caller's default dtype
    net.load_state_dict(_verified_state_dict(name), strict=True)
    return net.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- boxes
def pairwise_overlap(a: torch.Tensor, b: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Overlaps (A, B) of boxes a (A, 4) with boxes b (B, 4): IoU (``"union"``) or intersection / smaller
    area (``"min"``).

    >>> pairwise_overlap(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.], [0., 0., 1., 1.]]))
    tensor([[0.3333, 0.2500]])
    """
    return box_overlap(a[:, None, :], b[None, :, :], mode)


def box_overlap(a: torch.Tensor, b: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Overlap of boxes ``a[..., :]`` with ``b[..., :]`` (``x1, y1, x2, y2``, broadcast): IoU or
    intersection / smaller area, as in :func:`pairwise_overlap`."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=-1)
    denom = torch.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    return inter / denom.clamp(min=torch.finfo(b.dtype).tiny)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, by decreasing score.

    A box is dropped when its overlap (see :func:`pairwise_overlap`) with a kept, higher-scoring box
    exceeds ``threshold``.

    >>> b = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    [0, 2]
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min'; got {mode!r}")
    order = scores.argsort(descending=True)
    ranked = boxes[order]
    better, worse = overlapping_pairs(ranked, threshold, mode)
    # The greedy pass, in rank order, over the boxes that overlap a lower-ranked one (CSR rows of
    # their overlapping boxes): a box that overlaps none suppresses none, so it only needs the check.
    by_better = np.argsort(better, kind="stable")
    better, worse = better[by_better], worse[by_better]
    starts = np.searchsorted(better, np.arange(ranked.shape[0] + 1))
    suppressed = np.zeros(ranked.shape[0], dtype=bool)
    for i in np.flatnonzero(starts[1:] > starts[:-1]).tolist():
        if not suppressed[i]:
            suppressed[worse[starts[i] : starts[i + 1]]] = True
    keep = torch.from_numpy(np.flatnonzero(~suppressed)).to(device=boxes.device, dtype=torch.long)
    return order[keep]


def overlapping_pairs(ranked: torch.Tensor, threshold: float, mode: str = "union") -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of boxes whose overlap exceeds ``threshold`` (numpy int64 arrays).

    Only boxes that can meet are compared: the boxes are cut into bands of rows as high as the
    tallest box (a box meets boxes of its own band and the two next to it only), sorted by band and
    left edge, and each box is paired with the boxes of its band and of the band below that start
    inside its x-range, and those of the band above that start strictly inside it (each pair once).
    In a 1920x1080 crowd scene (160 px tiles) MTCNN's NMS calls took 149 ms comparing all boxes whose
    x-ranges meet, 38 ms with the bands (the first scale's 8,116 P-Net windows: 52 -> 8 ms). Pairs are
    checked in chunks of ``NMS_PAIR_CHUNK`` (bounded memory when large boxes meet many). Off the CPU,
    up to :data:`NMS_DENSE_MAX` boxes are compared all against all instead (the same pairs).
    """
    if not threshold >= 0:
        raise ValueError(f"nms threshold must be >= 0; got {threshold}")
    count, device = ranked.shape[0], ranked.device
    if count < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if count <= NMS_DENSE_MAX and not align.cpu_tuned(ranked):
        pairs = torch.stack(torch.triu(pairwise_overlap(ranked, ranked, mode) > threshold, diagonal=1).nonzero(as_tuple=True))
        first, second = pairs.cpu().numpy()  # one copy to the host for both index arrays
        return first, second
    by_key, (starts, ends) = _band_sweep_ranges(ranked.double())
    reps = ends - starts
    cumulative = torch.cumsum(reps, 0).cpu()
    box_of_range = torch.arange(reps.numel(), device=device) % count
    found_i, found_j = [], []
    first = 0
    while first < reps.numel():
        # The longest run of ranges whose pairs fit one chunk (at least one range).
        budget = int(cumulative[first - 1]) + NMS_PAIR_CHUNK if first else NMS_PAIR_CHUNK
        last = min(reps.numel(), max(first + 1, int(torch.searchsorted(cumulative, torch.tensor(budget), side="right"))))
        chunk_reps = reps[first:last]
        a = torch.repeat_interleave(box_of_range[first:last], chunk_reps)
        if a.numel():
            offsets = torch.arange(a.numel(), device=device) - torch.repeat_interleave(torch.cumsum(chunk_reps, 0) - chunk_reps, chunk_reps)
            b = torch.repeat_interleave(starts[first:last], chunk_reps) + offsets
            ia, ib = a, by_key[b]  # a box, and the boxes at the sorted positions of its ranges
            hit = box_overlap(ranked[ia], ranked[ib], mode) > threshold
            ia, ib = ia[hit], ib[hit]
            found_i.append(torch.minimum(ia, ib))
            found_j.append(torch.maximum(ia, ib))
        first = last
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(found_i).cpu().numpy(), torch.cat(found_j).cpu().numpy()


def _band_sweep_ranges(boxes: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """For :func:`overlapping_pairs`: the box at each position in (band, left edge) order, and per box
    three ranges ``[start, end)`` of those positions to compare it with: its own band (after it), the
    band below, the band above (the three lists concatenated, each in box order)."""
    count = boxes.shape[0]
    left, right = boxes[:, 0] - boxes[:, 0].min(), boxes[:, 2] - boxes[:, 0].min()
    height, widest = torch.stack([(boxes[:, 3] - boxes[:, 1]).max(), right.max()]).tolist()  # one read from the device
    band = ((boxes[:, 1] - boxes[:, 1].min()) / max(height, 1e-6)).floor()
    stride = widest + 1  # a band's keys stay below the next band's
    key = band * stride + left
    by_key = key.argsort()
    key = key[by_key]
    position = torch.empty_like(by_key)
    position[by_key] = torch.arange(count, device=boxes.device)
    own = (position + 1, torch.searchsorted(key, band * stride + right, side="left"))
    below = (torch.searchsorted(key, (band + 1) * stride + left, side="left"), torch.searchsorted(key, (band + 1) * stride + right, side="left"))
    above = (torch.searchsorted(key, (band - 1) * stride + left, side="right"), torch.searchsorted(key, (band - 1) * stride + right, side="left"))
    starts = torch.cat([own[0], below[0], above[0]])
    ends = torch.maximum(starts, torch.cat([own[1], below[1], above[1]]))
    return by_key, (starts, ends)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float, mode: str = "union"
) -> torch.Tensor:
    """:func:`nms` within each group (e.g. image index): boxes of different groups never suppress each other.

    >>> b = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
    >>> batched_nms(b, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist()
    [0, 1]
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each group far away from the others (torchvision's trick), then one NMS.
    offset = groups.to(boxes) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset[:, None], scores, threshold, mode)


def square_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (side = the longer side).

    >>> square_boxes(torch.tensor([[0., 0., 4., 2.]]))
    tensor([[ 0., -1.,  4.,  3.]])
    """
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def regress_boxes(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply MTCNN's box regression: offsets (K, 4) are fractions of the box width / height.

    >>> regress_boxes(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[0.1, 0., -0.1, 0.]]))
    tensor([[ 1.,  0.,  9., 10.]])
    """
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


# ---------------------------------------------------------------------------------------------- stages
def pyramid_scales(
    height: int, width: int, min_face: float, factor: float = PYRAMID_FACTOR, max_face: float | None = None
) -> list[float]:
    """Scales at which P-Net's 12-px window covers faces from ``min_face`` px up to ``max_face`` px
    (default: the image's short side). Below 12 px one enlarged level comes first, then the scales of
    ``min_face=12``: a lower ``min_face`` adds a level and changes none (a series from the enlarged
    level would move every scale, and lose some faces that 12 finds).

    >>> [round(s, 3) for s in pyramid_scales(40, 60, 20)]
    [0.6, 0.425, 0.302]
    >>> [round(s, 3) for s in pyramid_scales(40, 60, 20, max_face=30)]
    [0.6, 0.425]
    >>> [round(s, 3) for s in pyramid_scales(40, 60, 8)]
    [1.5, 1.0, 0.709, 0.503, 0.356]
    """
    largest = min(height, width) if max_face is None else min(height, width, max_face)
    scales = []
    if min_face < PNET_WINDOW and largest * PNET_WINDOW / min_face >= PNET_WINDOW:
        scales.append(PNET_WINDOW / min_face)
    scale = PNET_WINDOW / max(min_face, PNET_WINDOW)
    while largest * scale >= PNET_WINDOW:
        scales.append(scale)
        scale *= factor
    return scales


def normalize_pixels(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """0..255 pixels to MTCNN's input range, about [-1, 1] (into ``out`` if given, e.g. channels_last)."""
    return torch.sub(x, PIXEL_CENTER, out=out).mul_(PIXEL_SCALE)


def pnet_candidates(
    offsets: torch.Tensor, probs: torch.Tensor, scale_xy: tuple[float, float] | torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes of the P-Net windows scoring ``>= threshold`` at one scale, in original image pixels.

    ``offsets`` (N, 4, h, w), ``probs`` (N, h, w) face probabilities, ``scale_xy`` the resized /
    original size ratios (x, y), for all images or per image ((N, 2) tensor). Returns (boxes (M, 4),
    scores (M,), offsets (M, 4), image index (M,)).
    """
    image, row, col = torch.nonzero(probs >= threshold, as_tuple=True)
    scores = probs[image, row, col]
    box_offsets = offsets[image, :, row, col]
    start = torch.stack([col, row], dim=1).to(probs) * PNET_STRIDE
    scale = scale_xy[image] if isinstance(scale_xy, torch.Tensor) else to_device(list(scale_xy), probs.device, probs.dtype)
    # The original MTCNN's window mapping (1-based, inclusive pixel indices: first pixel
    # floor((start + 1) / scale), last floor((start + 12) / scale)), written in continuous coordinates.
    # It is slightly narrower than the exact window; R-Net and O-Net were trained on its proposals,
    # and keeping it reproduces the reference boxes (facenet-pytorch's) to within a pixel or two.
    boxes = torch.cat([((start + 1) / scale).floor() - 1, ((start + PNET_WINDOW) / scale).floor()], dim=1)
    return boxes, scores, box_offsets, image


def run_pnet(pnet: PNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pnet(x)`` for ``(N, 3, H, W)`` input, on CPU in bands of rows (:data:`CPU_ACTIVATION_BUDGET`).

    A band starting at an even row ``top`` with ``rows + PNET_BAND_OVERLAP`` input rows gives output
    rows ``top / 2`` to ``(top + rows) / 2`` exactly (``rows`` even), so the bands' outputs, stacked,
    are the whole image's.
    """
    n, _, height, width = x.shape
    first_channels = pnet.conv1.out_channels
    rows = CPU_ACTIVATION_BUDGET // (n * first_channels * width) - PNET_BAND_OVERLAP
    rows = max(PNET_STRIDE, rows - rows % PNET_STRIDE)
    dtype = pnet.conv1.weight.dtype
    if not align.cpu_tuned(x) or rows + PNET_BAND_OVERLAP >= height:
        offsets, probs = pnet(x.to(dtype))
        return offsets.float(), probs.float()
    # Each band is cast to P-Net's dtype (bf16 with pnet_precision="bf16") while it is in cache.
    bands = [pnet(x[..., top : top + rows + PNET_BAND_OVERLAP, :].to(dtype)) for top in range(0, height - PNET_BAND_OVERLAP, rows)]
    offsets, probs = zip(*bands)
    return torch.cat(offsets, dim=2).float(), torch.cat(probs, dim=2).float()


def propose(
    pnet: PNet,
    resized: Callable[[tuple[int, int], int], torch.Tensor],
    image_size: tuple[int, int],
    scales: Sequence[float],
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1: P-Net on every pyramid scale of a batch of equal-size images.

    ``resized(size, level)`` is the batch (N, 3, *size), float 0..255, area-resized from mip ``level``
    (:meth:`MipVolume.resized`): small scales come from a mip level (:func:`pyramid_source_level`),
    not from the full-size images each time. ``image_size`` is the images' (H, W).
    Returns squared, regressed candidate boxes (M, 4), their P-Net scores (M,) and image index (M,).
    """
    height, width = image_size
    found = []
    for scale in scales:
        size = (math.ceil(height * scale), math.ceil(width * scale))
        # Normalised after resizing (the same values up to float rounding, on fewer pixels);
        # channels_last: about 1.6x faster convolutions and pooling for P-Net's thin layers on CPU.
        pixels = resized(size, pyramid_source_level(scale))
        in_place = pixels.is_contiguous(memory_format=torch.channels_last)  # a fresh buffer of ours
        pixels = normalize_pixels(pixels, out=pixels if in_place else torch.empty_like(pixels, memory_format=torch.channels_last))
        offsets, probs = run_pnet(pnet, pixels)
        boxes, scores, box_offsets, image = pnet_candidates(
            offsets, probs[:, 1], (size[1] / width, size[0] / height), threshold
        )
        keep = batched_nms(boxes, scores, image, NMS_PER_SCALE)
        found.append((boxes[keep], scores[keep], box_offsets[keep], image[keep]))
    return merge_scales(found, pnet.conv1.weight.device)


def merge_scales(
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1's end: the candidates of all scales (boxes, scores, offsets, image), NMS per image
    across scales, regressed and squared; returns boxes (M, 4), scores (M,), image index (M,)."""
    if not found:
        return torch.zeros(0, 4, device=device), torch.zeros(0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    boxes, scores, box_offsets, image = (torch.cat(parts) for parts in zip(*found))
    keep = batched_nms(boxes, scores, image, NMS_ACROSS_SCALES)
    boxes = square_boxes(regress_boxes(boxes[keep], box_offsets[keep]))
    return boxes, scores[keep], image[keep]


def propose_padded(
    pnet: PNet,
    volume: MipVolume,
    runs: list[tuple[list[int], int, int, int]],
    scales: Sequence[float],
    threshold: float,
    most: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1 off the CPU: P-Net on every pyramid scale of images of several sizes, in one call per
    scale, on a canvas padded to :func:`~lrfer.shapes.bucket` rows and :func:`~lrfer.shapes.bucket_side`
    sides (a few shapes for cuDNN to plan, and one call where :func:`propose` makes one per size).

    ``runs``: ``(volume indices, height, width, number of scales)`` per image size, the scales being
    the first ones of ``scales``. ``most``: at most this many images per P-Net call (more run in
    several calls of one canvas size, the whole group's, and their candidates are read together).
    Windows reaching into the padding are dropped and the first feature map pools as if unpadded
    (:func:`pool_as_if_unpadded`), so the candidates are :func:`propose`'s. Image indices count the
    runs' images in order.
    """
    device = pnet.conv1.weight.device
    parts = split_runs(runs, most) if most else [runs]
    firsts = [0]  # index of each part's first image
    for part in parts[:-1]:
        firsts.append(firsts[-1] + sum(len(members) for members, *_ in part))
    found = []
    for k, scale in enumerate(scales):
        framed = [(math.ceil(height * scale), math.ceil(width * scale)) for _, height, width, count in runs if count > k]
        if not framed:
            continue
        canvas_hw = bucket_side(max(h for h, _ in framed)), bucket_side(max(w for _, w in framed))
        calls = [_pnet_on_canvas(pnet, volume, part, first, scale, k, canvas_hw) for part, first in zip(parts, firsts)]
        offset_parts, prob_parts, limit_parts, scale_parts, row_image_parts = zip(*(call for call in calls if call is not None))
        offsets, probs = torch.cat(offset_parts), torch.cat(prob_parts)
        limits = to_device([v for part in limit_parts for v in part], device)
        scale_xy = to_device([v for part in scale_parts for v in part], device, torch.float32)
        row_image = to_device([v for part in row_image_parts for v in part], device)
        inside = (torch.arange(probs.shape[1], device=device)[None, :, None] < limits[:, 0, None, None]) & (
            torch.arange(probs.shape[2], device=device)[None, None, :] < limits[:, 1, None, None])
        boxes, scores, box_offsets, row = pnet_candidates(offsets.float(), probs.masked_fill(~inside, -1.0), scale_xy, threshold)
        image = row_image[row]
        keep = batched_nms(boxes, scores, image, NMS_PER_SCALE)
        found.append((boxes[keep], scores[keep], box_offsets[keep], image[keep]))
    return merge_scales(found, device)


def split_runs(runs: list[tuple[list[int], int, int, int]], most: int) -> list[list[tuple[list[int], int, int, int]]]:
    """:func:`propose_padded`'s ``runs``, their images in order, in parts of at most ``most`` images.

    >>> split_runs([([0, 1], 40, 50, 2), ([2, 3, 4], 38, 50, 1)], most=2)
    [[([0, 1], 40, 50, 2)], [([2, 3], 38, 50, 1)], [([4], 38, 50, 1)]]
    """
    parts: list[list[tuple[list[int], int, int, int]]] = [[]]
    room = most
    for members, height, width, count in runs:
        while members:
            if room == 0:
                parts.append([])
                room = most
            taken, members = members[:room], members[room:]
            parts[-1].append((taken, height, width, count))
            room -= len(taken)
    return parts


def _pnet_on_canvas(
    pnet: PNet,
    volume: MipVolume,
    runs: list[tuple[list[int], int, int, int]],
    first: int,
    scale: float,
    k: int,
    canvas_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]], list[tuple[float, float]], list[int]] | None:
    """P-Net on one canvas of ``runs``' images at pyramid scale ``k``: offsets and face probabilities,
    and per canvas row its output limits, scale and image index (counted from ``first``); padding
    rows have limits (0, 0). ``None`` when no run has that scale."""
    active, start = [], 0
    for members, height, width, count in runs:
        if count > k:
            active.append((start, members, height, width))
        start += len(members)
    if not active:
        return None
    rows = bucket(start)
    canvas = torch.zeros(rows, *canvas_hw, 3, device=pnet.conv1.weight.device).permute(0, 3, 1, 2)  # channels_last
    regions, limits, scale_xy = [], [(0, 0)] * rows, [(1.0, 1.0)] * rows
    for start, members, height, width in active:
        h, w = math.ceil(height * scale), math.ceil(width * scale)
        end = start + len(members)
        pixels = volume.resized(members, height, width, (h, w), pyramid_source_level(scale))
        normalize_pixels(pixels, out=canvas[start:end, :, :h, :w])
        regions.append((start, end, h, w))
        limits[start:end] = [(pnet_output_side(h), pnet_output_side(w))] * (end - start)
        scale_xy[start:end] = [(w / width, h / height)] * (end - start)
    offsets, probs = pnet(canvas.to(pnet.conv1.weight.dtype), regions)
    return offsets, probs[:, 1].float(), limits, scale_xy, [first + row for row in range(rows)]


def pyramid_source_level(scale: float) -> int:
    """The mip level to area-resize a pyramid scale from: the coarsest whose windows are at most
    :data:`PYRAMID_MAX_WIDENING` times as wide as resizing the full image would make them.

    Torch's ``area`` resize by a factor ``R`` averages windows of about ``R + 1`` pixels (whole
    pixels overlapping the ideal ``R``-pixel window). From mip level ``L`` (``2**L`` pixels per
    sample) they span ``R + 2**L`` full-size pixels: fine for a large ``R``, twice too wide when ``R``
    is just above ``2**L``.

    >>> [pyramid_source_level(s) for s in (1.0, 0.6, 0.214, 0.152, 0.0625, 0.001)]
    [0, 0, 0, 1, 1, 6]
    """
    factor = 1 / scale
    widest = (PYRAMID_MAX_WIDENING - 1) * factor + PYRAMID_MAX_WIDENING  # largest allowed 2**L
    return int(min(MAX_MIP_LEVEL, max(0, math.floor(math.log2(widest) + 1e-9))))


class MipVolume:
    """Images stacked as one float volume (:func:`~lrfer.faces.align.stack_images`) and its 2x2
    area reductions ("mip levels"), each made once, on demand (the stack too: a call that crops
    nothing pays nothing), and shared by all crops of a call. On CPU also each image's integral
    image, for P-Net's pyramid (:meth:`resized`).

    >>> MipVolume([torch.zeros(3, 8, 8, dtype=torch.uint8)]).level(2).shape
    torch.Size([1, 3, 1, 2, 2])
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images
        self.levels: list[torch.Tensor] = []
        self.integrals: dict[int, torch.Tensor] = {}

    def batch(self, members: list[int], height: int, width: int, level: int = 0) -> torch.Tensor:
        """Images ``members`` (all ``height`` x ``width``) at mip ``level`` as an ``(N, 3, height >> level,
        width >> level)`` float batch, a view when they are consecutive (the usual case: no copy)."""
        volume_level = self.level(level)[0]
        consecutive = members == list(range(members[0], members[-1] + 1))
        stacked = volume_level[:, members[0] : members[-1] + 1] if consecutive else volume_level[:, members]
        return stacked[..., : height >> level, : width >> level].transpose(0, 1)

    def resized(self, members: list[int], height: int, width: int, size: tuple[int, int], level: int = 0) -> torch.Tensor:
        """:meth:`batch` area-resized to ``size``: ``F.interpolate(..., mode="area")``; enlarged
        bilinearly (:data:`UPSCALE_MODE`) when ``size`` exceeds the images. On CPU from
        level 0 the same values come from integral images (:func:`~lrfer.faces.align.area_resize_integral`,
        about 3x faster), as a channels_last batch."""
        if size[0] > height or size[1] > width:  # a scale above 1 (min_face below P-Net's 12 px window)
            source = self.batch(members, height, width)
            if align.cpu_tuned(source):  # channels_last in and out: P-Net's layout, normalised in place
                source = source.contiguous(memory_format=torch.channels_last)
            return F.interpolate(source, size=size, mode=UPSCALE_MODE, align_corners=False)
        if level > 0 or not align.cpu_tuned(self.images[members[0]]):
            return F.interpolate(self.batch(members, height, width, level), size=size, mode="area")
        out = reusable_empty("pyramid", (len(members), 3, *size), order=(0, 2, 3, 1))  # channels_last
        for row, n in enumerate(members):
            area_resize_integral(self.integral(n), size, out[row].permute(1, 2, 0))
        return out

    def integral(self, n: int) -> torch.Tensor:
        """Image ``n``'s :func:`~lrfer.faces.align.integral_image`, made once."""
        if n not in self.integrals:
            self.integrals[n] = integral_image(self.images[n])
        return self.integrals[n]

    def level(self, n: int) -> torch.Tensor:
        if not self.levels:
            self.levels.append(stack_images(self.images))
        while len(self.levels) <= n:
            self.levels.append(mean_2x2_zero_padded(self.levels[-1]))
        return self.levels[n]


def crop_boxes(volume: MipVolume, image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Resample square boxes to ``size`` x ``size`` network inputs (normalised), area-filtered, chunked.

    A box ``r`` times larger than ``size`` is sampled from the image pre-shrunk by ``2**floor(log2 r)``
    (a mip level, exact 2x2 area averages), with k x k samples per output pixel for the remaining
    factor ``k < 2``: close to an exact area resize at a cost that does not grow with the box size.
    """
    side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
    ratio = (side / size).clamp(min=1)
    level = ratio.log2().floor().clamp(0, MAX_MIP_LEVEL).long()
    oversample = (ratio / 2.0**level - 1e-6).ceil().clamp(1, MAX_CROP_OVERSAMPLE).long()
    full = volume.level(0)
    crops = full.new_empty(boxes.shape[0], full.shape[1], size, size)
    group = level * (MAX_CROP_OVERSAMPLE + 1) + oversample
    # Crops in reading order (image, band of rows, column): neighbouring crops read the same pixels,
    # which stay in cache (about 20 % faster sampling for a 1920 px photo's R-Net candidates).
    band = (boxes[:, 1] / CROP_ORDER_BAND).floor().clamp(min=0)
    reading_order = torch.argsort((image * (full.shape[-2] / CROP_ORDER_BAND + 1) + band) * full.shape[-1] + boxes[:, 0].clamp(min=0))
    for key in group.unique().tolist():
        lvl, k = divmod(int(key), MAX_CROP_OVERSAMPLE + 1)
        idx = reading_order[group[reading_order] == key]
        chunk = max(1, CROP_CHUNK_SAMPLES // (size * k) ** 2)
        for part in idx.split(chunk):
            maps = _box_to_patch_maps(boxes[part] / 2**lvl, size)
            crops[part] = sample_patches(volume.level(lvl), image[part], maps, size, k)
    return normalize_pixels(crops)


def _box_to_patch_maps(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(K, 2, 3) maps from ``size``-px patch coordinates to the image coordinates inside each box."""
    maps = boxes.new_zeros(boxes.shape[0], 2, 3)
    maps[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / size
    maps[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / size
    maps[:, :, 2] = boxes[:, :2]
    return maps


def score_crops(net: RNet | ONet, volume: MipVolume, image: torch.Tensor, boxes: torch.Tensor,
                size: int) -> tuple[torch.Tensor, ...]:
    """``net`` on the ``size`` px crops of ``boxes`` (:func:`crop_boxes`), in passes of at most
    :data:`CROPS_PER_PASS` boxes: the same outputs, with the crops of one pass in memory at a time."""
    if boxes.shape[0] <= CROPS_PER_PASS:  # the usual case: no index copies (kernels on a GPU)
        return run_chunked(net, crop_boxes(volume, image, boxes, size))
    passes = [run_chunked(net, crop_boxes(volume, image[part], boxes[part], size))
              for part in torch.arange(boxes.shape[0], device=boxes.device).split(CROPS_PER_PASS)]
    return tuple(torch.cat(parts) for parts in zip(*passes))


def run_chunked(net: RNet | ONet, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``net(x)`` in chunks (:func:`crops_per_call`), outputs concatenated.

    The crops go in channels_last: R-Net and O-Net measured about 3x faster on CPU that way (their
    3x3 max-pools most of all), with outputs equal to 1e-6. Off the CPU each call's crops are padded
    to :data:`NET_CHUNK` rows, the most a call takes: one shape per network for cuDNN to plan.
    """
    chunk = crops_per_call(net, x)
    outs = [align.run_network(net, part.contiguous(memory_format=torch.channels_last), chunk) for part in x.split(chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def crops_per_call(net: RNet | ONet, x: torch.Tensor) -> int:
    """Crops per R-Net / O-Net call: at most ``NET_CHUNK`` (a memory cap), and on CPU few enough that
    the largest feature map, the first convolution's output, fits :data:`CPU_ACTIVATION_BUDGET`."""
    if not align.cpu_tuned(x):
        return NET_CHUNK
    first = net.conv1
    largest = first.out_channels * (x.shape[-2] - first.kernel_size[0] + 1) * (x.shape[-1] - first.kernel_size[1] + 1)
    return max(1, min(NET_CHUNK, CPU_ACTIVATION_BUDGET // largest))


def refine(
    rnet: RNet, volume: MipVolume, boxes: torch.Tensor, image: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 2: R-Net rescoring of the candidates, NMS, regression; returns squared boxes, scores, image index."""
    if boxes.shape[0] == 0:
        return boxes, boxes.new_zeros(0), image
    offsets, probs = score_crops(rnet, volume, image, boxes, RNET_INPUT)
    passed = probs[:, 1] > threshold
    boxes, scores, offsets, image = boxes[passed], probs[passed, 1], offsets[passed], image[passed]
    keep = batched_nms(boxes, scores, image, NMS_REFINE)
    return square_boxes(regress_boxes(boxes[keep], offsets[keep])), scores[keep], image[keep]


def output(
    onet: ONet, volume: MipVolume, boxes: torch.Tensor, image: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 3: O-Net scores, final boxes and five landmarks, then "min" NMS; returns boxes, scores, landmarks, image."""
    if boxes.shape[0] == 0:
        return boxes, boxes.new_zeros(0), boxes.new_zeros(0, 5, 2), image
    offsets, points, probs = score_crops(onet, volume, image, boxes, ONET_INPUT)
    passed = probs[:, 1] > threshold
    boxes, scores, offsets, points, image = boxes[passed], probs[passed, 1], offsets[passed], points[passed], image[passed]
    landmarks = points_in_image(points, boxes)
    boxes = regress_boxes(boxes, offsets)
    # offsets past the opposite side turn a box inside out: not a face (and annotate refuses such boxes)
    proper = has_area(boxes)
    if not bool(proper.all()):
        boxes, scores, landmarks, image = boxes[proper], scores[proper], landmarks[proper], image[proper]
    keep = batched_nms(boxes, scores, image, NMS_OUTPUT, mode="min")
    return boxes[keep], scores[keep], landmarks[keep], image[keep]


def points_in_image(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """O-Net's landmark output (K, 10: x1..x5, y1..y5, fractions of the box) to (K, 5, 2) image pixels."""
    size = boxes[:, 2:] - boxes[:, :2]
    return boxes[:, None, :2] + torch.stack([points[:, :5], points[:, 5:]], dim=-1) * size[:, None, :]


def onet_landmarks(onet: ONet, volume: MipVolume, boxes: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """O-Net's five landmarks (K, 5, 2) inside given boxes (squared first); no thresholds, no NMS."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros(0, 5, 2)
    boxes = square_boxes(boxes)
    _, points, _ = score_crops(onet, volume, image, boxes, ONET_INPUT)
    return points_in_image(points, boxes)


# ------------------------------------------------------------------------------------------- detector
class MTCNN(NetworkDetector):
    """The three-stage MTCNN cascade with bundled, hash-checked weights, on one device.

    ``min_face``: smallest face side searched for, in pixels (>= 8; below P-Net's 12 px window a
    first pyramid level enlarges the image, bilinearly); ``max_face_fraction``: if set,
    largest face side searched for, as a fraction of the image's long side (the pyramid stops there:
    :class:`~lrfer.faces.detect.CombinedDetector` leaves larger faces to BlazeFace); ``thresholds``:
    P/R/O-Net score thresholds; ``factor``: pyramid scale ratio; ``pnet_precision``: ``"fp32"`` or
    ``"bf16"`` for P-Net, the stage that scans the whole pyramid (about 1.7x faster on CPUs with
    AVX-512 bf16; its scores move by up to about 1e-2, which changes a few borderline proposals).

    >>> MTCNN(min_face=12).detect([torch.zeros(3, 48, 48, dtype=torch.uint8)])[0].scores.shape
    torch.Size([0])
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face: float = DEFAULT_MIN_FACE,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        factor: float = PYRAMID_FACTOR,
        device: torch.device | str = "cpu",
        max_face_fraction: float | None = None,
        pnet_precision: str = "fp32",
    ) -> None:
        super().__init__()
        if pnet_precision not in PNET_DTYPES:
            raise ValueError(f"pnet_precision must be one of {tuple(PNET_DTYPES)}; got {pnet_precision!r}")
        check_min_face(min_face)
        if len(thresholds) != 3 or not all(0 <= t < 1 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1) for P/R/O-Net; got {thresholds}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1); got {factor}")
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        if max_face_fraction is not None and not 0 < max_face_fraction <= 1:
            raise ValueError(f"max_face_fraction must be in (0, 1]; got {max_face_fraction}")
        self.max_face_fraction = max_face_fraction
        self.pnet_precision = pnet_precision
        # torch's stubs leave out Module.to's memory_format
        self.pnet: PNet = load_network("pnet").to(PNET_DTYPES[pnet_precision], memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.rnet: RNet = load_network("rnet").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.onet: ONet = load_network("onet").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.to(device)

    @detection_mode()
    def detect(self, images: list[torch.Tensor], volume: MipVolume | None = None) -> list[Detections]:
        """Find faces in a list of ``(3, H, W)`` uint8 RGB images (any sizes); one :class:`Detections` each.

        ``volume``: the same images as a :class:`MipVolume`, when the caller already made one.
        """
        images = check_images(images, self.device)
        if not images:
            return []
        if volume is None:
            return [d for group in cpu_image_groups(images) for d in self._detect_group(group, MipVolume(group))]
        return self._detect_group(images, volume)

    def _detect_group(self, images: list[torch.Tensor], volume: MipVolume) -> list[Detections]:
        stop_if_cancelled()
        boxes, scores, image = self._propose_all(images, volume)
        boxes, scores, image = refine(self.rnet, volume, boxes, image, self.thresholds[1])
        boxes, scores, landmarks, image = output(self.onet, volume, boxes, image, self.thresholds[2])
        return split_by_image(Detections(boxes, scores, landmarks), image, len(images))

    @detection_mode()
    def place_landmarks(
        self, images: list[torch.Tensor], detections: list[Detections], volume: MipVolume | None = None
    ) -> list[Detections]:
        """The same faces (boxes, scores) with O-Net's five landmarks, e.g. for another detector's boxes."""
        images = check_images(images, self.device)
        if sum(len(d) for d in detections) == 0:
            return list(detections)
        faces, image = concat_per_image([d.to(self.device) for d in detections])
        landmarks = onet_landmarks(self.onet, MipVolume(images) if volume is None else volume, faces.boxes, image)
        return split_by_image(Detections(faces.boxes, faces.scores, landmarks), image, len(detections))

    def _scales(self, height: int, width: int) -> list[float]:
        """P-Net's pyramid scales for an image size (a prefix of one series, whatever the size)."""
        max_face = None if self.max_face_fraction is None else self.max_face_fraction * max(height, width)
        return pyramid_scales(height, width, self.min_face, self.factor, max_face)

    def _propose_all(self, images: list[torch.Tensor], volume: MipVolume) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1 over all images; image indices refer to ``images``. On CPU images of equal size
        are batched (:func:`propose`); elsewhere images of close sizes share padded canvases of at
        most :data:`~lrfer.shapes.PHOTO_ROWS` images (:func:`propose_padded`: a few shapes for cuDNN
        to plan, the same whatever the number of photos per step above that).

        The pyramid is resized from the volume's float copy of the images and its mip levels (made
        once per call and shared with R-Net's and O-Net's crops), not from a second copy.
        """
        parts = []
        if align.cpu_tuned(images[0]):
            for (height, width), members in images_by_size(images).items():
                resized = partial(volume.resized, members, height, width)
                scales = self._scales(height, width)
                boxes, scores, local = propose(self.pnet, resized, (height, width), scales, self.thresholds[0])
                parts.append((boxes, scores, to_device(members, self.device)[local]))
        else:
            for group in images_by_size_bucket(images):
                scales_by_size = {size: self._scales(*size) for size in group}
                runs = [(members, height, width, len(scales_by_size[height, width])) for (height, width), members in group.items()]
                longest = max(scales_by_size.values(), key=len)
                boxes, scores, local = propose_padded(self.pnet, volume, runs, longest, self.thresholds[0], most=PHOTO_ROWS)
                parts.append((boxes, scores, to_device([n for members, *_ in runs for n in members], self.device)[local]))
        boxes, scores, image = (torch.cat(p) for p in zip(*parts))
        log.debug("P-Net: %d candidates over %d images", boxes.shape[0], len(images))
        return boxes, scores, image
