"""lrfer.allocator: glibc malloc options for batch inference (opt-in), and the adaptive thresholds that `lrfer.load` raises."""
from __future__ import annotations

from pathlib import Path

import pytest

from lrfer import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture()
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(allocator, "_mallopt", lambda: fake.mallopt)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in allocator.ALLOCATOR_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return fake


def test_sets_both_thresholds_on_glibc(libc: FakeLibc) -> None:
    assert allocator.keep_freed_memory() is True
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                          (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]


@pytest.mark.parametrize("variable", ["GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD"])
def test_leaves_an_allocator_the_environment_chose(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "glibc.malloc.check=0" if variable == "GLIBC_TUNABLES" else "1")
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_does_nothing_off_glibc(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_neither_lrfer_predict_nor_the_python_api_sets_malloc_options(libc: FakeLibc, tmp_path: Path) -> None:
    """The options are opt-in everywhere: since lrfer.load raises glibc's adaptive thresholds they
    measured 1.01x on `lrfer predict` (benchmarks/allocator.py), so the command no longer sets them."""
    import cv2
    import numpy as np

    import lrfer
    from lrfer.cli import main

    cv2.imwrite(str(tmp_path / "face.png"), np.full((48, 48, 3), 128, dtype=np.uint8))
    lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None).predict(str(tmp_path / "face.png"))
    assert libc.calls == []
    assert main(["predict", str(tmp_path), "--detector", "none", "--workers", "0", "--quiet",
                 "--out", str(tmp_path / "rows.csv")]) == 0
    assert (tmp_path / "rows.csv").read_text().count("\n") == 2  # header and the face: the command ran
    assert libc.calls == []


# ------------------------------------------------------------------ glibc's adaptive thresholds
BATCH_LOOP = """
import resource, sys
import numpy as np
from lrfer import allocator
if sys.argv[1] == "raised":
    assert allocator.raise_adaptive_thresholds()
MiB = 1 << 20
first = np.empty(12 * MiB, np.uint8); first.fill(1); del first  # the largest block freed so far: 12 MiB
faults = []
for _ in range(3):  # a batch: three 12 MiB feature maps, written, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [np.empty(12 * MiB, np.uint8) for _ in range(3)]
    for m in maps:
        m.fill(1)
    del maps, m
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _batch_faults(mode: str) -> list[int]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in allocator.ALLOCATOR_ENVIRONMENT}
    proc = subprocess.run([sys.executable, "-c", BATCH_LOOP, mode], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return [int(v) for v in proc.stdout.split()]


def test_after_raising_the_thresholds_batches_reuse_their_memory() -> None:
    if allocator.platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    plain = _batch_faults("plain")
    if min(plain[1:]) < 500:
        pytest.skip(f"this C library keeps freed memory anyway (page faults per batch: {plain})")
    raised = _batch_faults("raised")
    assert max(raised[1:]) < 100, f"page faults per batch after raise_adaptive_thresholds: {raised} (without: {plain})"


def test_raises_the_thresholds_once_and_only_where_it_should(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_thresholds_raised", False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.raise_adaptive_thresholds() is False
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert allocator.raise_adaptive_thresholds() is True
    assert allocator.raise_adaptive_thresholds() is False  # once per process
    assert libc.calls == []  # no malloc option set


def test_loading_on_cpu_raises_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    import lrfer
    import lrfer.recognizer  # not one of lrfer's lazy attributes: run alone, this test found no lrfer.recognizer

    calls = []
    monkeypatch.setattr(lrfer.recognizer, "raise_adaptive_thresholds", lambda: calls.append(1))
    lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)
    assert calls == [1]


# ------------------------------------------------------------------ memory freed by photos of many sizes
class FakeTrim:
    """``malloc_trim`` and resident memory: a trim brings resident memory down to ``after_trim``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after_trim: int) -> None:
        self.rss, self.after_trim, self.trims = 0, after_trim, 0
        monkeypatch.setattr(allocator, "_malloc_trim", lambda: self.trim)
        monkeypatch.setattr(allocator, "resident_bytes", lambda: self.rss)
        monkeypatch.setattr(allocator, "_rss_after_trim", None)
        monkeypatch.setattr(allocator, "_keeping_freed", False)
        for name in allocator.ALLOCATOR_ENVIRONMENT:
            monkeypatch.delenv(name, raising=False)

    def trim(self, pad: int) -> int:
        assert pad == 0
        self.trims += 1
        self.rss = self.after_trim
        return 1


