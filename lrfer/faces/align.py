"""Face alignment to FER2013's own 48x48 framing, batched on the images' device.

A face with five landmarks is mapped onto :data:`FER2013_TEMPLATE` by the least-squares similarity
transform (rotation, uniform scale, translation; :func:`estimate_similarity`). A face without landmarks
(Haar, or NaN) gets a square box crop framed like FER2013: its box is mapped onto
:data:`FER2013_FACE_BOX`. All faces of all images are sampled in ONE ``affine_grid``/``grid_sample``
call: the images are stacked as the depth axis of a 5-D volume, each face samples its own slice.
Large faces are anti-aliased by sampling an oversampled frame (``k * out_size``) and area-pooling it.

Coordinates are continuous pixel coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``),
the convention of :mod:`lrfer.faces.mtcnn`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lrfer.constants import FER2013_BOX, FER2013_LANDMARKS, HR_SIZE
from lrfer.faces.detect import Detections, check_images, concat_per_image
from lrfer.faces.workspace import reusable_empty
from lrfer.shapes import bucket, run_bucketed, to_device

#: ITU-R BT.601 luma weights (R, G, B), as used by OpenCV and PIL for RGB -> gray.
BT601_WEIGHTS = (0.299, 0.587, 0.114)
#: Highest oversampling factor of the anti-aliasing frame (output pixels are k x k sample averages).
MAX_OVERSAMPLE = 8
#: On CPU, images are stacked (detection, alignment) in consecutive groups whose float copy holds at
#: most this many values (8 MiB): see :func:`cpu_image_groups`.
CPU_STACK_BUDGET = 1 << 21
#: Pixel values converted to float at a time by :func:`rgb_to_gray` for channel-interleaved images.
GRAY_BAND_VALUES = 1 << 18
#: Smallest photo (pixels) whose gray conversion for alignment is limited to the faces' footprints
#: (:func:`gray_volume`). Alignment per photo, one face each, whole conversion -> footprints (2 cores):
#: 120x80 0.120 -> 0.207 ms, 240x160 0.276 -> 0.274, 360x240 0.680 -> 0.489, 480x320 1.12 -> 0.73.
GRAY_FOOTPRINT_MIN_PIXELS = 1 << 16
#: Bytes of integral-image rows gathered at a time by :func:`area_resize_integral`.
INTEGRAL_BAND_BYTES = 1 << 20
#: Landmark spreads below this (pixels, RMS distance to their centroid) are treated as missing.
MIN_LANDMARK_SPREAD = 1e-3

#: Five landmarks (left eye, right eye, nose, mouth left, mouth right) of a typical FER2013 face, in
#: 48x48 pixel coordinates (derived by scripts/derive_fer2013_template.py; the numbers and their
#: derivation are in :data:`lrfer.constants.FER2013_LANDMARKS`).
FER2013_TEMPLATE = torch.tensor(FER2013_LANDMARKS)
#: Median MTCNN box ``x1, y1, x2, y2`` of a FER2013 face in the 48x48 frame; the framing of faces
#: without landmarks (its centre and mean side; :data:`lrfer.constants.FER2013_BOX`).
FER2013_FACE_BOX = torch.tensor(FER2013_BOX)


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of ``(..., 3, H, W)`` RGB, float in the input's range, shape ``(..., 1, H, W)``.

    >>> rgb_to_gray(torch.full((3, 2, 2), 255, dtype=torch.uint8)).flatten().tolist()
    [255.0, 255.0, 255.0, 255.0]
    """
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"rgb_to_gray expects (..., 3, H, W); got {tuple(images.shape)}")
    if images.dim() == 3 and images.stride(0) == 1 and not images.is_floating_point():
        return _interleaved_rgb_to_gray(images)
    # One output buffer and in-place sums: about 4x faster on a large photo than weighting a float
    # copy of all three channels and summing it (1.1 vs 4.9 ms at 1920x1367 on 2 cores).
    red, green, blue = (images.narrow(-3, c, 1) for c in range(3))
    # float32 for integer input (whatever the default dtype), the input's float dtype otherwise
    gray = torch.mul(red, BT601_WEIGHTS[0]) if images.is_floating_point() else red.float().mul_(BT601_WEIGHTS[0])
    gray.add_(green, alpha=BT601_WEIGHTS[1]).add_(blue, alpha=BT601_WEIGHTS[2])
    return gray if images.is_floating_point() else gray.clamp_(0, 255)


def _interleaved_rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """:func:`rgb_to_gray` of a ``(3, H, W)`` integer view of an ``(H, W, 3)`` array, the same values:
    converted to float in bands of rows that stay in cache (3 vs 12 ms at 1920x1448 on 2 cores,
    where the planar code reads every channel with a stride of 3)."""
    pixels = image.permute(1, 2, 0)
    gray = torch.empty(1, *pixels.shape[:2], device=image.device)
    rows = _gray_band_rows(pixels.shape[1])
    for top in range(0, pixels.shape[0], rows):
        _pixels_to_gray(pixels[top : top + rows], gray[0, top : top + rows])
    return gray


