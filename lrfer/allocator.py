"""glibc malloc and the memory that inference frees between batches.

:func:`raise_adaptive_thresholds` (done by ``lrfer.load`` on CPU) sets no option: it frees one large
block, as glibc's own adaptive thresholds expect. :func:`keep_freed_memory` sets options (opt-in).

Inference allocates feature maps of a few MiB per call. With glibc's default options such a block is
a fresh memory mapping, or sits at the top of the heap and is trimmed on free, until the process has
freed a larger block: until then every call faults its pages in again. Measured on the 2-core CI
machine on 2026-11-26 before :func:`raise_adaptive_thresholds` existed, alternating processes with and
without :func:`keep_freed_memory` (``python benchmarks/allocator.py``, 6 rounds, three runs):
``predict_crops`` of the default model 1.17x, 1.14x and 1.30x faster (4,614 -> 5,601, 4,537 ->
5,054 and 4,338 -> 5,858 faces/s), ``lrfer predict`` on 300 photos of 480 px 1.07x and 1.18x, a
1920 px photo 0.99x, 1.03x and 1.04x. Since ``lrfer.load`` raises the adaptive thresholds, the
options add nothing measurable (5,689 against 5,612 faces/s, 0.98x, 08:50; per-round medians 0.99x,
0.99x and 1.01x for the three measures at 10:33-10:36), so ``lrfer predict`` no longer sets them.

The options change the whole process's allocator: blocks up to :data:`MMAP_THRESHOLD` come from the
heap, and up to :data:`TRIM_THRESHOLD` of free heap stays mapped (against 31 and 62 MiB once the
adaptive thresholds have risen). A library should not change its caller's allocator options
unasked, so :func:`keep_freed_memory` is opt-in. The same effect without code: ``MALLOC_MMAP_THRESHOLD_=268435456
MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment, or another allocator (jemalloc, tcmalloc)
via ``LD_PRELOAD``.

Photos of many sizes are another matter: what their steps free stays in glibc's heap, between blocks
still in use, and the process's resident memory kept rising (``Recognizer.predict`` on 400 photos of
200-1600 px, random aspect, ``python benchmarks/many_sizes.py``, 2026-11-29, 2 threads: 1,104 MB after
100 photos, 1,523 MB after 400, against a flat 560 MB with one size). :func:`trim_if_grown`, called
after each step, hands that memory back with ``malloc_trim(0)`` once resident memory has grown by
:data:`TRIM_AFTER_GROWTH` since it last did: 1,013-1,084 MB from 100 to 400 photos (about 40 trims,
36 s against 33 s: the next steps fault trimmed pages in again; at 512 MiB, 1,407 MB after 400). A run
of one size never grows that much after its first steps, so it never trims (22 s both ways).
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from functools import lru_cache
from typing import Any, Callable

logger = logging.getLogger("lrfer")

#: Blocks up to this size come from the heap, not from their own mapping (glibc: 128 KiB, rising
#: to at most 32 MiB as large blocks are freed).
MMAP_THRESHOLD = 256 << 20
#: Free memory kept at the top of the heap before it is returned to the system (glibc: 128 KiB).
TRIM_THRESHOLD = 1 << 30
#: Environment variables by which the allocator or its options are already chosen: left alone then.
ALLOCATOR_ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                         "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES", "LD_PRELOAD")
#: ``mallopt`` parameter numbers (<malloc.h>).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: The block that :func:`raise_adaptive_thresholds` allocates and frees: just under 32 MiB, the cap
#: of glibc's adaptive mmap threshold on 64-bit systems.
ADAPTIVE_BLOCK_BYTES = 31 << 20

#: Growth of resident memory since :func:`trim_if_grown` last trimmed (or first looked) past which it
#: trims again. One step of a 1920x1080 photo leaves well under this behind; a run over photos of
#: many sizes reaches it every few dozen photos.
TRIM_AFTER_GROWTH = 256 << 20

_thresholds_raised = False
_keeping_freed = False
#: Resident bytes right after the last trim, or the lowest seen at a step's end before any: the
#: level that :data:`TRIM_AFTER_GROWTH` is counted from.
_rss_after_trim: int | None = None
_trim_lock = threading.Lock()


def raise_adaptive_thresholds() -> bool:
    """Allocate and free one :data:`ADAPTIVE_BLOCK_BYTES` block, once per process, on glibc. Returns
    whether it did.

    glibc adapts its malloc to the program: once a block large enough to get its own mapping is freed,
    blocks up to that size come from the heap (the mmap threshold rises to it, at most 32 MiB) and
    twice that much free heap stays mapped (the trim threshold). Whether a process had freed such a
    block before scoring decided whether each batch's feature maps reused memory or faulted it in
    again: the default model's ``predict_crops`` on 1,024 crops took 0 or about 26,000 page faults
    per call, 5,100-5,800 or 4,000-4,500 faces/s (2 cores, 2026-11-26), from one process to the next.
    Freeing this block first makes every process the first kind, as freeing any 31 MiB array would.
    No option is set: thresholds set explicitly (``mallopt``, :func:`keep_freed_memory`, ``MALLOC_*``
    variables, ``GLIBC_TUNABLES``) switch the adaptation off, and another allocator (``LD_PRELOAD``)
    has none; there this costs one allocation and changes nothing.
    """
    global _thresholds_raised
    if _thresholds_raised or not _on_glibc():
        return False
    _thresholds_raised = True
    import numpy as np

    block = np.empty(ADAPTIVE_BLOCK_BYTES, dtype=np.uint8)
    del block
    logger.debug("freed a %d-byte block: glibc's adaptive malloc thresholds rise to it", ADAPTIVE_BLOCK_BYTES)
    return True


def _on_glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def _allocator_configured() -> bool:
    """Whether the environment chose the allocator or its options, or the C library is not glibc."""
    return any(os.environ.get(name) for name in ALLOCATOR_ENVIRONMENT) or not _on_glibc()


def keep_freed_memory() -> bool:
    """Set :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` in this process's glibc malloc, unless
    the environment already configures the allocator (:data:`ALLOCATOR_ENVIRONMENT`). Returns
    whether they were set: never off glibc (macOS, Windows, musl), where nothing changes.

    >>> import lrfer
    >>> lrfer.keep_freed_memory()  # doctest: +SKIP
    True
    """
    if _allocator_configured():
        return False
    mallopt = _mallopt()
    if mallopt is None:  # pragma: no cover - glibc has it
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if done:
        global _keeping_freed
        _keeping_freed = True  # asked for: trim_if_grown leaves the freed memory alone
        logger.debug("malloc keeps freed memory (mmap threshold %d, trim threshold %d)", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return done


def _mallopt() -> Any:
    """This process's C library ``mallopt``, or None."""
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover
        return None


def trim_if_grown(growth: int = TRIM_AFTER_GROWTH) -> bool:
    """Return the free memory of glibc's heap to the system (``malloc_trim(0)``) if this process's
    resident memory has grown by more than ``growth`` bytes since the last time this did (or since
    the lowest it saw before). Returns whether it trimmed. Called by ``Recognizer.predict`` after each
    step: cheap (one read of ``/proc/self/statm``) when nothing is trimmed.

    Does nothing where glibc has no ``malloc_trim`` or resident memory cannot be read (macOS, Windows,
    musl), where the environment chose the allocator or its options (:data:`ALLOCATOR_ENVIRONMENT`),
    and after :func:`keep_freed_memory`, which asks for freed memory to be kept.
    """
    global _rss_after_trim
    trim = _malloc_trim()
    if trim is None or _keeping_freed or _allocator_configured():
        return False
    rss = resident_bytes()
    if rss is None:
        return False
    with _trim_lock:  # steps end on several threads: one trim, one level
        if _rss_after_trim is None or rss < _rss_after_trim:
            _rss_after_trim = rss
            return False
        if rss - _rss_after_trim <= growth:
            return False
        trim(0)
        _rss_after_trim = resident_bytes() or rss
    logger.debug("malloc_trim: resident memory %d -> %d bytes", rss, _rss_after_trim)
    return True


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (``/proc/self/statm``), or None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


@lru_cache(maxsize=1)
def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, or none loaded by name)."""
    if not _on_glibc():
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - glibc has it
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]
