"""CUDA graphs for the networks that run in fixed shapes off the CPU (opt-in, not yet measured).

Off the CPU, BlazeFace, R-Net, O-Net and the expression model run in a few fixed input shapes
(:mod:`lrfer.shapes`: 64 photos, 512 crops, 256 faces). Each call launches tens to hundreds of
kernels, and each launch costs the host microseconds (a cuDNN convolution more): stop 20's profile
of ``lrfer predict`` on an H100 found the steady state bound by the host that launches kernels, not by
the GPU. A CUDA graph records one call's kernels once per input shape and replays them with one
launch.

Off by default until a GPU has measured it: turn it on with ``LRFER_CUDA_GRAPHS=1`` in the environment
or :func:`enable`. On the CPU it changes nothing. A network that cannot be recorded (it reads a value
back to the host, say) runs as before, with one warning.

Each recorded call owns its input and output buffers: a call copies its rows into the input (the rows
up to the recorded shape zero, as :func:`lrfer.shapes.pad_rows` makes them), replays, and copies its
rows of the outputs out, under the recording's lock, so calls from several threads (and CUDA streams)
take turns and never see another call's rows.

A recording reads the network's weights where they were when it was recorded: after replacing them
(``net.to(...)``, ``.half()``, ``load_state_dict(..., assign=True)``), call :func:`forget` for that
network. lrfer changes no network's weights after its first call.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: The environment variable that turns CUDA graphs on at import ("1": on).
ENV = "LRFER_CUDA_GRAPHS"
#: Eager calls on a side stream before recording: cuDNN picks its algorithms, lazy buffers are made.
WARMUP_CALLS = 2

Outputs = Any  # a tensor or a tuple of tensors, as the network returns


class Replayable(Protocol):
    def replay(self) -> None: ...


#: capture(net, inputs) -> (graph, outputs): a graph whose ``replay()`` recomputes ``net(inputs)``
#: into ``outputs``, the same tensors each time. :func:`capture_cuda` on a GPU; tests swap in their own.
Capture = Callable[[nn.Module, torch.Tensor], "tuple[Replayable, Outputs]"]

_enabled = os.environ.get(ENV, "").strip() == "1"
#: Device types whose calls are recorded (tests add "cpu" with a capture of their own).
DEVICE_TYPES = frozenset({"cuda"})


def enabled() -> bool:
    """Whether fixed-shape network calls off the CPU run as CUDA graphs."""
    return _enabled


def enable(on: bool = True) -> None:
    """Turn CUDA graphs on (or off) for every later call in this process."""
    global _enabled
    _enabled = bool(on)


def wanted(x: torch.Tensor) -> bool:
    """Whether a network call on ``x`` runs as a recorded graph."""
    return _enabled and x.device.type in DEVICE_TYPES


@dataclass
class _Recorded:
    graph: Replayable
    inputs: torch.Tensor
    outputs: Outputs
    done: Any = None  # a CUDA event after the last call's copies: the next call's stream waits for it
    dirty_rows: int = 0  # rows of ``inputs`` that hold a call's data (the rest are zero)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Per network: recorded calls by :func:`_key` (None: recording failed, the call runs eagerly).
_recorded: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], _Recorded | None]] = weakref.WeakKeyDictionary()
_table_lock = threading.Lock()
#: One recording at a time in a process (CUDA's rule for torch.cuda.graph).
_capture_lock = threading.Lock()


def run(net: nn.Module, x: torch.Tensor, rows: int, capture: Capture | None = None) -> Outputs | None:
    """``net(x padded with zero rows to rows)``, cut back to ``len(x)`` rows, as a replayed graph
    (recorded on the first call of each shape and setting); None where that call could not be
    recorded: the caller runs it eagerly (:func:`lrfer.shapes.run_bucketed`)."""
    key = _key(net, x, rows)
    with _table_lock:
        table = _recorded.setdefault(net, {})
    if key not in table:
        with _capture_lock:
            if key not in table:  # another thread may have recorded it meanwhile
                table[key] = _record(net, x, rows, capture or capture_cuda)
    recorded = table[key]
    return None if recorded is None else _replay(recorded, x)


def _replay(recorded: _Recorded, x: torch.Tensor) -> Outputs:
    n = x.shape[0]
    with recorded.lock:
        stream = torch.cuda.current_stream(x.device) if x.device.type == "cuda" else None
        if recorded.done is not None and stream is not None:
            stream.wait_event(recorded.done)  # the last call, maybe on another stream, has copied its rows out
        recorded.inputs[:n].copy_(x)
        if recorded.dirty_rows > n:
            recorded.inputs[n : recorded.dirty_rows].zero_()
        recorded.dirty_rows = n
        try:
            recorded.graph.replay()
            return _rows(recorded.outputs, n)
        finally:  # also when the copy out fails (out of memory): the replay is queued all the same
            if stream is not None:
                if recorded.done is None:
                    recorded.done = torch.cuda.Event()
                recorded.done.record(stream)


def _rows(outputs: Outputs, n: int) -> Outputs:
    """The first ``n`` rows of a tensor or of each tensor of a tuple, copied out of the graph's buffers."""
    if isinstance(outputs, tuple):
        return tuple(_rows(o, n) for o in outputs)
    return outputs[:n].clone()


