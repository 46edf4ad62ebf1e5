"""BlazeFace full-range face detector (MediaPipe), torch only, with bundled hash-checked weights.

BlazeFace (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs",
CVPR-W 2019) is a single-shot detector. The *full-range* model used here is MediaPipe's
``face_detection_full_range_sparse.tflite`` (Google, Apache-2.0): a 192x192 input, a feature pyramid
(stride 4 to 32, top-down with bilinear upsampling), and one anchor per cell of a 48x48 grid that
predicts a face score, a box and six keypoints. It sees whole photos at once, so it is robust to pose
(profile, looking down) where MTCNN's cascade is not, but the 192 px input limits it to faces larger
than about 1/25 of the photo's long side; :class:`lrfer.faces.detect.CombinedDetector` adds MTCNN
for smaller ones.

The layer layout below reproduces the TFLite graph op for op, so the weights converted by
``scripts/convert_blazeface_weights.py`` load with ``strict=True`` and the outputs match the TFLite
interpreter to float precision. Stages, each a small function:

1. :func:`letterbox` - each image resized (area-filtered) into a centred 192x192 frame, [-1, 1];
2. :class:`BlazeFaceFullRange` - the network: per anchor, a logit and 16 regression values;
3. :func:`decode` - anchors + regression to boxes and keypoints in the 192 frame, sigmoid scores;
4. :func:`weighted_nms` - MediaPipe's blending NMS (overlapping boxes are score-weighted averages);
5. the letterbox is undone into image pixels.

Keypoints: right eye, left eye, nose tip, mouth centre, right and left ear tragion (the subject's
right eye is the one with the smaller x in an upright photo). :class:`Detections` get the five
alignment points left eye (smaller x), right eye, nose, mouth, mouth: BlazeFace predicts the mouth
centre only, so both mouth corners are set to it; the least-squares similarity fit of
:mod:`lrfer.faces.align` from a duplicated centre equals the fit from two symmetric corners.

>>> det = BlazeFace()
>>> len(det.detect([torch.zeros(3, 120, 160, dtype=torch.uint8)])[0])
0
"""
from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lrfer.faces import align
from lrfer.faces.align import images_by_size
from lrfer.faces.detect import (Detections, NetworkDetector, check_images, detection_mode, has_area, read_bundled_weights,
                                split_by_image)
from lrfer.faces.mtcnn import MAX_MIP_LEVEL, MipVolume
from lrfer.shapes import PHOTO_ROWS, to_device

log = logging.getLogger(__name__)

INPUT_SIZE = 192
#: A second look at a photo where no face was found, zoomed out to this fraction of the frame: the
#: network misses faces that fill its input (4 of 100 FER2013 faces at 192 px found whole, 72 of 100
#: in a 2x larger frame).
ZOOM_OUT_FILL = 0.5
#: ... and that look keeps only faces at least this fraction of the photo's long side: the faces it is
#: for (smaller ones, seen smaller still, came out as loose boxes: 143 px around a 76 px face).
ZOOM_OUT_MIN_FRACTION = 1 / 3
GRID_SIZE = 48  # one anchor per 4x4 input pixels
NUM_KEYPOINTS = 6
#: MediaPipe's face_detection_full_range graph: score threshold, blending-NMS IoU, logit clipping.
DEFAULT_THRESHOLD = 0.5
NMS_IOU = 0.3
SCORE_CLIP = 100.0
#: Landmark indices of (right eye, left eye, nose tip, mouth centre, mouth centre) in BlazeFace's six.
ALIGNMENT_KEYPOINTS = (0, 1, 2, 3, 3)

WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "weights" / "blazeface_full_range.safetensors"
#: sha256 of the bundled weights (written by scripts/convert_blazeface_weights.py).
WEIGHTS_SHA256 = "2f7be3cad2a3de75302aabdcc46a8cca7d0388ead912dea9ecc3b2022623cbe1"


# --------------------------------------------------------------------------------------------- network
def depthwise(channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels)


