"""The source distribution carries what the test suite reads (MANIFEST.in), so its tests run."""
from __future__ import annotations

import configparser
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
#: Build outputs and caches, never part of a source tree.
NOT_SOURCE = ("*.egg-info", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", ".benchmarks", "build", "dist",
              ".git", "runs", "data",
              ".venv", ".devdata", "*.pt", ".coverage")


def folders_the_tests_read() -> set[str]:
    """Top-level folders the tests open by path: ``Path(__file__).resolve().parents[1] / "scripts"`` or
    ``ROOT / "docs"`` (``ROOT`` being that same folder)."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("*.py"))
    names = set(re.findall(r'(?:parents\[1\]|\bROOT)\s*/\s*"([\w.-]+)"', text))
    return {name for name in names if (ROOT / name).is_dir()}


#: What a working tree collects beside its sources, each (path, what makes it) planted in a copy of the
#: tree before a build: none of it may reach the sdist or the wheel.
STRAYS = ("tests/__pycache__/test_api.cpython-311.pyc", "tests/.pytest_cache/v/cache/nodeids", "tests/.coverage",
          "benchmarks/.devdata/gpu/photo.npy", "benchmarks/out.pt", "scripts/runs/log.txt",
          "examples/.ipynb_checkpoints/quickstart.py", "docs/.devdata/speed.json",
          "lrfer/__pycache__/zoo.cpython-311.pyc", "lrfer/weights/notes.txt",
          "lrfer/weights/x.run/checkpoint.json", "lrfer/weights/x.run/last.safetensors", "lrfer/weights/x.pt")


def source_tree(tmp_path: Path) -> Path:
    """A copy of the repository without build outputs."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return source


def plant_strays(source: Path) -> Path:
    """``source`` with the files of :data:`STRAYS` written into it."""
    for stray in STRAYS:
        (source / stray).parent.mkdir(parents=True, exist_ok=True)
        (source / stray).write_bytes(b"stray")
    return source


def build(kind: str, source: Path, out: Path) -> Path:
    """``setuptools.build_meta.build_<kind>`` (sdist or wheel) of ``source`` into ``out``."""
    pytest.importorskip("setuptools.build_meta", reason="setuptools is needed to build the distributions")
    code = f"import sys; from setuptools import build_meta; print(build_meta.build_{kind}(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / done.stdout.strip().splitlines()[-1]


def sdist_members(path: Path) -> set[str]:
    """The sdist's files, relative to its top folder."""
    with tarfile.open(path) as sdist:
        return {member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile()}


def test_sdist_carries_the_folders_the_tests_read(tmp_path: Path) -> None:
    """tests/test_benchmark_figures.py imports benchmarks/pipeline.py and predict_folder.py: an sdist
    that pruned benchmarks/ failed those tests with ModuleNotFoundError; one without docs/ failed the five
    tests of tests/test_docs.py that read docs/eval_publictest.md and the files the README links to."""
    folders = folders_the_tests_read()
    assert {"benchmarks", "docs", "examples", "scripts", "tests"} <= folders
    source = source_tree(tmp_path)
    members = sdist_members(build("sdist", source, tmp_path))
    for folder in sorted(folders):
        wanted = {path.relative_to(source).as_posix() for path in (source / folder).rglob("*") if path.is_file()}
        assert wanted, folder
        assert not wanted - members, f"the sdist lacks {sorted(wanted - members)}"
    assert {f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")} <= members


def test_sdist_leaves_out_caches_benchmark_data_and_training_runs(tmp_path: Path) -> None:
    """MANIFEST.in grafts whole folders: built from a used working tree, the sdist carried
    tests/.pytest_cache, benchmarks/.devdata, ``*.pt`` checkpoints and ``runs/`` logs."""
    members = sdist_members(build("sdist", plant_strays(source_tree(tmp_path)), tmp_path))
    assert sorted(set(STRAYS) & members) == []


def test_wheel_holds_the_package_its_bundled_weights_and_nothing_else(tmp_path: Path) -> None:
    """package_data took every ``lrfer/weights/*.txt``: a stray notes file beside the weights was
    installed with them. The wheel holds lrfer's modules, ``py.typed``, the top-level manifest's
    copy byte for byte, and exactly the files of lrfer/weights, each bundled model's with its sha256."""
    source = source_tree(tmp_path)
    weights = {path.relative_to(source).as_posix() for path in (source / "lrfer" / "weights").iterdir()}
    with zipfile.ZipFile(build("wheel", plant_strays(source), tmp_path)) as wheel:
        names = {name for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
        assert {name for name in names if name.startswith("lrfer/weights/")} == weights
        others = {name for name in names - weights if not name.endswith(".py")}
        assert others == {"lrfer/py.typed", "lrfer/weights_manifest.json"}
        assert sorted(name for name in names if not name.startswith("lrfer/")) == []
        manifest = wheel.read("lrfer/weights_manifest.json")
        assert manifest == (ROOT / "weights_manifest.json").read_bytes()
        for name, entry in json.loads(manifest)["models"].items():
            if entry["source"]["kind"] == "bundled":
                data = wheel.read(f"lrfer/weights/{entry['file']}")
                assert hashlib.sha256(data).hexdigest() == entry["sha256"], name


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