def _record(net: nn.Module, x: torch.Tensor, rows: int, capture: Capture) -> _Recorded | None:
    from lrfer.shapes import pad_rows

    inputs = pad_rows(x, rows).clone(memory_format=torch.preserve_format)
    try:
        graph, outputs = capture(net, inputs)
    except Exception as err:  # noqa: BLE001 - any failure to record leaves the eager call
        logger.warning("CUDA graph of %s on %s inputs could not be recorded (%s): it runs without one",
                       type(net).__name__, tuple(inputs.shape), str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    return _Recorded(graph, inputs, outputs, dirty_rows=x.shape[0])


def _key(net: nn.Module, x: torch.Tensor, rows: int) -> tuple[Any, ...]:
    """What a recording depends on besides the network: shape, dtype, layout and device of the input,
    the network's mode (train or eval: dropout, batch norm) and the precision settings that pick its
    kernels (autocast, TF32)."""
    from lrfer.shapes import memory_format_of

    return (rows, tuple(x.shape[1:]), x.dtype, memory_format_of(x), str(x.device), torch.is_inference_mode_enabled(),
            torch.is_grad_enabled(), net.training, *precision_settings(x.device.type))


def precision_settings(device_type: str) -> tuple[Any, ...]:
    """Autocast's state on ``device_type`` and the float32 precision of cuDNN convolutions and of matrix
    products (TF32 or not)."""
    autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the legacy flags may refuse to be read
        return (autocast, conv.fp32_precision, getattr(matmul, "fp32_precision", None))
    return (autocast, torch.backends.cudnn.allow_tf32, matmul.allow_tf32)


@contextlib.contextmanager
def autocast_without_cache(device_type: str) -> Iterator[None]:
    """The caller's autocast, without its cache of cast weights: a graph must not keep a cast weight
    that the cache frees when the caller's autocast region ends (PyTorch's rule for graphs)."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    with torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=False):
        yield


class EagerReplay:
    """A stand-in for a CUDA graph on any device: ``replay()`` runs the network again on the recorded
    inputs into the recorded outputs (the same tensors each time), as a graph's replay does. No speed
    gained: for tests and for counting what a step leaves outside the recordings on the CPU."""

    def __init__(self, net: nn.Module, inputs: torch.Tensor) -> None:
        self.net, self.inputs = weakref.ref(net), inputs  # as a CUDA graph, no reference to the network
        first = net(inputs)
        self.outputs: Outputs = tuple(o.clone() for o in first) if isinstance(first, tuple) else first.clone()
        self.replays = 0

    def replay(self) -> None:
        net = self.net()
        if net is None:
            raise RuntimeError("the recorded network no longer exists")
        self.replays += 1
        fresh = net(self.inputs)
        for kept, new in zip(_as_tuple(self.outputs), _as_tuple(fresh)):
            kept.copy_(new)


def capture_eager(net: nn.Module, inputs: torch.Tensor) -> tuple[EagerReplay, Outputs]:
    """A :data:`Capture` that makes an :class:`EagerReplay`."""
    graph = EagerReplay(net, inputs)
    return graph, graph.outputs


def _as_tuple(outputs: Outputs) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def capture_stream(device: torch.device | str) -> Any:
    """A side stream of ``device`` that no kept scoring thread (:data:`lrfer.overlap.own_streams`) queues
    on: torch hands out its pooled streams in turn, and a thread's work on the stream being recorded
    would join the recording (never run eagerly; replayed with every later call)."""
    from lrfer.overlap import own_streams

    stream = torch.cuda.Stream(device=device)
    for _ in range(64):  # the pool holds 32 streams per device and priority
        if stream.cuda_stream not in own_streams:
            break
        stream = torch.cuda.Stream(device=device)
    return stream


def capture_cuda(net: nn.Module, inputs: torch.Tensor) -> tuple[Replayable, Outputs]:
    """Record ``net(inputs)`` as a CUDA graph, after :data:`WARMUP_CALLS` eager calls on a side stream."""
    device = inputs.device
    caller = torch.cuda.current_stream(device)
    side = capture_stream(device)
    side.wait_stream(caller)
    try:
        with autocast_without_cache(device.type):
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    net(inputs)
            caller.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                outputs = net(inputs)
    finally:
        # torch.cuda.graph's __exit__ ends the capture before it restores the stream: when ending raises
        # (a capture that read back to the host), the thread would go on queueing on ``side``.
        if torch.cuda.current_stream(device) != caller:
            with torch.cuda.device(device):
                torch.cuda.set_stream(caller)
    return graph, outputs


def forget(net: nn.Module | None = None) -> None:
    """Drop the recorded graphs of ``net`` (of every network if None), and their memory."""
    with _table_lock:
        if net is None:
            _recorded.clear()
        else:
            _recorded.pop(net, None)