def pointwise(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


class ResidualBlock(nn.Module):
    """depthwise 3x3, 1x1 down to ``mid`` (ReLU), depthwise 3x3, 1x1 back up; plus the input, then ReLU."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.dw1, self.pw1 = depthwise(channels), pointwise(channels, mid)
        self.dw2, self.pw2 = depthwise(mid), pointwise(mid, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.pw1(self.dw1(x)))
        return F.relu(x + self.pw2(self.dw2(y)))


class DownBlock(nn.Module):
    """The stride-2 block: depthwise 3x3 stride 2, 1x1 to ``mid`` (ReLU), depthwise 3x3, 1x1 to ``cout`` (ReLU)."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.dw1, self.pw1 = depthwise(cin, stride=2), pointwise(cin, mid)
        self.dw2, self.pw2 = depthwise(mid), pointwise(mid, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.pw1(self.dw1(x)))
        return F.relu(self.pw2(self.dw2(y)))


class Head(nn.Module):
    """1x1 conv, depthwise 3x3 stride 2, then depth-to-space x2 back to the 48x48 grid (TFLite's order)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pw, self.dw = pointwise(cin, 4 * cout), depthwise(4 * cout, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.pw(x))
        n, c4, h, w = y.shape
        # TFLite DEPTH_TO_SPACE: channel (i * 2 + j) * C + c goes to pixel (2h + i, 2w + j), channel c.
        y = y.view(n, 2, 2, c4 // 4, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c4 // 4, 2 * h, 2 * w)


def _blocks(channels: int, mid: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels, mid) for _ in range(count)))


class BlazeFaceFullRange(nn.Module):
    """The full-range network. (N, 3, 192, 192) in [-1, 1] -> logits (N, 2304), regression (N, 2304, 16).

    Modules are declared in the TFLite graph's order (the converter relies on it); feature maps:
    96 (32 ch) -> 48 (64) -> 24 (128) -> 12 (192) -> 6 (384), then top-down 6 -> 12 -> 24 -> 48.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.stage96 = _blocks(32, 8, 2)
        self.down48, self.stage48, self.lateral48 = DownBlock(32, 16, 64), _blocks(64, 16, 2), pointwise(64, 48)
        self.down24, self.stage24, self.lateral24 = DownBlock(64, 32, 128), _blocks(128, 32, 2), pointwise(128, 64)
        self.down12, self.stage12, self.lateral12 = DownBlock(128, 48, 192), _blocks(192, 48, 2), pointwise(192, 96)
        self.down6, self.stage6 = DownBlock(192, 96, 384), _blocks(384, 96, 3)
        self.top6, self.up12 = pointwise(384, 96), _blocks(96, 48, 2)
        self.top12, self.up24 = pointwise(96, 64), _blocks(64, 32, 2)
        self.top24, self.up48 = pointwise(64, 48), _blocks(48, 24, 1)
        self.classifier = Head(48, 1)
        self.regressor = Head(48, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stage96(F.relu(self.stem(x)))
        c48 = self.stage48(self.down48(x))
        c24 = self.stage24(self.down24(c48))
        c12 = self.stage12(self.down12(c24))
        c6 = self.stage6(self.down6(c12))
        # The laterals are computed in the graph's order (they feed the top-down sums below).
        l48, l24, l12 = F.relu(self.lateral48(c48)), F.relu(self.lateral24(c24)), F.relu(self.lateral12(c12))
        p12 = self.up12(_upsample2(F.relu(self.top6(c6))) + l12)
        p24 = self.up24(_upsample2(F.relu(self.top12(p12))) + l24)
        p48 = self.up48(_upsample2(F.relu(self.top24(p24))) + l48)
        logits = self.classifier(p48).flatten(1)
        regression = self.regressor(p48).permute(0, 2, 3, 1).flatten(1, 2)
        return logits, regression


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    # TFLite RESIZE_BILINEAR with half_pixel_centers=True is torch's align_corners=False.
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------- weights
@lru_cache(maxsize=None)
def _verified_state_dict() -> dict[str, torch.Tensor]:
    return read_bundled_weights(WEIGHTS_FILE, WEIGHTS_SHA256, "BlazeFace", "scripts/convert_blazeface_weights.py")


def load_network(device: torch.device | str = "cpu") -> BlazeFaceFullRange:
    """Build the network, load the verified bundled weights (strict), eval mode, on ``device``."""
    net = BlazeFaceFullRange().float()  # float32 whatever the caller's default dtype
    net.load_state_dict({k: v.float() for k, v in _verified_state_dict().items()}, strict=True)
    # channels_last: 1.5x faster on CPU (6.4 vs 9.4 ms per 192 px image on 2 cores; depthwise layers).
    return net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)  # type: ignore[call-overload]  # memory_format: missing from torch's stubs


# ---------------------------------------------------------------------------------------------- stages
def letterbox(
    images: list[torch.Tensor], size: int = INPUT_SIZE, volume: MipVolume | None = None, fill: float = 1.0,
    positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit each (3, H, W) uint8 image into a centred ``size`` square (zero border), scaled to [-1, 1];
    its long side takes ``fill`` of the square (less than 1: the photo zoomed out). ``positions``:
    where ``volume`` holds each image, if not in the same order.

    Returns the batch (N, 3, size, size) and (N, 4) ``scale_x, scale_y, pad_x, pad_y`` with
    ``frame = image * scale + pad``. Shrinking is area-filtered (antialiased bilinear); with
    ``volume`` (the same images), from its 2x2-averaged mip level 2-4x larger than the target: a
    1920 px photo is read at 480 px, not converted to float whole.
    """
    batch = images[0].new_full((len(images), 3, size, size), -1.0, dtype=torch.float32)
    params = [[0.0] * 4 for _ in images]
    fit = size * fill
    for (h, w), members in images_by_size(images).items():  # one resize per image size, not per image
        new_h, new_w = max(1, round(h * fit / max(h, w))), max(1, round(w * fit / max(h, w)))
        if volume is None:
            source = torch.stack([images[n] for n in members]).float()
        else:
            held = members if positions is None else [positions[n] for n in members]
            source = _mip_source(volume, held, h, w, max(h, w) / fit)
        resized = F.interpolate(source, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        rows = to_device(members, batch.device)
        batch[rows, :, top : top + new_h, left : left + new_w] = resized / 127.5 - 1
        for n in members:
            params[n] = [new_w / w, new_h / h, left, top]
    return batch, torch.tensor(params, dtype=torch.float32)


def _mip_source(volume: MipVolume, members: list[int], height: int, width: int, shrink: float) -> torch.Tensor:
    """Images ``members`` of ``volume`` at mip level ``floor(log2(shrink)) - 1`` (2-4x larger than needed), (N, 3, h, w).

    The level is also capped where the short side would halve to nothing (a 1 x 800 strip stays at level 0).
    """
    level = int(min(MAX_MIP_LEVEL, max(0, math.floor(math.log2(max(shrink, 1.0))) - 1)))
    level = min(level, int(math.log2(min(height, width))))
    return volume.batch(members, height, width, level)


@lru_cache(maxsize=4)
def anchor_centres(grid: int = GRID_SIZE, device: str = "cpu") -> torch.Tensor:
    """(grid*grid, 2) anchor centres ``(x, y)`` in [0, 1], row-major, at cell centres."""
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1).to(device)


def decode(logits: torch.Tensor, regression: torch.Tensor, size: int = INPUT_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores (N, A), boxes (N, A, 4) ``x1, y1, x2, y2`` and keypoints (N, A, 6, 2) in ``size``-frame pixels.

    The regression holds, per anchor, the box centre offset and size, then six keypoint offsets, all
    in input pixels (MediaPipe's ``x_scale = w_scale = 192`` with fixed unit anchors).
    """
    anchors = anchor_centres(int(round(logits.shape[1] ** 0.5)), str(logits.device)).to(logits) * size
    scores = torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))
    centre = anchors + regression[..., 0:2]
    half = regression[..., 2:4] / 2
    boxes = torch.cat([centre - half, centre + half], dim=-1)
    keypoints = anchors[:, None, :] + regression[..., 4:].unflatten(-1, (NUM_KEYPOINTS, 2))
    return scores, boxes, keypoints


