"""lrfer: low-resolution facial expression recognition.

A model zoo whose models still read 8-32 px faces. ``import lrfer`` is light: torch, the models and
the detector are imported on first access of ``lrfer.load`` or ``lrfer.Recognizer`` (module-level
``__getattr__``).

>>> import lrfer
>>> rec = lrfer.load()  # doctest: +SKIP
>>> [f.label for f in rec.predict("examples/group1.jpg")]  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> "module:attribute", imported on first access.
_LAZY: dict[str, str] = {
    "load": "lrfer.recognizer:load",
    "Recognizer": "lrfer.recognizer:Recognizer",
    "Face": "lrfer.results:Face",
    "VideoFrame": "lrfer.results:VideoFrame",
    "faces_to_pandas": "lrfer.results:faces_to_pandas",
    "faces_to_rows": "lrfer.results:faces_to_rows",
    "frames_to_pandas": "lrfer.results:frames_to_pandas",
    "list_models": "lrfer.zoo:list_models",
    "get_spec": "lrfer.zoo:get_spec",
    "info": "lrfer.zoo:info",
    "download": "lrfer.zoo:download",
    "ModelSpec": "lrfer.zoo:ModelSpec",
    "load_image": "lrfer.io:load_image",
    "CLASSES": "lrfer.constants:CLASSES",
    "keep_freed_memory": "lrfer.allocator:keep_freed_memory",
    "UnknownModelError": "lrfer.zoo:UnknownModelError",
    "DatasetUnavailableError": "lrfer.zoo:DatasetUnavailableError",
    "ChecksumError": "lrfer.zoo:ChecksumError",
    "ManifestError": "lrfer.zoo:ManifestError",
    "StateDictMismatchError": "lrfer.zoo:StateDictMismatchError",
    "UnsupportedFormatError": "lrfer.zoo:UnsupportedFormatError",
    "NotCachedError": "lrfer.zoo:NotCachedError",
    "HubDownloadError": "lrfer.zoo:HubDownloadError",
}

#: Submodules that the README reaches as ``lrfer.<module>`` after a bare ``import lrfer``
#: (``lrfer.annotate.annotate``, ``lrfer.io.MAX_IMAGE_PIXELS``, ...), imported on first access.
_LAZY_MODULES = frozenset({"allocator", "annotate", "faces", "graphs", "io", "overlap", "train", "zoo"})

# Written out (not built from _LAZY) so that type checkers see what lrfer exports.
__all__ = [
    "__version__", "load", "Recognizer", "Face", "VideoFrame", "faces_to_pandas", "faces_to_rows",
    "frames_to_pandas", "list_models", "get_spec", "info", "download", "ModelSpec", "load_image", "CLASSES",
    "keep_freed_memory", "UnknownModelError", "DatasetUnavailableError", "ChecksumError", "ManifestError",
    "StateDictMismatchError", "UnsupportedFormatError", "NotCachedError", "HubDownloadError",
]

if TYPE_CHECKING:  # pragma: no cover
    from lrfer.allocator import keep_freed_memory as keep_freed_memory
    from lrfer.constants import CLASSES as CLASSES
    from lrfer.io import load_image as load_image
    from lrfer.recognizer import Recognizer as Recognizer, load as load
    from lrfer.results import (Face as Face, VideoFrame as VideoFrame, faces_to_pandas as faces_to_pandas,
                               faces_to_rows as faces_to_rows, frames_to_pandas as frames_to_pandas)
    from lrfer.zoo import (ChecksumError as ChecksumError, DatasetUnavailableError as DatasetUnavailableError,
                           HubDownloadError as HubDownloadError, ManifestError as ManifestError,
                           ModelSpec as ModelSpec, NotCachedError as NotCachedError,
                           StateDictMismatchError as StateDictMismatchError,
                           UnknownModelError as UnknownModelError, UnsupportedFormatError as UnsupportedFormatError,
                           download as download, get_spec as get_spec, info as info, list_models as list_models)


# Hidden from type checkers, which read a module-level __getattr__ as "any other name exists" (typed
# Any): they see the names above, the only ones it serves, and flag a misspelt or unexported one.
if not TYPE_CHECKING:
    def __getattr__(name: str) -> Any:
        if name in _LAZY_MODULES:
            return importlib.import_module(f"lrfer.{name}")  # also sets lrfer.<name>
        target = _LAZY.get(name)
        if target is None:
            raise AttributeError(f"module 'lrfer' has no attribute {name!r}")
        module_name, attr = target.split(":")
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)
