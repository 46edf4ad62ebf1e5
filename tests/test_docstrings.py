"""The examples in lrfer's docstrings run and give what they show (``+SKIP`` ones excepted: those
need files or a model the docstring does not make)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lrfer

MODULES = sorted(info.name for info in pkgutil.walk_packages(lrfer.__path__, "lrfer."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"


def test_modules_with_examples_are_found():
    assert {"lrfer.shapes", "lrfer.faces.mtcnn", "lrfer.faces.align"} <= set(MODULES)
