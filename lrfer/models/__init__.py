"""Architecture registry.

Registration is explicit: ``ARCHITECTURES`` maps each architecture name used in
``weights_manifest.json`` to ``"module:builder"``. Modules are imported only when a model is
built, so ``import lrfer`` stays fast and a renamed builder fails loudly instead of dropping weights.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

ARCHITECTURES: dict[str, str] = {
    "resnet18": "lrfer.models.resnet:resnet18",
    "gmenet": "lrfer.models.gmenet:gmenet",
    "baseline": "lrfer.models.baseline:baseline",
    "fsrfer": "lrfer.models.fsrfer:fsrfer",
    "manet": "lrfer.models.manet:manet",
}


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(ARCHITECTURES)


def build_model(arch: str, **config: Any) -> nn.Module:
    """Build an untrained model from its manifest ``arch`` and ``config``.

    >>> m = build_model("gmenet", num_classes=7, width=16)
    """
    builder = _builder(arch)
    check_config(arch, config)
    return builder(**config)


def check_config(arch: str, config: Mapping[str, Any]) -> None:
    """ValueError naming any ``config`` key that ``arch``'s builder does not take (a typo such as
    ``widht`` would otherwise surface as a TypeError deep in loading), or a value of another kind than
    its default (``width="abc"`` or ``12.5``: torch's messages do not name the option).

    >>> check_config("gmenet", {"width": "abc"})
    Traceback (most recent call last):
    ValueError: config width='abc': gmenet takes a whole number (default 32)
    """
    accepted = inspect.signature(_builder(arch)).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(f"config key(s) {unknown} are not options of architecture {arch!r}; it takes "
                         f"{', '.join(accepted)}")
    for key, value in config.items():
        default = accepted[key].default
        wanted = _kind_of(default)
        if wanted is not None and _kind_of(value) not in _ACCEPTED_KINDS[wanted]:
            raise ValueError(f"config {key}={value!r}: {arch} takes {wanted} (default {default!r})")


#: Which kinds of value an option whose default is of each kind takes (a whole number for a number).
_ACCEPTED_KINDS = {"true or false": ("true or false",), "a whole number": ("a whole number",),
                   "a number": ("a number", "a whole number")}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return None


def _builder(arch: str) -> Any:
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(list_architectures())}")
    module_name, builder_name = ARCHITECTURES[arch].split(":")
    return getattr(importlib.import_module(module_name), builder_name)