MiB = 1 << 20


def test_trims_once_resident_memory_grew_past_the_margin_since_the_last_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Photos of many sizes left what their steps freed in glibc's heap: resident memory of a 400-photo
    `predict` rose from 1,192 to 1,538 MB (one size: flat at 574 MB). Trimming after every step would
    make a run of one size fault its memory in again, so only growth past the margin trims."""
    fake = FakeTrim(monkeypatch, after_trim=500 * MiB)
    margin = allocator.TRIM_AFTER_GROWTH
    fake.rss = 600 * MiB
    assert allocator.trim_if_grown() is False  # the first look sets the level
    fake.rss = 550 * MiB
    assert allocator.trim_if_grown() is False  # lower: the level follows it down
    for rss in (550 * MiB + margin, 560 * MiB, 550 * MiB + margin):
        fake.rss = rss
        assert allocator.trim_if_grown() is False
    assert fake.trims == 0
    fake.rss = 550 * MiB + margin + 1
    assert allocator.trim_if_grown() is True and fake.trims == 1
    fake.rss = 500 * MiB + margin  # counted from what the trim left
    assert allocator.trim_if_grown() is False and fake.trims == 1
    fake.rss = 501 * MiB + margin
    assert allocator.trim_if_grown() is True and fake.trims == 2


@pytest.mark.parametrize("why", ["keep_freed_memory", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "no malloc_trim"])
def test_leaves_freed_memory_where_it_was_asked_for_or_the_allocator_is_not_glibcs(
        monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    fake = FakeTrim(monkeypatch, after_trim=0)
    if why == "keep_freed_memory":
        monkeypatch.setattr(allocator, "_mallopt", lambda: lambda param, value: 1)
        monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
        assert allocator.keep_freed_memory() is True
    elif why == "no malloc_trim":
        monkeypatch.setattr(allocator, "_malloc_trim", lambda: None)
    else:
        monkeypatch.setenv(why, "1")
    for rss in (0, 4096 * MiB):
        fake.rss = rss
        assert allocator.trim_if_grown() is False
    assert fake.trims == 0


TRIM_LOOP = """
import ctypes
from lrfer import allocator
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
assert allocator.trim_if_grown(growth=64 << 20) is False  # the level before
blocks, kept = [], []
for _ in range(2000):  # 100 KiB blocks (below any mmap threshold) between small blocks still in use
    block = libc.malloc(100 << 10); ctypes.memset(block, 1, 100 << 10); blocks.append(block)
    kept.append(libc.malloc(64))
for block in blocks:
    libc.free(block)
before = allocator.resident_bytes()
print(allocator.trim_if_grown(growth=64 << 20), before >> 20, allocator.resident_bytes() >> 20)
"""


def test_trimming_returns_heap_memory_freed_between_blocks_in_use() -> None:
    """glibc's free() returns only the top of the heap: 200 MB freed between live blocks stayed resident."""
    import os
    import subprocess
    import sys

    if allocator._malloc_trim() is None:
        pytest.skip("glibc's malloc only")
    env = {k: v for k, v in os.environ.items() if k not in allocator.ALLOCATOR_ENVIRONMENT}
    proc = subprocess.run([sys.executable, "-c", TRIM_LOOP], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    trimmed, before, after = proc.stdout.split()
    assert trimmed == "True" and int(before) - int(after) > 150, proc.stdout


def test_each_predict_step_ends_with_a_trim_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Recognizer.predict (and so `lrfer predict` and predict_video) never trimmed: a long run over
    photos of many sizes grew by over 1 GB."""
    import numpy as np

    import lrfer
    import lrfer.recognizer  # run alone, `lrfer.recognizer` was an AttributeError (not imported yet)

    calls = []
    monkeypatch.setattr(lrfer.recognizer, "trim_if_grown", lambda: calls.append(1))
    rec = lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)
    crops = [np.full((24 + n, 30, 3), 128, np.uint8) for n in range(3)]
    assert len(rec.predict(crops, streams=1)) == 3
    assert len(calls) >= 1
    calls.clear()
    rec.predict(crops[0])
    assert calls == [1]
