"""lrfer ships ``py.typed``: its annotations are what its users' type checkers read. mypy with the
repository's settings (pyproject.toml's ``[tool.mypy]``, what a plain ``mypy`` runs) finds no error in them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy not installed (pip install -e '.[test]')")
    monkeypatch.chdir(ROOT)  # the files to check are the config's
    # No cache (os.devnull: mypy writes none): a run checks the package and the installed stubs as they are now.
    report, errors, status = api.run(["--config-file", "pyproject.toml", "--cache-dir", os.devnull])
    assert status == 0, f"mypy exited with {status}:\n{report}{errors}"
