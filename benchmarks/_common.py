"""Helpers shared by the benchmark scripts: timing, machine description, memory."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; a ValueError (e.g. ``--device cuda`` without a GPU) ends it with its
    message instead of a traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


def print_child_row(command: list[str], label: str) -> None:
    """Run one configuration's child process (each in a fresh process, for its own peak memory) and print
    the table row it writes; end the benchmark with its error output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{label} failed:\n{result.stderr}")
    print(result.stdout.strip(), flush=True)


def machine() -> str:
    """CPU model and cores, plus the GPU when present."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int = 2, runs: int = 5,
                   min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn`` after ``warmup`` calls (``runs`` timed calls, or more until ``min_seconds``)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start_all < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 9,
                        sample_seconds: float = 0.1) -> dict[str, list[float]]:
    """Seconds per call of each ``fn``, timed in turn, round after round (one sample per fn a round).

    On a shared machine whose speed drifts, interleaving puts every fn under the same conditions:
    ratios between them are taken per round. A sample repeats its fn until ``sample_seconds``
    (calls counted at warm-up), so short calls are not lost in timer noise.
    """
    repeats = {}
    for name, fn in fns.items():
        fn()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        repeats[name] = max(1, round(sample_seconds / max(time.perf_counter() - t0, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeats[name]):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) / repeats[name])
    return samples


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; monotonic): Linux's ``VmHWM``.

    Not ``ru_maxrss`` where ``VmHWM`` exists: a process started by ``subprocess`` inherits its parent's
    resident memory at the start as its own ``ru_maxrss`` (Linux keeps the larger of the two across
    ``exec``), so a child started by a benchmark that holds a model and decoded frames "peaked" at the
    benchmark's size, whatever it did itself.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: For a child's ``python -c`` code: makes :func:`peak_rss_mb` importable there.
IMPORT_PEAK_RSS = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from _common import peak_rss_mb"


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
