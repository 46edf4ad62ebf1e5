"""Reusable CPU buffers for the large per-photo copies of detection and alignment (float photo,
integral image, P-Net's pyramid level, gray copy).

On CPU, a float copy of a 1920 px photo is about 33 MB. Allocated fresh on every call, glibc maps
it anew, or gives its pages back when it is freed, so each call faults in thousands of zeroed pages
again (about 8,000 for that photo). Kept in a buffer that the next call of the same thread reuses,
it is faulted in once. GPU memory needs none of this: PyTorch's CUDA allocator caches its blocks.

A buffer is lent to one tensor at a time: while the tensor handed out last for a slot is alive
(a :class:`~lrfer.faces.mtcnn.MipVolume` holding it, for instance), or anything made from its memory
(a view such as ``stack_images(...)[0]``, an array from ``integral_image(...).numpy()``), the next
request for that slot gets fresh memory. So two live results never share memory. Buffers larger than
:data:`MAX_REUSED_BYTES` are never kept; :func:`release` frees the calling thread's buffers, or every
thread's (the kept threads of :mod:`lrfer.overlap`, which detect a list's steps, never end).
"""
from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Sequence

import torch

#: Largest buffer kept per slot and thread (64 MiB: the float copy of a 12-megapixel photo is 144 MB,
#: and is allocated fresh each time instead).
MAX_REUSED_BYTES = 64 << 20


class _Buffers(dict):  # type: ignore[type-arg]
    """A thread's buffers: slot -> (flat buffer, weak reference to the tensor it is lent to, users of the
    buffer's memory when nothing else holds it). A dict that a weak reference can point to."""


#: Every live thread's buffers by their id, for ``release(every_thread=True)``; a thread's go when it ends.
_every_thread: weakref.WeakValueDictionary[int, _Buffers] = weakref.WeakValueDictionary()
#: Held to add a thread's buffers to :data:`_every_thread` and to go over them: a thread that starts
#: using buffers while ``release(every_thread=True)`` went over them made it fail ("dictionary changed
#: size during iteration"). A thread's buffers leave it when the thread ends, which the iteration defers.
_every_thread_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    """In a child of ``os.fork``: a lock another thread held at the fork would stay held."""
    global _every_thread_lock
    _every_thread_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_lock_after_fork)


class _Slots(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[str, tuple[torch.Tensor, weakref.ref[torch.Tensor] | None, int | None]] = _Buffers()
        with _every_thread_lock:
            _every_thread[id(self.buffers)] = self.buffers


_slots = _Slots()


def _memory_users(buffer: torch.Tensor) -> int | None:
    """How many tensors (and arrays) use ``buffer``'s memory, as torch counts them; None where torch
    does not say. A view of the tensor handed out keeps the memory but not that tensor: its weak
    reference alone said "free" while the view was still read."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:  # pragma: no cover - a private function: without it the weak reference alone decides
        return None
    return int(count(buffer.untyped_storage()._cdata))


def reusable_empty(
    slot: str, shape: Sequence[int], dtype: torch.dtype = torch.float32, order: Sequence[int] | None = None
) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape``, in this thread's buffer for ``slot`` when that is free.

    ``order``: the dimensions from outermost to innermost in memory (default: contiguous). For
    example ``(0, 2, 3, 1)`` for a ``(N, C, H, W)`` tensor with channels interleaved.

    >>> a = reusable_empty("doc", (2, 3))
    >>> b = reusable_empty("doc", (2, 3))  # a is alive: b gets its own memory
    >>> a.data_ptr() != b.data_ptr()
    True
    >>> del a, b
    >>> reusable_empty("doc", (3, 2), order=(1, 0)).stride()
    (1, 3)
    """
    order = tuple(range(len(shape))) if order is None else tuple(order)
    if sorted(order) != list(range(len(shape))):
        raise ValueError(f"order {order} is not a permutation of the {len(shape)} dimensions")
    memory_shape = [shape[d] for d in order]
    inverse = sorted(range(len(order)), key=order.__getitem__)
    numel = math.prod(shape)
    buffer, holder, alone = _slots.buffers.get(slot, (None, None, None))
    in_use = holder is not None and holder() is not None
    if not in_use and buffer is not None and alone is not None:
        users = _memory_users(buffer)
        assert users is not None  # torch counts users, as it did for alone
        in_use = users > alone  # a view or array of the tensor lent last outlived it
    if in_use or numel * torch.empty(0, dtype=dtype).element_size() > MAX_REUSED_BYTES:  # in every torch >= 2.1
        return torch.empty(memory_shape, dtype=dtype).permute(inverse)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in and out of inference mode
            buffer = torch.empty(numel, dtype=dtype)
        alone = _memory_users(buffer)  # measured, not assumed: torch versions count differently
    out = buffer[:numel].view(memory_shape).permute(inverse)
    _slots.buffers[slot] = (buffer, weakref.ref(out), alone)
    return out


def release(every_thread: bool = False) -> None:
    """Free the calling thread's buffers, or with ``every_thread`` every thread's: also those of the kept
    threads that ``Recognizer.predict`` scores a list's steps on (:mod:`lrfer.overlap`). The tensors still
    using them keep their memory; a thread using a slot meanwhile gets fresh memory for it."""
    if not every_thread:
        _slots.buffers.clear()
        return
    with _every_thread_lock:
        every = list(_every_thread.values())
    for buffers in every:
        buffers.clear()