def _gray_band_rows(width: int) -> int:
    """Rows of an interleaved image converted to gray at a time: :data:`GRAY_BAND_VALUES` values."""
    return max(1, GRAY_BAND_VALUES // max(1, 3 * width))


def _pixels_to_gray(pixels: torch.Tensor, out: torch.Tensor) -> None:
    """ITU-R 601 luma of integer ``(h, w, 3)`` pixels into the float ``(h, w)`` ``out``, clamped to 0..255."""
    band = pixels.float()
    torch.mul(band[..., 0], BT601_WEIGHTS[0], out=out).add_(band[..., 1], alpha=BT601_WEIGHTS[1]).add_(band[..., 2], alpha=BT601_WEIGHTS[2])
    out.clamp_(0, 255)


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms (Umeyama, no reflection) taking ``src`` points onto ``dst``.

    ``src`` (K, P, 2), ``dst`` (P, 2) or (K, P, 2); returns (K, 2, 3) matrices ``M`` with
    ``dst ~ src @ M[:, :, :2].T + M[:, :, 2]``. Degenerate ``src`` (all points equal) gives NaN.

    >>> src = torch.tensor([[[0., 0.], [1., 0.], [0., 1.]]])
    >>> estimate_similarity(src, 2 * src[0] + 3).round(decimals=4)
    tensor([[[2., -0., 3.],
             [0., 2., 3.]]])
    """
    if src.dim() != 3 or src.shape[-1] != 2:
        raise ValueError(f"src must be (K, P, 2); got {tuple(src.shape)}")
    if dst.shape[-2:] != src.shape[-2:] or dst.dim() not in (2, 3):
        raise ValueError(f"dst must be ({src.shape[1]}, 2) or (K, {src.shape[1]}, 2); got {tuple(dst.shape)}")
    src = src.to(torch.float64)
    dst = dst.to(device=src.device, dtype=torch.float64).expand_as(src)
    src_mean, dst_mean = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    # In 2-D the Umeyama solution has the closed form M = [[a, -b], [b, a]]: a = <s, d> / |s|^2,
    # b = <s x d> / |s|^2 (the SVD's reflection fix is never needed for this parametrisation).
    norm = (s**2).sum(dim=(1, 2))
    a = (s * d).sum(dim=(1, 2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)
    shift = dst_mean.squeeze(1) - (rot @ src_mean.transpose(1, 2)).squeeze(-1)
    return torch.cat([rot, shift.unsqueeze(-1)], dim=-1).to(torch.float32)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (K, 2, 3) affine maps.

    >>> invert_affine(torch.tensor([[[2., 0., 4.], [0., 2., 6.]]]))
    tensor([[[ 0.5000,  0.0000, -2.0000],
             [ 0.0000,  0.5000, -3.0000]]])
    """
    lin_inv = torch.linalg.inv(m[:, :, :2])
    return torch.cat([lin_inv, -(lin_inv @ m[:, :, 2:])], dim=-1)


def box_similarity(boxes: torch.Tensor, dst_box: torch.Tensor) -> torch.Tensor:
    """(K, 2, 3) scale+shift maps taking each box's centre and mean side onto ``dst_box``'s.

    >>> box_similarity(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([0., 0., 20., 20.]))
    tensor([[[2., 0., 0.],
             [0., 2., 0.]]])
    """
    dst_box = dst_box.to(boxes)
    src_c, dst_c = (boxes[:, :2] + boxes[:, 2:]) / 2, (dst_box[:2] + dst_box[2:]) / 2
    src_side = (boxes[:, 2:] - boxes[:, :2]).mean(dim=1)
    scale = (dst_box[2:] - dst_box[:2]).mean() / src_side
    eye = torch.eye(2, dtype=boxes.dtype, device=boxes.device)
    lin = scale.view(-1, 1, 1) * eye
    shift = dst_c - scale.unsqueeze(1) * src_c
    return torch.cat([lin, shift.unsqueeze(-1)], dim=-1)


def stack_images(images: list[torch.Tensor], channels: int = 3) -> torch.Tensor:
    """Stack (C, H, W) images as a float volume ``(1, channels, N, Hmax, Wmax)``, zero-padded.

    ``channels=1`` converts RGB to gray (:func:`rgb_to_gray`) first. Values keep the input range.
    Padded and stacked before the conversion to float: for a 1920 px photo that is one pass over
    its pixels instead of a zero-fill and a strided copy (about 1 vs 7-15 ms on 2 cores).

    >>> stack_images([torch.ones(3, 2, 2, dtype=torch.uint8), torch.ones(3, 1, 3, dtype=torch.uint8)]).shape
    torch.Size([1, 3, 2, 2, 3])
    """
    gray = channels == 1 and images[0].shape[0] == 3
    # On CPU each image is converted alone (the interleaved pixels in cache); elsewhere the padded
    # RGB stack is converted in one call (padding is black in both: gray(0) = 0).
    per_image = gray and (len(images) == 1 or cpu_tuned(images[0]))
    planes = [rgb_to_gray(img) for img in images] if per_image else images
    if len(planes) == 1:
        plane = planes[0]
        if not _into_photo_buffer(plane):
            return plane.unsqueeze(1).float().unsqueeze(0)
        # In the plane's own memory order (pixels interleaved for a decoded photo), into a buffer
        # that the next photo reuses: a fresh 33 MB copy of a 1920 px photo faulted in 8,000 pages.
        memory_order = sorted(range(3), key=plane.stride, reverse=True)
        volume = reusable_empty("photos", (1, plane.shape[0], 1, *plane.shape[1:]), order=(0, 2, *((1, 3, 4)[d] for d in memory_order)))
        volume[0, :, 0].copy_(plane)
        return volume
    stacked = pad_and_stack(planes)  # (N, C, H, W)
    if gray and not per_image:
        return rgb_to_gray(stacked).transpose(0, 1).unsqueeze(0)  # (N, 1, H, W) -> (1, 1, N, H, W)
    if not _into_photo_buffer(stacked):
        return stacked.transpose(0, 1).to(torch.float32, memory_format=torch.contiguous_format).unsqueeze(0)  # type: ignore[call-overload, unused-ignore]  # memory_format: missing from torch 2.1's stubs
    volume = reusable_empty("photos", (1, stacked.shape[1], stacked.shape[0], *stacked.shape[2:]))
    volume[0].copy_(stacked.transpose(0, 1))
    return volume


def _into_photo_buffer(pixels: torch.Tensor) -> bool:
    """Whether :func:`stack_images` converts ``pixels`` into the thread's reusable ``"photos"`` buffer:
    integer pixels on the CPU-tuned path (float input, or a GPU's, is converted by ``.float()``)."""
    return pixels.dtype != torch.float32 and cpu_tuned(pixels)


def pad_and_stack(images: list[torch.Tensor]) -> torch.Tensor:
    """``(C, H, W)`` images of any sizes as one ``(N, C, Hmax, Wmax)`` batch, zero-padded at the bottom
    and right: one stack and one copy per image size, not a padded copy per image (on a GPU each is
    a kernel launch).

    >>> pad_and_stack([torch.ones(1, 1, 2), torch.ones(1, 2, 1), torch.ones(1, 1, 2)])[:, 0].tolist()
    [[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]
    """
    groups = images_by_size(images)
    if len(groups) == 1:
        return torch.stack(images)
    h, w = max(height for height, _ in groups), max(width for _, width in groups)
    out = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    for (height, width), members in groups.items():
        block = torch.stack([images[n] for n in members])
        if members == list(range(members[0], members[0] + len(members))):
            out[members[0] : members[-1] + 1, :, :height, :width] = block
        else:
            out[to_device(members, out.device), :, :height, :width] = block
    return out


def cpu_tuned(tensor: torch.Tensor) -> bool:
    """Whether work on ``tensor`` takes the CPU-tuned path (bands, groups, per-image sampling): on
    CPU. Every such path computes what the single large GPU call computes (tested by forcing the
    GPU path on CPU)."""
    return tensor.device.type == "cpu"


def run_network(net: Callable[[torch.Tensor], Any], x: torch.Tensor, min_rows: int = 0, max_rows: int | None = None) -> Any:
    """``net(x)``; off the CPU on ``x`` padded to a :func:`~lrfer.shapes.bucket` number of rows, at
    least ``min_rows``, in calls of at most ``max_rows`` (:func:`~lrfer.shapes.run_bucketed`: a few
    shapes for cuDNN to plan, not one per call)."""
    return net(x) if cpu_tuned(x) else run_bucketed(net, x, min_rows, max_rows)


def images_by_size(images: list[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images of each ``(H, W)``, in order of first appearance.

    >>> images_by_size([torch.zeros(3, 4, 5), torch.zeros(3, 2, 2), torch.zeros(3, 4, 5)])
    {(4, 5): [0, 2], (2, 2): [1]}
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for n, img in enumerate(images):
        groups.setdefault((int(img.shape[-2]), int(img.shape[-1])), []).append(n)
    return groups


def images_by_size_bucket(images: list[torch.Tensor]) -> list[dict[tuple[int, int], list[int]]]:
    """:func:`images_by_size`, its sizes grouped by :func:`~lrfer.shapes.bucket` height and width
    (within 25 % of each other): images detected on one padded canvas off the CPU.

    >>> images_by_size_bucket([torch.zeros(3, 40, 50), torch.zeros(3, 90, 90), torch.zeros(3, 38, 50)])
    [{(40, 50): [0], (38, 50): [2]}, {(90, 90): [1]}]
    """
    groups: dict[tuple[int, int], dict[tuple[int, int], list[int]]] = {}
    for (height, width), members in images_by_size(images).items():
        groups.setdefault((bucket(height), bucket(width)), {})[(height, width)] = members
    return list(groups.values())


def cpu_image_groups(images: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive images detected together: on CPU as many as fit :data:`CPU_STACK_BUDGET` in
    their stacked float copy (a 1920 px photo alone; four 480 px ones), elsewhere all of them.

    A batch of large photos stacked as one padded volume cost more than it saved on 2 cores (four
    1920 px photos: 215 vs 176 ms per photo, every allocation a fresh page-faulted mapping).

    >>> [len(g) for g in cpu_image_groups([torch.zeros(3, 360, 480, dtype=torch.uint8)] * 9)]
    [4, 4, 1]
    """
    if not images or not cpu_tuned(images[0]):
        return [images] if images else []
    groups: list[list[torch.Tensor]] = []
    height = width = 0
    for img in images:
        h, w = max(height, img.shape[-2]), max(width, img.shape[-1])
        if groups and 3 * (len(groups[-1]) + 1) * h * w <= CPU_STACK_BUDGET:
            groups[-1].append(img)
            height, width = h, w
        else:
            groups.append([img])
            height, width = img.shape[-2], img.shape[-1]
    return groups


def sample_patches(
    volume: torch.Tensor, image_index: torch.Tensor, out_to_image: torch.Tensor, out_size: int, oversample: int = 1
) -> torch.Tensor:
    """Sample ``out_size`` square patches from a stacked image volume: one ``grid_sample`` call on a
    GPU, one per image on CPU.

    ``volume`` (1, C, N, H, W) from :func:`stack_images`; ``image_index`` (B,) which image each
    patch reads; ``out_to_image`` (B, 2, 3) maps patch pixel coordinates to image pixel coordinates.
    With ``oversample = k`` each output pixel is the mean of a k x k grid of bilinear samples (an
    area filter that avoids aliasing when the patch shrinks the image). Outside the images: zeros.
    Returns (B, C, out_size, out_size).
    """
    _, channels, n, h, w = volume.shape
    b = out_to_image.shape[0]
    if b == 0:
        return volume.new_zeros(0, channels, out_size, out_size)
    theta = _pixel_affine_to_theta(out_to_image.to(volume), out_size, h, w)
    size = out_size * oversample
    grid_xy = affine_grid(theta, size)
    # One image, or on CPU: 2-D grid_samples, one per image (about 4x faster on CPU than the 3-D one;
    # no loop per face). Elsewhere one trilinear 3-D call whose depth coordinate picks the image.
    if n == 1 or cpu_tuned(volume):
        patches = _sample_per_image(volume, image_index, grid_xy)
    else:
        patches = _sample_volume(volume, image_index, grid_xy)
    if oversample == 2:
        return mean_2x2(patches)  # the same values as avg_pool2d without its copy of the transposed patches
    return F.avg_pool2d(patches, oversample) if oversample > 1 else patches


def mean_2x2(x: torch.Tensor) -> torch.Tensor:
    """Means of 2x2 pixel blocks over the last two axes (a last odd row or column is dropped): the
    values of ``avg_pool`` with kernel 2, as sums of strided views (about 3x faster on CPU).

    >>> mean_2x2(torch.arange(12.).view(3, 4)).tolist()
    [[2.5, 4.5]]
    """
    height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    rows = x[..., 0:height:2, :width] + x[..., 1:height:2, :width]
    return (rows[..., 0::2] + rows[..., 1::2]) * 0.25


def mean_2x2_zero_padded(x: torch.Tensor) -> torch.Tensor:
    """:func:`mean_2x2` with a last odd row or column kept, averaged with black beyond it (a zero row
    or column): the value the same image gets inside a zero-padded stack of larger images, so an
    image's mip levels do not depend on the images stacked with it.

    >>> mean_2x2_zero_padded(torch.arange(12.).view(3, 4)).tolist()
    [[2.5, 4.5], [4.25, 5.25]]
    """
    height, width = x.shape[-2:]
    if height % 2 == 0 and width % 2 == 0:
        return mean_2x2(x)
    rows, cols = height // 2 * 2, width // 2 * 2
    out = x.new_empty(*x.shape[:-2], (height + 1) // 2, (width + 1) // 2)
    out[..., : rows // 2, : cols // 2] = mean_2x2(x)
    if width % 2:
        out[..., : rows // 2, -1] = (x[..., 0:rows:2, -1] + x[..., 1:rows:2, -1]) * 0.25
    if height % 2:
        out[..., -1, : cols // 2] = (x[..., -1, 0:cols:2] + x[..., -1, 1:cols:2]) * 0.25
    if height % 2 and width % 2:
        out[..., -1, -1] = x[..., -1, -1] * 0.25
    return out


def integral_image(image: torch.Tensor) -> torch.Tensor:
    """Summed-area table ``(H + 1, W + 1, C)`` of a ``(C, H, W)`` uint8 CPU image (OpenCV's
    ``integral``): entry ``[i, j]`` is the sum of rows ``< i`` and columns ``< j``. int32 when every
    sum fits, float64 (exact for these integers) otherwise. Fastest for a channels-interleaved image
    (a permuted ``(H, W, 3)`` array, as :func:`lrfer.io.to_device_tensor` gives on CPU); a planar one
    is interleaved first (about 3 ms for a 1920 px photo on 2 cores). Written into the thread's
    reusable ``"integral"`` buffer (:mod:`lrfer.faces.workspace`)."""
    import cv2

    hwc = image.permute(1, 2, 0).contiguous()  # a view for a (3, H, W) view of an (H, W, 3) array
    exact_in_int32 = 255 * image.shape[-2] * image.shape[-1] < 2**31
    height, width, channels = hwc.shape
    table = reusable_empty("integral", (height + 1, width + 1, channels), torch.int32 if exact_in_int32 else torch.float64)
    summed = cv2.integral(hwc.numpy(), sum=table.numpy(), sdepth=cv2.CV_32S if exact_in_int32 else cv2.CV_64F)
    if summed.ctypes.data != table.data_ptr():  # OpenCV did not write into the buffer given
        table.copy_(torch.from_numpy(summed))
    return table


def area_windows(length: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last input index averaged into each of ``size`` outputs by torch's
    ``area`` resize (adaptive average pooling) of ``length`` inputs.

    >>> [t.tolist() for t in area_windows(5, 3)]
    [[0, 1, 3], [2, 4, 5]]
    """
    index = torch.arange(size)
    return index * length // size, -(-(index + 1) * length // size)


def area_resize_integral(integral: torch.Tensor, size: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(image, size, mode="area")`` from the image's :func:`integral_image`, into
    a contiguous ``out`` ``(h, w, C)`` float32: the same values bit for bit (each window's exact integer sum,
    divided by its height, then its width, as torch does; except a 1x1 output, which torch computes
    as a mean, in another summation order).

    About 3x faster than torch's kernel on 2 CPU cores (a 1920x1448 photo's first P-Net scale: 7 vs
    21 ms): torch computes each output's window with integer divisions and splits 3 channel planes
    between the threads. Done in bands of output rows of about 1 MiB, so that no temporary is a fresh,
    page-faulted mapping.
    """
    height, width, channels = integral.shape[0] - 1, integral.shape[1] - 1, integral.shape[2]
    row_start, row_end = area_windows(height, size[0])
    col_start, col_end = area_windows(width, size[1])
    row_count = (row_end - row_start).to(out.dtype).view(-1, 1)
    col_count = (col_end - col_start).to(out.dtype).repeat_interleave(channels).view(1, -1)  # per flat value
    # Flat (row, column * C + channel) indices of each window's last and first column: one gather
    # (about 2x faster than index_select over the middle axis).
    cols = torch.cat([col_end, col_start]).view(-1, 1).mul(channels).add(torch.arange(channels)).view(1, -1)
    values = size[1] * channels
    flat, flat_out = integral.view(height + 1, -1), out.view(size[0], values)
    band = max(1, INTEGRAL_BAND_BYTES // (flat.shape[1] * flat.element_size()))
    # The band's temporaries, allocated once per call and filled by every band (out=)
    rows_per_band = min(band, size[0])
    ends, starts = flat.new_empty(rows_per_band, flat.shape[1]), flat.new_empty(rows_per_band, flat.shape[1])
    ends_starts = flat.new_empty(rows_per_band, 2 * values)
    for top in range(0, size[0], band):
        rows, count = slice(top, top + band), min(band, size[0] - top)
        row_sums = torch.index_select(flat, 0, row_end[rows], out=ends[:count])
        row_sums.sub_(torch.index_select(flat, 0, row_start[rows], out=starts[:count]))
        picked = torch.gather(row_sums, 1, cols.expand(count, -1), out=ends_starts[:count])
        sums = picked[:, :values].sub_(picked[:, values:])
        # int32 sums go to the division as they are (converted to float32 there, exactly: no float copy of
        # them first); a float64 table's sums are converted first, so that the division is float32's
        sums = sums.to(out.dtype) if sums.is_floating_point() else sums
        torch.div(sums, row_count[rows], out=flat_out[rows]).div_(col_count)
    return out


def _sample_per_image(volume: torch.Tensor, image_index: torch.Tensor, grid_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (B, C, S, S) of ``volume`` (1, C, N, H, W): patch ``b`` reads image
    ``image_index[b]`` at ``grid_xy[b]`` (S, S, 2); one 2-D ``grid_sample`` per image."""
    if volume.shape[2] == 1:
        return _sample_image(volume[:, :, 0], grid_xy)
    b, size = grid_xy.shape[:2]
    patches = volume.new_empty(b, volume.shape[1], size, size)
    for n in image_index.unique().tolist():
        mine = torch.nonzero(image_index == n, as_tuple=True)[0]
        patches[mine] = _sample_image(volume[:, :, n], grid_xy[mine])
    return patches


def _sample_volume(volume: torch.Tensor, image_index: torch.Tensor, grid_xy: torch.Tensor) -> torch.Tensor:
    """The same samples as :func:`_sample_per_image` in one 3-D ``grid_sample`` call (the GPU path)."""
    b, size = grid_xy.shape[:2]
    n = volume.shape[2]
    grid_z = ((2 * image_index.to(volume) + 1) / n - 1).view(b, 1, 1, 1).expand(b, size, size, 1)
    grid = torch.cat([grid_xy, grid_z], dim=-1).unsqueeze(0)  # (1, B, S, S, 3)
    patches = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return patches[0].transpose(0, 1)  # (B, C, S, S)


def _sample_image(image: torch.Tensor, grid_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (B, C, S, S) of one ``(1, C, H, W)`` image at ``grid_xy`` (B, S, S, 2), zeros outside.

    On CPU, ``grid_sample`` shares out the work by batch entry, so one image's patches would use one
    thread: they go in as :func:`sampling_groups` equal groups that all read the image (expanded,
    not copied). The same values; on 2 cores sampling R-Net's crops of a 1920 px photo took 1.6x less
    time (the whole crop stage, 14 -> 11 ms).
    """
    b, size = grid_xy.shape[:2]
    channels = image.shape[1]
    groups = sampling_groups(image, b)
    even = b - b % groups
    grid = grid_xy[:even].reshape(groups, even // groups * size, size, 2)
    samples = F.grid_sample(image.expand(groups, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (groups, C, per group * S, S) -> (B, C, S, S): a view for one group, a copy otherwise
    patches = samples.view(groups, channels, even // groups, size, size).transpose(1, 2).reshape(even, channels, size, size)
    if even == b:
        return patches
    return torch.cat([patches, _sample_image(image, grid_xy[even:])])


def sampling_groups(image: torch.Tensor, patches: int) -> int:
    """Groups of patches for one ``grid_sample`` call: one per intra-op thread on the CPU-tuned path
    (:func:`cpu_tuned`; at most one per patch), one elsewhere (a GPU spreads a single batch entry
    over its cores)."""
    if not cpu_tuned(image):
        return 1
    return max(1, min(patches, torch.get_num_threads()))


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, 1, size, size], align_corners=False)`` built by broadcasting: several
    times faster on CPU than its batched matmul over (size * size, 3) points, the same values up to float
    rounding; on CPU cheaper still for maps without rotation (MTCNN's crops). Off the CPU every map
    takes the general formula (the same values: it adds zeros), since testing for rotation would
    make the host wait for the device on every call.

    >>> theta = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 2.0, -0.3]], [[0.5, 0.2, 0.1], [-0.1, 2.0, -0.3]]])
    >>> torch.allclose(affine_grid(theta, 4), F.affine_grid(theta, [2, 1, 4, 4], align_corners=False))
    True
    """
    base = (torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1
    b = theta.shape[0]
    grid_x = theta[:, 0, 0, None] * base + theta[:, 0, 2, None]  # (B, size): the column's part
    grid_y = theta[:, 1, 1, None] * base + theta[:, 1, 2, None]  # (B, size): the row's part
    if cpu_tuned(theta) and not bool((theta[:, 0, 1] != 0).any() or (theta[:, 1, 0] != 0).any()):
        return torch.stack([grid_x[:, None, :].expand(b, size, size), grid_y[:, :, None].expand(b, size, size)], dim=-1)
    x_from_row = theta[:, 0, 1, None] * base  # (B, size): x's dependence on the row
    y_from_col = theta[:, 1, 0, None] * base  # (B, size): y's dependence on the column
    return torch.stack([grid_x[:, None, :] + x_from_row[:, :, None], grid_y[:, :, None] + y_from_col[:, None, :]], dim=-1)


def _pixel_affine_to_theta(out_to_image: torch.Tensor, out_size: int, height: int, width: int) -> torch.Tensor:
    """Turn pixel-to-pixel maps into ``affine_grid``'s normalised [-1, 1] thetas (align_corners=False)."""
    lin, shift = out_to_image[:, :, :2], out_to_image[:, :, 2]
    half = out_size / 2
    to_norm = to_device([2 / width, 2 / height], out_to_image.device, out_to_image.dtype)
    theta_lin = to_norm.view(1, 2, 1) * lin * half
    theta_shift = to_norm * (lin.sum(dim=2) * half + shift) - 1
    return torch.cat([theta_lin, theta_shift.unsqueeze(-1)], dim=-1)


def face_to_template(detections: Detections, out_size: int = HR_SIZE) -> torch.Tensor:
    """(K, 2, 3) maps from image pixels to the ``out_size`` aligned frame, by landmarks or by box.

    >>> d = Detections.from_boxes(torch.tensor([[0., 0., 36., 40.]]))
    >>> face_to_template(d).shape
    torch.Size([1, 2, 3])
    """
    landmarks = detections.landmarks
    template = FER2013_TEMPLATE.to(landmarks.device) * (out_size / HR_SIZE)
    face_box = FER2013_FACE_BOX.to(landmarks.device) * (out_size / HR_SIZE)
    spread = (landmarks - landmarks.mean(dim=1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    use_points = detections.has_landmarks & (spread > MIN_LANDMARK_SPREAD)
    maps = box_similarity(detections.boxes, face_box)
    if bool(use_points.any()):
        maps[use_points] = estimate_similarity(landmarks[use_points], template)
    return maps


def align_faces(images: list[torch.Tensor], detections: list[Detections], out_size: int = HR_SIZE) -> torch.Tensor:
    """Crop and align every detected face to FER2013's framing: (sumK, 1, out_size, out_size) gray 0..1.

    Faces come in image order, then detection order. Landmark faces use the 5-point similarity to
    :data:`FER2013_TEMPLATE`; faces with NaN landmarks a square crop framed by :data:`FER2013_FACE_BOX`.

    >>> img = torch.zeros(3, 100, 100, dtype=torch.uint8)
    >>> align_faces([img], [Detections.from_boxes(torch.tensor([[20., 20., 80., 80.]]))]).shape
    torch.Size([1, 1, 48, 48])
    """
    if len(images) != len(detections):
        raise ValueError(f"got {len(images)} images but {len(detections)} Detections; pass one Detections per image")
    if not isinstance(out_size, int) or out_size < 1:
        raise ValueError(f"out_size must be a positive int; got {out_size!r}")
    images = check_images(images)
    device = images[0].device if images else torch.device("cpu")
    if any(img.device != device for img in images):
        raise ValueError("all images must be on the same device; move them with .to(device)")
    for i, det in enumerate(detections):
        if not isinstance(det, Detections):
            raise ValueError(f"detections[{i}] is a {type(det).__name__}; expected lrfer.faces.Detections")
    counts = [len(det) for det in detections]
    if sum(counts) == 0:
        return torch.zeros(0, 1, out_size, out_size, device=device)
    every_face, image_index = concat_per_image([det.to(device) for det in detections])
    image_to_out = face_to_template(every_face, out_size)  # one call for all faces: no operations per image
    out_to_image = invert_affine(image_to_out.double()).float()
    oversample = oversample_factors(out_to_image)
    faces, first = [], 0
    for group in cpu_image_groups(images):  # all images at once except on CPU (memory, 2-D sampling)
        in_group = (image_index >= first) & (image_index < first + len(group))
        index, maps = image_index[in_group] - first, out_to_image[in_group]
        volume = gray_volume(group, index, maps, out_size)
        faces.append(sample_patches_per_factor(volume, index, maps, out_size, oversample[in_group]))
        first += len(group)
    return (torch.cat(faces) / 255).clamp_(0, 1)


def sample_patches_per_factor(
    volume: torch.Tensor, image_index: torch.Tensor, out_to_image: torch.Tensor, out_size: int, oversample: torch.Tensor
) -> torch.Tensor:
    """:func:`sample_patches` with each patch's own ``oversample`` factor (B,): one call per distinct
    factor (at most :data:`MAX_OVERSAMPLE`), not per face. A face's pixels then depend on that face
    alone, not on the largest face that happens to share its call."""
    factors = oversample.unique().tolist()
    if len(factors) <= 1:
        return sample_patches(volume, image_index, out_to_image, out_size, int(factors[0]) if factors else 1)
    out = volume.new_empty(len(oversample), volume.shape[1], out_size, out_size)
    for factor in factors:
        rows = (oversample == factor).nonzero().squeeze(1)
        out[rows] = sample_patches(volume, image_index[rows], out_to_image[rows], out_size, int(factor))
    return out


def gray_volume(images: list[torch.Tensor], image_index: torch.Tensor, out_to_image: torch.Tensor, out_size: int) -> torch.Tensor:
    """``stack_images(images, channels=1)`` as far as the faces' samples read it.

    On CPU, for channel-interleaved images (decoded files) of at least :data:`GRAY_FOOTPRINT_MIN_PIXELS`
    pixels, only the pixels that bilinear sampling
    of some face can read (:func:`sample_footprints`) are converted to gray: the same values there,
    the rest of the volume left unset: 14-17 % of the pixels of the shared 1920 px group photos, 36-42 %
    of a crowd scene (the whole conversion took 5 ms per 1920 px photo on 2 cores). Elsewhere, the
    whole stack.
    """
    decoded_and_large = all(img.stride(0) == 1 and img.shape[-2] * img.shape[-1] >= GRAY_FOOTPRINT_MIN_PIXELS for img in images)
    if not (images and cpu_tuned(images[0]) and decoded_and_large):
        return stack_images(images, channels=1)
    footprints = sample_footprints(out_to_image, out_size)
    if not bool(torch.isfinite(footprints).all()):
        return stack_images(images, channels=1)
    sizes = images_by_size(images)
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    footprints = footprints.clamp(0, max(height, width)).long()  # clamped as floats: huge values stay in range
    # Padding below and right of smaller images is read as black (as stack_images pads it).
    volume = reusable_empty("gray", (1, 1, len(images), height, width))
    if len(sizes) > 1:
        volume.zero_()
    for n, image in enumerate(images):
        _gray_where_sampled(image, footprints[image_index == n], volume[0, 0, n])
    return volume


def sample_footprints(out_to_image: torch.Tensor, out_size: int) -> torch.Tensor:
    """(K, 4) ``x0, y0, x1, y1`` (float, whole pixels, end exclusive) around every pixel that bilinear
    sampling of each face's ``out_size`` frame through ``out_to_image`` (K, 2, 3) can read.

    Samples lie inside the image of the frame's corners; a sample at ``x`` reads pixels
    ``floor(x - 0.5)`` and the next one. Two pixels of margin on each side also cover float rounding.

    >>> sample_footprints(torch.tensor([[[2.0, 0, 10], [0, 2.0, 20]]]), 4).tolist()
    [[8.0, 18.0, 20.0, 30.0]]
    """
    corners = torch.tensor([[0.0, 0.0], [out_size, 0.0], [0.0, out_size], [out_size, out_size]], dtype=out_to_image.dtype)
    points = corners @ out_to_image[:, :, :2].transpose(1, 2) + out_to_image[:, None, :, 2]  # (K, 4, 2)
    return torch.cat([points.amin(dim=1).floor() - 2, points.amax(dim=1).ceil() + 2], dim=1)


def _gray_where_sampled(image: torch.Tensor, footprints: torch.Tensor, out: torch.Tensor) -> None:
    """Write :func:`rgb_to_gray` of the interleaved ``image`` into ``out`` (H', W') inside ``footprints``
    (M, 4): band by band of rows (as :func:`_interleaved_rgb_to_gray`, with the same :func:`_pixels_to_gray`),
    each band over the columns of the footprints that reach into it: the same values."""
    height, width = image.shape[-2:]
    if footprints.numel() == 0:
        return
    x0, x1 = footprints[:, 0].clamp(0, width), footprints[:, 2].clamp(0, width)
    y0, y1 = footprints[:, 1].clamp(0, height), footprints[:, 3].clamp(0, height)
    rows = _gray_band_rows(width)
    tops = torch.arange(0, height, rows)
    reach = (y0[None] < tops[:, None] + rows) & (y1[None] > tops[:, None]) & (x1 > x0)[None]  # (bands, M)
    spans = torch.stack([
        torch.maximum(tops, torch.where(reach, y0, height).amin(dim=1)),
        torch.minimum(tops + rows, torch.where(reach, y1, 0).amax(dim=1)),
        torch.where(reach, x0, width).amin(dim=1),
        torch.where(reach, x1, 0).amax(dim=1),
    ], dim=1)
    pixels = image.permute(1, 2, 0)
    for top, bottom, left, right in spans[reach.any(dim=1)].tolist():
        _pixels_to_gray(pixels[top:bottom, left:right], out[top:bottom, left:right])


def oversample_factors(out_to_image: torch.Tensor) -> torch.Tensor:
    """Samples per output pixel (per axis) of each face's area filter, (B,) int64 on the maps' device:
    the face's largest image-pixels-per-output-pixel, rounded up, 1 to :data:`MAX_OVERSAMPLE`.

    >>> oversample_factors(torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], [[2.5, 0.0, 0.0], [0.0, 2.5, 0.0]]])).tolist()
    [1, 3]
    """
    scale = out_to_image[:, :, :2].abs().sum(dim=2).amax(dim=1)
    if not bool(torch.isfinite(scale).all()):  # one read from the device
        raise ValueError("non-finite face transform: a detection has NaN/inf boxes")
    return (scale - 1e-6).ceil().clamp(1, MAX_OVERSAMPLE).long()
