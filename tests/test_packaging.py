"""The source distribution carries what the test suite reads (MANIFEST.in), so its tests run."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Build outputs and caches, never part of a source tree.
NOT_SOURCE = ("*.egg-info", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", ".benchmarks", "build", "dist",
              ".git", "runs", "data",
              ".venv", ".devdata", "*.pt", ".coverage")


def folders_the_tests_read() -> set[str]:
    """Top-level folders the tests open by path (``Path(__file__).resolve().parents[1] / "scripts"``)."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("*.py"))
    return set(re.findall(r'parents\[1\]\s*/\s*"(\w+)"', text))


def test_sdist_carries_the_folders_the_tests_read(tmp_path: Path) -> None:
    """tests/test_benchmark_figures.py imports benchmarks/pipeline.py and predict_folder.py: an sdist
    that pruned benchmarks/ failed those tests with ModuleNotFoundError."""
    pytest.importorskip("setuptools.build_meta", reason="setuptools is needed to build the sdist")
    folders = folders_the_tests_read()
    assert {"benchmarks", "examples", "scripts"} <= folders
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(tmp_path / done.stdout.strip().splitlines()[-1]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for folder in sorted(folders):
        wanted = {path.relative_to(source).as_posix() for path in (source / folder).rglob("*.py")}
        assert wanted, folder
        assert not wanted - members, f"the sdist lacks {sorted(wanted - members)}"
    assert {f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")} <= members
