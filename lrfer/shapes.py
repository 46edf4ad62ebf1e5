"""Input shapes rounded up to a few sizes per octave, for networks that run off the CPU.

cuDNN builds an execution plan for every new input shape of a convolution and caches it. Measured on
an H200 (torch 2.11, cuDNN 9.19): MTCNN's R-Net on a new batch size took 8-10 ms against 0.7 ms once
cached, P-Net on a new image size 5-11 ms against 2.9 ms. A folder of photos brings new shapes with
every batch (numbers of photos of a size, of candidate boxes, of faces; the photo sizes themselves),
and `lrfer predict` on 2,000 photos took 9.8 s the first time in a process, 4.5 s when run again
with the plans (and the kernels they load) in place. So off the CPU the
detectors and the classifier pad their batches to :func:`bucket` sizes (at most 50 % more rows) and
P-Net's pyramid levels to :func:`bucket_side` sides (at most 12.5 % more): a bounded set of
shapes, each planned once. Calls of fewer rows than a network's floor (:data:`PHOTO_ROWS`,
:data:`MIN_FACE_ROWS`; R-Net and O-Net: their chunk) are padded up to it: a folder's last, partial
step, a single photo and a photo with few faces then reuse the plans of a full step instead of
making a set of their own (counted with the GPU's code path on CPU, each new number of photos per
step met about 80 new convolution shapes: BlazeFace 46, the expression model 21). BlazeFace and
P-Net also take at most :data:`PHOTO_ROWS` photos per call (larger steps run in several calls), so
that steps of more photos (``--image-batch 256``) bring no new shapes either: before, each new
number of photos above the floor met about 50, most of them BlazeFace's.
The CPU keeps exact shapes (no plans there; padding would only cost time). With
:mod:`lrfer.graphs` on, each of these fixed-shape calls off the CPU replays a recorded CUDA graph.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from lrfer import graphs

#: Sizes per octave of :func:`bucket` (batches) and :func:`bucket_side` (image sides).
BATCH_STEPS = 2
SIDE_STEPS = 8

#: Photos per BlazeFace call off the CPU, exactly (fewer are padded up to it, more run in several
#: calls), and the most per P-Net canvas: the default image batch of ``lrfer predict`` on CUDA
#: (``lrfer.cli.DEFAULT_GPU_IMAGE_BATCH``), so that all its steps, the last one too, share one shape.
PHOTO_ROWS = 64
#: Fewest faces in a call of the expression model off the CPU (a 64-photo step of 3-4 faces each fits).
MIN_FACE_ROWS = 256


def bucket(n: int, steps: int = BATCH_STEPS) -> int:
    """Smallest ``m * 2**k >= n`` with ``steps <= m < 2 * steps`` (``n`` itself below ``2 * steps``).

    >>> [bucket(n) for n in (0, 1, 3, 4, 5, 7, 9, 13, 100, 512)]
    [0, 1, 3, 4, 6, 8, 12, 16, 128, 512]
    >>> [bucket(n, steps=4) for n in (7, 8, 9, 11, 100)]
    [7, 8, 10, 12, 112]
    """
    if n < 2 * steps:
        return n
    shift = n.bit_length() - 1 - int(math.log2(steps))  # n = m * 2**shift with steps <= m < 2 * steps
    return -(-n >> shift) << shift


def bucket_side(n: int) -> int:
    """An image side padded to an even :func:`bucket` size (:data:`SIDE_STEPS` per octave).

    >>> [bucket_side(n) for n in (12, 13, 17, 33, 101, 480)]
    [12, 14, 18, 36, 104, 480]
    """
    side = bucket(n, SIDE_STEPS)
    return side + side % 2


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows appended along dim 0 up to ``rows`` (``x`` itself when it has them)."""
    if x.shape[0] >= rows:
        return x
    out = x.new_zeros(rows, *x.shape[1:]).contiguous(memory_format=memory_format_of(x))
    out[: x.shape[0]] = x
    return out


def run_bucketed(
    net: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    x: torch.Tensor,
    min_rows: int = 0,
    max_rows: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``net(x)`` on ``x`` padded to :func:`bucket` rows, and to at least ``min_rows`` (when ``x`` has
    any), outputs cut back to ``len(x)`` rows. With ``max_rows``, in calls of at most that many rows
    (each padded the same way), outputs joined: with ``min_rows == max_rows`` every call has one shape.

    For networks whose rows are independent (inference, batch norm folded or in eval mode).
    """
    n = x.shape[0]
    if max_rows is not None and n > max_rows:
        parts = [run_bucketed(net, part, min_rows) for part in x.split(max_rows)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(outputs) for outputs in zip(*parts))
        return torch.cat(cast("list[torch.Tensor]", parts))  # net gives every part the first one's kind of output
    rows = max(bucket(n), min_rows) if n else 0
    # Only the fixed shapes (a call padded to its floor) are recorded: each recording keeps its own
    # memory pool for the network's life, and a floor-only bucket (the expression model's) would keep
    # one per batch size ever seen above it.
    if n and rows == min_rows and graphs.wanted(x) and isinstance(net, nn.Module):
        replayed = graphs.run(net, x, rows)
        if replayed is not None:
            return replayed
    out = net(pad_rows(x, rows))
    if isinstance(out, tuple):
        return tuple(o[:n] for o in out)
    return out[:n]


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def to_device(values: list[float] | list[int] | list[tuple[float, ...]], device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small tensor of host values on ``device``, copied without waiting for the device's queue.

    ``torch.tensor(values, device="cuda")`` copies from pageable memory with a stream synchronisation:
    the host then waits for every kernel already queued. An asynchronous copy from pageable memory
    is staged at once by the driver, so the host goes on queueing work.
    """
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
