"""Several steps of work in flight at once, each on a thread and (on a GPU) a CUDA stream of its own.

A step of ``lrfer predict`` on a GPU reads values back from the device several times (the numbers
of candidate boxes and of faces, NMS's greedy pass, the results): each time the host waits until
the GPU has run every kernel queued, and the GPU then idles while the host prepares and queues the
next ones. With two steps in flight, on two threads that each queue on a CUDA stream of their own,
one step's kernels can run while the other's thread does its host work (Python, kernel launches,
copies), and the caller writes rows meanwhile. Torch releases the GIL inside its operators and
while it waits for the device, so the threads interleave there.

The threads are kept for the rest of the process, per device one pool of as many as the most
streams asked (a call keeps at most its own ``streams`` steps in flight, each taken by whichever
thread is free; one pool per number of streams kept 2 + 3 + 4 threads, each with its buffers, for
lists whose streams were cut to their 2, 3 and 4 steps; threads pinned to a step in turn made a
step wait behind another caller's long one while a thread idled), and reused by every later call:
cuDNN keeps its execution plans per thread (PyTorch's plan cache is ``thread_local``: plans are not
thread-safe across all engines), so a new thread would pay a plan for each convolution shape again
(64-69 ms each on an H100, stop 33). Idle, they wait on a queue.
"""
from __future__ import annotations

import functools
import itertools
import numbers
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


class _KeptThreads(ThreadPoolExecutor):
    """A device's kept threads, started as work comes, whose number can grow."""

    def grow(self, size: int) -> None:
        """Start threads as work comes up to ``size`` in all. The pool used to be replaced by a larger one
        instead: steps queued on the old one waited there behind other callers' long steps while the new
        one's threads idled, and its threads ended with their cuDNN plans."""
        self._max_workers = max(self._max_workers, size)


#: Per device, its pool of kept threads (as many as the most streams asked so far).
_pools: dict[str, _KeptThreads] = {}
_pools_lock = threading.Lock()
#: (waiter, device): how many nested :func:`overlapped` calls on ``waiter``'s kept threads wait now for
#: steps on ``device``'s. Kept acyclic (a call that would close a cycle runs its steps itself), so that
#: no device's threads wait, through others', for their own.
_waits: Counter[tuple[str, str]] = Counter()
_waits_lock = threading.RLock()  # reentrant: the cyclic GC may close a nested call's generator while it is held
#: On a kept thread: ``stop``, the event of the step it runs; ``device``, the device whose pool it is in.
_this_thread = threading.local()


def _forget_threads_after_fork() -> None:
    """In a child of ``os.fork``: the kept threads were not copied, but their executors were, and such an
    executor counts its idle threads as there; work given to it would wait forever (seen: a child
    that overlapped steps after its parent had). The child makes threads of its own when it needs them."""
    global _pools_lock, _waits_lock
    _pools.clear()
    _pools_lock = threading.Lock()
    _waits.clear()
    _waits_lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


class StepCancelled(Exception):
    """Raised by :func:`stop_if_cancelled` in a step of :func:`overlapped` whose caller has stopped."""


def stop_if_cancelled() -> None:
    """In a step of :func:`overlapped` whose caller has stopped (an error, Ctrl-C, SIGTERM, ``close()``),
    raise :class:`StepCancelled`; anywhere else, nothing. Long work calls it between its parts (the
    detectors before each group of photos, ``predict`` between its stages), so that an interrupted
    run stops within a part instead of scoring the rest of its batches."""
    stop = getattr(_this_thread, "stop", None)
    if stop is not None and stop.is_set():
        raise StepCancelled


def check_streams(streams: object) -> int:
    """``streams`` as an int >= 1 (a NumPy integer too, as ``batch_size`` takes), else ValueError.

    >>> import numpy as np
    >>> check_streams(np.int64(2))
    2
    """
    if isinstance(streams, bool) or not isinstance(streams, numbers.Integral) or streams < 1:
        raise ValueError(f"streams must be an integer >= 1 (steps in flight at once); got {streams!r}")
    return int(streams)


