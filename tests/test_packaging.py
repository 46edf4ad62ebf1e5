"""The source distribution carries what the test suite reads (MANIFEST.in), so its tests run."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


def requirements(value: str) -> dict[str, Requirement]:
    """A setup.cfg list of requirements (one a line), by project name."""
    return {req.name: req for req in map(Requirement, filter(None, map(str.strip, value.splitlines())))}


def test_the_test_extra_installs_with_the_lower_bounds_as_constraints() -> None:
    """The test extra asked for safetensors>=0.5.2 (whose stubs tests/test_typing.py's mypy run reads)
    over install_requires' safetensors>=0.4, so pip refused `.[test]` under a constraints file of the lower
    bounds (safetensors==0.4.0), though that mypy run skips, saying why, below 0.5.2."""
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    needed = requirements(setup["options"]["install_requires"])
    for name, req in requirements(setup["options.extras_require"]["test"]).items():
        specifier = needed[name].specifier if name in needed else []
        for lower in [spec.version for spec in specifier if spec.operator == ">="]:
            assert req.specifier.contains(lower), f"the test extra's {req} refuses {name} {lower}, lrfer's lower bound"
