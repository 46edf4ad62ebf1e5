"""lrfer.allocator: glibc malloc options for batch inference, set by `lrfer predict`, opt-in in Python."""
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


@pytest.mark.parametrize("variable", ["GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD"])
def test_leaves_an_allocator_the_environment_chose(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "glibc.malloc.check=0" if variable == "GLIBC_TUNABLES" else "1")
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_does_nothing_off_glibc(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_lrfer_predict_sets_it_and_the_python_api_does_not(libc: FakeLibc, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    import lrfer
    from lrfer.cli import main

    cv2.imwrite(str(tmp_path / "face.png"), np.full((48, 48, 3), 128, dtype=np.uint8))
    lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None).predict(str(tmp_path / "face.png"))
    assert libc.calls == []
    assert main(["predict", str(tmp_path), "--detector", "none", "--workers", "0", "--quiet",
                 "--out", str(tmp_path / "rows.csv")]) == 0
    assert len(libc.calls) == 2