def threads_per_stream(streams: int) -> int:
    """The calling thread's torch CPU threads shared among ``streams`` steps in flight, at least 1 each:
    GNU OpenMP's threads spin between the many small parallel regions of a step, so two steps on one
    thread each used 2 cores better than one step on two (``lrfer predict``, stop 34).

    >>> threads_per_stream(torch.get_num_threads())
    1
    """
    return max(1, torch.get_num_threads() // streams)


def auto_streams(device: torch.device | str) -> int:
    """Steps in flight that :meth:`lrfer.Recognizer.predict` takes for a long list by default: on CPU 2
    when the calling thread runs torch on 2 threads or more (each step then takes half of them), else 1
    (a caller who chose one thread keeps one); on CUDA 1, until a GPU has measured more.

    >>> auto_streams("cuda")
    1
    """
    if torch.device(device).type == "cuda":
        return 1
    return 2 if torch.get_num_threads() >= 2 else 1


def streams_or_auto(streams: object, device: torch.device | str) -> int:
    """``streams`` as given (:func:`check_streams`), or :func:`auto_streams` for ``None``: the default of
    :meth:`lrfer.Recognizer.predict` and :meth:`~lrfer.Recognizer.predict_video`.

    >>> streams_or_auto(3, "cpu"), streams_or_auto(None, "cuda")
    (3, 1)
    """
    return auto_streams(device) if streams is None else check_streams(streams)


def overlapped(work: Callable[[T], R], items: Iterable[T], streams: int, device: torch.device | str,
               threads: int | None = None) -> Generator[R, None, None]:
    """``work(item)`` for each of ``items``, the results in the items' order, up to ``streams`` at once.

    ``streams`` 1: in the calling thread, one after the other. More: on ``streams`` threads, each
    with its own CUDA stream when ``device`` is a CUDA device (threads kept for later calls, as many
    as the most streams asked for the device; a step that itself calls this for a device whose kept
    threads wait, directly or through another device's and for whichever caller, for those of the
    step's own device, its own among them, runs its items in its own thread). Items
    are taken from ``items`` in the calling thread only (an iterator that is not thread-safe, such
    as a DataLoader's, is fine), and the next one is started before a result is handed out, so the
    threads go on working while the caller uses it. Each step runs torch on ``threads`` CPU threads
    (default: the calling thread's count; ``torch.set_num_threads`` sets one thread's count under
    OpenMP, and a kept thread keeps whatever it had). An exception of ``work`` is raised where its
    result would have come, and so is one raised taking an item (after the results of the items
    before it, as with one stream). Then, as when the caller stops early (``close()``, Ctrl-C, SIGTERM),
    nothing more starts and the exception leaves at once: the steps already running end on their
    threads at their next :func:`stop_if_cancelled`, their results dropped (Python's exit waits for
    them: a part of a batch, not the batch).

    >>> list(overlapped(lambda x: x * x, range(5), streams=2, device="cpu"))
    [0, 1, 4, 9, 16]
    """
    check_streams(streams)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # a kept thread's current device is its own, not the caller's
        device = torch.device("cuda", torch.cuda.current_device())
    waiter: str | None = getattr(_this_thread, "device", None)  # on a kept thread, the device of its pool
    if streams == 1 or (waiter is not None and not _start_waiting(waiter, str(device))):
        yield from map(work, items)
        return
    try:
        yield from _on_kept_threads(work, items, streams, device, threads)
    finally:
        if waiter is not None:
            _stop_waiting(waiter, str(device))


def _start_waiting(waiter: str, device: str) -> bool:
    """Note that a kept thread of ``waiter`` is to wait for steps on ``device``'s kept threads, unless those
    wait, directly or through other devices' (for any caller), for ``waiter``'s (its own device among
    them): then False, and the nested call runs its steps itself. Two callers nesting in opposite
    directions (a CPU step calling for CUDA, a CUDA step calling for the CPU) left every thread of both
    pools waiting for a step queued behind the other pool's."""
    with _waits_lock:
        if _reaches(device, waiter):
            return False
        _waits[waiter, device] += 1
        return True


def _stop_waiting(waiter: str, device: str) -> None:
    """Undo one :func:`_start_waiting` that returned True."""
    with _waits_lock:
        _waits[waiter, device] -= 1
        if _waits[waiter, device] <= 0:
            del _waits[waiter, device]


def _reaches(start: str, goal: str) -> bool:
    """Whether ``start`` is ``goal`` or its kept threads wait, through :data:`_waits`, for ``goal``'s."""
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        if here == goal:
            return True
        for waiter, device in list(_waits):  # a copy: a generator closed by the GC meanwhile changes it
            if waiter == here and device not in seen:
                seen.add(device)
                todo.append(device)
    return False


def _on_kept_threads(work: Callable[[T], R], items: Iterable[T], streams: int, device: torch.device,
                     threads: int | None) -> Generator[R, None, None]:
    """:func:`overlapped` on ``device``'s kept threads."""
    stop = threading.Event()
    caller_stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    caller, callers_threads = threading.get_ident(), torch.get_num_threads()
    run_step = functools.partial(_as_the_caller_set, work, caller_stream, (threads or callers_threads, callers_threads),
                                 stop, str(device))
    source = iter(items)
    started: deque[Future[R]] = deque()
    failed: list[Exception] = []  # an error taking an item: raised where that item's result would have come

    def take(count: int) -> None:
        if not failed:
            try:
                started.extend(_submit(device, streams, run_step, item) for item in itertools.islice(source, count))
            except Exception as err:  # noqa: BLE001 - not an interrupt (BaseException): that one leaves at once
                failed.append(err)

    try:  # the first steps too: an interrupt while the second item is taken cancels the first
        take(streams)
        while started:
            result = started[0].result()
            started.popleft()
            take(1)
            yield result
        if failed:
            raise failed[0]
    finally:
        stop.set()  # those running stop at their next stop_if_cancelled()
        for step in started:
            step.cancel()  # those not running yet
        if threads and threads != callers_threads and threading.get_ident() == caller:
            # torch.set_num_threads on a kept thread also set the count of threads that first use torch
            # from now on (torch's process-wide default): the caller's count again, its own unchanged
            torch.set_num_threads(callers_threads)


def _default_for_new_threads(count: int) -> None:
    """Put back ``count`` as the torch thread count of threads that first use torch from now on.

    ``torch.set_num_threads`` also sets that process-wide default: set on a kept thread, a thread the
    user started meanwhile ran torch on one thread for good. Set again from a thread that ends at once,
    the default is back and the kept thread's own count stays."""
    setter = threading.Thread(target=torch.set_num_threads, args=(count,), name="lrfer-torch-threads-default")
    setter.start()
    setter.join()


def _submit(device: torch.device, streams: int, fn: Callable[[T], R], item: T) -> Future[R]:
    """``fn(item)`` on ``device``'s kept threads, at least ``streams`` of them (threads start as work
    comes, and take the steps queued in the order given). A pool too small grows: the threads it adds
    take the steps already queued too."""
    key = str(device)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _KeptThreads(streams, thread_name_prefix=f"lrfer-stream-{device}",
                                              initializer=use_own_stream, initargs=(device,))
        pool.grow(streams)
        return pool.submit(fn, item)


#: The streams (``cuda_stream`` handles) that kept threads queue on: :mod:`lrfer.graphs` records on none
#: of them (torch hands out its 32 pooled streams per device in turn, so a later ``torch.cuda.Stream()``
#: can be a kept thread's, and that thread's work would join the recording).
own_streams: set[int] = set()


def use_own_stream(device: torch.device) -> None:
    """Make the calling thread queue its CUDA work on a new stream of ``device`` (nothing elsewhere)."""
    if device.type == "cuda":
        stream = torch.cuda.Stream(device=device)
        own_streams.add(stream.cuda_stream)
        torch.cuda.set_stream(stream)


def _as_the_caller_set(work: Callable[[T], R], caller_stream: torch.cuda.Stream | None, threads: tuple[int, int],
                       stop: threading.Event, device: str, item: T) -> R:
    """``work(item)`` on a kept thread, with ``threads[0]`` torch CPU threads (the caller's count, ``threads[1]``,
    unless it said otherwise: ``torch.set_num_threads`` sets the calling thread's count only, and a kept thread
    keeps the one it had), its CUDA work queued
    after what the caller's CUDA stream holds now (a model loaded since this thread started has its
    weights copied and folded there, and streams made by torch do not wait for another by
    themselves), ``stop`` for :func:`stop_if_cancelled`, and ``device`` (the pool's) for a nested :func:`overlapped`."""
    if stop.is_set():  # the caller has stopped (and may have put torch's default count back)
        raise StepCancelled
    step_threads, callers_threads = threads
    if torch.get_num_threads() != step_threads:
        torch.set_num_threads(step_threads)
        _default_for_new_threads(callers_threads)
    if caller_stream is not None:
        torch.cuda.current_stream(caller_stream.device).wait_stream(caller_stream)
    _this_thread.stop, _this_thread.device = stop, device
    try:
        return work(item)
    finally:
        _this_thread.stop, _this_thread.device = None, None