def weighted_nms(
    boxes: torch.Tensor, scores: torch.Tensor, keypoints: torch.Tensor, iou_threshold: float = NMS_IOU
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MediaPipe's blending NMS: each kept face is the score-weighted mean of the boxes overlapping it.

    Greedy by score: the best remaining box takes every remaining box with IoU > ``iou_threshold``
    (itself included); the face's box and keypoints are their score-weighted average, its score the
    best one's. Returns boxes (K, 4), scores (K,), keypoints (K, 6, 2).

    No loop per face: the kept boxes are greedy NMS's (:func:`~lrfer.faces.mtcnn.nms`), and each box
    belongs to the first kept box, by score, that overlaps it (the one that took it in the greedy pass).
    """
    blended_boxes, blended_scores, blended_points, _ = batched_weighted_nms(
        boxes, scores, keypoints, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device), iou_threshold
    )
    return blended_boxes, blended_scores, blended_points


def batched_weighted_nms(
    boxes: torch.Tensor, scores: torch.Tensor, keypoints: torch.Tensor, images: torch.Tensor, iou_threshold: float = NMS_IOU
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`weighted_nms` within each image of ``images`` (K,) at once; also returns each face's image.

    The boxes of different images are shifted apart (as :func:`~lrfer.faces.mtcnn.batched_nms` does),
    so they never overlap: one NMS and one overlap matrix for a whole batch of photos.
    """
    from lrfer.faces.mtcnn import nms, pairwise_overlap

    if scores.numel() == 0:
        return boxes.new_zeros(0, 4), scores.new_zeros(0), keypoints.new_zeros(0, NUM_KEYPOINTS, 2), images[:0]
    apart = boxes + (images.to(boxes) * (boxes.max() - boxes.min() + 1))[:, None]
    kept = nms(apart, scores, iou_threshold)
    member = pairwise_overlap(apart[kept], apart) > iou_threshold
    member[torch.arange(kept.numel(), device=kept.device), kept] = True
    group = member.to(torch.uint8).argmax(dim=0)  # argmax returns the first maximum: the earliest taker
    total = scores.new_zeros(kept.numel()).index_add_(0, group, scores)
    blended_boxes = boxes.new_zeros(kept.numel(), 4).index_add_(0, group, boxes * scores[:, None])
    blended_points = keypoints.new_zeros(kept.numel(), NUM_KEYPOINTS, 2).index_add_(0, group, keypoints * scores[:, None, None])
    return blended_boxes / total[:, None], scores[kept], blended_points / total[:, None, None], images[kept]


# ------------------------------------------------------------------------------------------- detector
class BlazeFace(NetworkDetector):
    """MediaPipe's full-range BlazeFace behind lrfer's :class:`Detector` interface, batched, on one device.

    ``threshold``: face score threshold (MediaPipe's default 0.5); ``min_face``: faces narrower than
    this many image pixels are dropped; ``close_ups``: a second, zoomed-out pass over the images in
    which the first found no face (:data:`ZOOM_OUT_FILL`), for faces that fill them.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, min_face: float = 0, device: torch.device | str = "cpu",
                 close_ups: bool = True) -> None:
        super().__init__()
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1); got {threshold}")
        self.threshold = float(threshold)
        self.min_face = float(min_face)
        self.close_ups = bool(close_ups)
        self.net = load_network(device)

    @detection_mode()
    def detect(self, images: list[torch.Tensor], volume: MipVolume | None = None) -> list[Detections]:
        """Find faces in a list of ``(3, H, W)`` uint8 RGB images (any sizes); one :class:`Detections` each.

        ``volume``: the same images as a :class:`~lrfer.faces.mtcnn.MipVolume`, when the caller has one.
        """
        images = check_images(images, self.device)
        if not images:
            return []
        found = self._detect(images, volume, fill=1.0)
        empty = [n for n, faces in enumerate(found) if len(faces) == 0] if self.close_ups else []
        if empty:  # a face filling the photo fills the 192 px frame, where the network sees none
            again = self._detect([images[n] for n in empty], volume, fill=ZOOM_OUT_FILL, positions=empty,
                                 min_fraction=ZOOM_OUT_MIN_FRACTION)
            for n, faces in zip(empty, again):
                found[n] = faces
        return found

    def _detect(self, images: list[torch.Tensor], volume: MipVolume | None, fill: float,
                positions: list[int] | None = None, min_fraction: float = 0.0) -> list[Detections]:
        """Faces narrower than ``min_face`` or than ``min_fraction`` of their photo's long side are dropped."""
        batch, params = letterbox(images, volume=volume, fill=fill, positions=positions)
        batch = batch.contiguous(memory_format=torch.channels_last)
        scores, boxes, keypoints = decode(*align.run_network(self.net, batch, PHOTO_ROWS, PHOTO_ROWS))
        params = params.to(self.device, non_blocking=True)
        if min_fraction:
            long_sides = to_device([max(img.shape[-2:]) for img in images], self.device, torch.float32)
            return self._faces(scores, boxes, keypoints, params, min_fraction * long_sides)
        return self._faces(scores, boxes, keypoints, params)

    def _faces(self, scores: torch.Tensor, boxes: torch.Tensor, keypoints: torch.Tensor, params: torch.Tensor,
               min_widths: torch.Tensor | None = None) -> list[Detections]:
        """Per-anchor outputs (N, A, ...) of N letterboxed images -> one :class:`Detections` per image,
        in image pixels, without faces narrower than ``min_face`` or than the image's ``min_widths``, or upside down;
        the whole batch at once (no operations per image)."""
        image, anchor = (scores >= self.threshold).nonzero(as_tuple=True)
        boxes, scores, keypoints, image = batched_weighted_nms(
            boxes[image, anchor], scores[image, anchor], keypoints[image, anchor], image
        )
        scale, pad = params[image, :2], params[image, 2:]
        boxes = (boxes - pad.repeat(1, 2)) / scale.repeat(1, 2)
        keypoints = (keypoints - pad[:, None]) / scale[:, None]
        keep = (boxes[:, 2] - boxes[:, 0]) >= (self.min_face if min_widths is None else min_widths[image].clamp(min=self.min_face))
        keep &= has_area(boxes)  # a negative height regressed: not a face (annotate refuses such a box)
        return split_by_image(Detections(boxes[keep], scores[keep], keypoints[keep][:, list(ALIGNMENT_KEYPOINTS)]),
                              image[keep], params.shape[0])
