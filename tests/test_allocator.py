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

    calls = []
    monkeypatch.setattr(lrfer.recognizer, "raise_adaptive_thresholds", lambda: calls.append(1))
    lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)
    assert calls == [1]
