"""Model zoo: the weights manifest, name grammar and weight resolution.

Every pretrained variant has exactly one description: its entry in ``weights_manifest.json``
(architecture + config, input size, normalisation, ordered labels, weights location pinned to a
full commit, sha256, licences, metrics). An entry is parsed into a frozen :class:`ModelSpec` that
rejects unknown and missing keys, and the spec is attached to every loaded model as
``model.pretrained_cfg``.

The load path is straight: :func:`resolve` (spec -> verified local ``.safetensors`` path) -> the file's
bytes read once, re-hashed and loaded (``safetensors.torch.load``) -> the network laid out on the meta device
and compared with them -> ``build_model(arch, **config)`` -> ``load_state_dict(strict=True)`` -> ``eval()``.
The sha256 is always checked before use and only safetensors files are accepted (no pickle). ``torch`` and ``huggingface_hub`` are imported inside functions so ``import lrfer.zoo`` is
light.

Weight specs accepted by :func:`resolve` / :func:`load_model`:

* a manifest name, ``<arch>-<dataset>-<res>px`` (e.g. ``"gmenet-fer2013-16px"``);
* a :class:`ModelSpec`;
* a local ``.safetensors`` file written by :func:`save_weights` (spec in its metadata);
* a local directory holding ``lrfer_config.json`` (a manifest entry) and the weights file it names, or
  no ``lrfer_config.json`` and a single ``.safetensors`` file written by :func:`save_weights`;
* ``hf://org/repo[@revision]``: a Hub repo laid out like such a directory (timm's spelling,
  ``hf-hub:org/repo[@revision]``, works too).

Errors: :class:`ManifestError`, :class:`UnknownModelError`, :class:`DatasetUnavailableError`,
:class:`ChecksumError` and :class:`UnsupportedFormatError` are all ``ValueError`` subclasses;
:class:`NotCachedError` is a ``FileNotFoundError``; :class:`HubDownloadError` (a Hub download broke off)
is a ``ConnectionError``; :class:`StateDictMismatchError` is a ``RuntimeError`` (like torch's own
strict-load error).
"""
from __future__ import annotations

import dataclasses
import difflib
import errno
import fnmatch
import functools
import hashlib
import json
import logging
import math
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Iterator, Mapping, NamedTuple, NoReturn, Union

from lrfer.constants import (ALIGNMENTS, FER2013_BOX, FER2013_LANDMARKS, HR_SIZE, LANDMARK_NAMES,
                             NATIVE_DOWNSAMPLING)
from lrfer.results import ROW_PREFIX, VIDEO_COLUMNS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

__all__ = [
    "ModelSpec",
    "ParsedName",
    "Manifest",
    "ManifestError",
    "UnknownModelError",
    "DatasetUnavailableError",
    "ChecksumError",
    "UnsupportedFormatError",
    "NotCachedError",
    "HubDownloadError",
    "StateDictMismatchError",
    "parse_name",
    "load_manifest",
    "list_models",
    "default_model",
    "get_spec",
    "resolve",
    "load_model",
    "save_weights",
    "safetensors_bytes",
    "info",
    "config_entry",
    "download",
    "sha256_file",
]

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
#: The manifest the package reads (a byte-identical copy of the repo's top-level file).
MANIFEST_PATH = PACKAGE_DIR / "weights_manifest.json"
#: Where bundled weights live inside the package.
WEIGHTS_DIR = PACKAGE_DIR / "weights"

SCHEMA_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
#: Pickle-based checkpoint formats that are refused outright.
REFUSED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
#: Columns of the result rows (:func:`lrfer.results.row_columns`): no class may take one of these names.
RESERVED_COLUMNS = ROW_PREFIX + VIDEO_COLUMNS
#: safetensors metadata key holding the JSON manifest entry (without file/sha256).
SPEC_METADATA_KEY = "lrfer_spec"
#: Metadata key of a weights file's own sha256, written by :func:`save_weights`: the hash of the file
#: as it is without this key (header with sorted keys, then the tensor bytes), so a file loaded by path,
#: which no manifest describes, still has its header (classes, normalisation, temperature) and tensors checked.
CONTENT_SHA_METADATA_KEY = "lrfer_sha256"
#: What save_weights recorded before (stop 26): the sha256 of the tensor bytes alone, still checked.
LEGACY_DATA_SHA_METADATA_KEY = "lrfer_data_sha256"
#: safetensors' own limit on the JSON header; a longer one marks a damaged file.
MAX_HEADER_BYTES = 100_000_000
#: File name of the manifest entry inside a local weights directory or a Hub repo.
CONFIG_FILENAME = "lrfer_config.json"
HF_PREFIX = "hf://"
#: timm's spellings of a Hub model id (``hf-hub:org/repo``; ``hf_hub:``, which timm still reads), read
#: as ``hf://org/repo``.
TIMM_HF_PREFIXES = ("hf-hub:", "hf_hub:")
CACHE_ENV = "LRFER_CACHE"

#: Canonical dataset names, with the aliases the name grammar accepts.
DATASET_ALIASES: Mapping[str, str] = MappingProxyType(
    {"fer2013": "fer2013", "rafdb": "rafdb", "raf": "rafdb", "raf_db": "rafdb"}
)
#: The smallest calibration temperature a spec may give (fitted ones are about 0.5 to 3).
MIN_TEMPERATURE = 1e-3
_NAME_RE = re.compile(r"^(?P<arch>[a-z0-9_]+(?:-[a-z0-9_]+)*?)-(?P<dataset>[a-z0-9_]+)-(?P<res>[0-9]+)px$")
# \Z, not $: "$" also matches before a trailing newline ("<64 hex>\\n" passed, then never matched a file's hash)
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
# The revision is any text here; _check_revision holds it to git's rules for a ref name.
_HF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\s\S]+))?\Z")
#: What git refuses anywhere in a ref name (``git check-ref-format``): control characters, DEL, space, ``~^:?*[\``,
#: ``..`` and ``@{``.
_REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")
#: What Windows refuses in a file name (``<>:"|?*`` and control characters): huggingface_hub writes a
#: revision as the file refs/<revision> in its cache. Git's rules leave ``<>"|`` in a ref name.
_WINDOWS_FORBIDDEN_RE = re.compile(r'[<>:"|?*\x00-\x1f]')
#: A file name Windows reserves for a device, in any case, with or without an extension (``nul``, ``COM1.txt``).
_WINDOWS_DEVICE_RE = re.compile(r"(?:CON|PRN|AUX|NUL|COM[1-9\u00b9\u00b2\u00b3]|LPT[1-9\u00b9\u00b2\u00b3])(?:\..*)?",
                                re.I | re.S)


# --------------------------------------------------------------------------------------------- errors
class ManifestError(ValueError):
    """A manifest entry, ``lrfer_config.json`` or embedded spec does not follow the schema."""


class UnknownModelError(ValueError):
    """The name is not in the manifest. The message lists close matches.

    A ``ValueError`` (not ``KeyError``, whose ``str()`` would quote the multi-line message).
    """


class DatasetUnavailableError(UnknownModelError):
    """Weights for this dataset cannot be distributed; the message names an alternative and the
    ``lrfer train`` command that makes your own."""


class ChecksumError(ValueError):
    """A weights file's sha256 differs from the one recorded for it."""


class UnsupportedFormatError(ValueError):
    """A weights file that is not ``.safetensors`` (pickle checkpoints are never loaded)."""


class HubDownloadError(ConnectionError):
    """A Hub download broke off (a dropped connection, a short read)."""


class NotCachedError(FileNotFoundError):
    """Offline (``HF_HUB_OFFLINE=1``, ``local_files_only=True`` or no connection) and the weights are not in the
    cache."""


class StateDictMismatchError(RuntimeError):
    """The weights file does not fit the architecture built from the spec."""


# ----------------------------------------------------------------------------------------- name grammar
class ParsedName(NamedTuple):
    """The parts of a ``<arch>-<dataset>-<res>px`` name; ``dataset`` is canonical."""

    arch: str
    dataset: str
    resolution: int


def parse_name(name: str) -> ParsedName:
    """Split a zoo name ``<arch>-<dataset>-<res>px``; the one place the grammar is parsed.

    ``arch`` may itself contain hyphens; dataset aliases (``raf``, ``raf-db``) are canonicalised.

    >>> parse_name("gmenet-fer2013-16px")
    ParsedName(arch='gmenet', dataset='fer2013', resolution=16)
    >>> parse_name("gmenet-raf-db-16px").dataset
    'rafdb'
    """
    text = name.strip().lower().replace("raf-db", "raf_db")
    match = _NAME_RE.match(text)
    if match is None:
        raise ValueError(
            f"{name!r} does not follow the zoo name grammar '<arch>-<dataset>-<res>px' "
            "(e.g. 'gmenet-fer2013-16px')"
        )
    dataset = DATASET_ALIASES.get(match["dataset"], match["dataset"])
    return ParsedName(match["arch"], dataset, int(match["res"]))


# ------------------------------------------------------------------------------------------- ModelSpec
def _lrfer_version() -> str:
    from lrfer import __version__

    return __version__


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy, all the way down (nested dicts as read-only mappings, lists as tuples): a
    spec's nested values were the cached manifest's own dicts, and editing one changed what
    :func:`get_spec` returned for the rest of the process."""
    return MappingProxyType({key: _frozen_value(item) for key, item in value.items()})


def _frozen_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _frozen(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen_value(item) for item in value)
    return value


def _plain(value: Any) -> Any:
    """Mapping proxies / tuples back to JSON-able dicts / lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained variant: a parsed, validated manifest entry.

    Build it with :meth:`from_dict`, which rejects unknown keys, missing required keys and wrong
    types. Dict-valued fields are read-only mappings, nested values included (copy them with
    :meth:`to_dict` to edit).

    >>> spec = get_spec("gmenet-fer2013-16px")  # doctest: +SKIP
    >>> spec.resolution, spec.classes[:2]  # doctest: +SKIP
    (16, ('angry', 'disgust'))
    """

    name: str
    arch: str
    config: Mapping[str, Any] = field(hash=False)
    dataset: str
    resolution: int
    in_chans: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    file: str
    sha256: str
    source: Mapping[str, Any] = field(hash=False)
    license: Mapping[str, str] = field(hash=False)
    temperature: float = 1.0
    alignment: str = "fer2013"
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    recipe: str = ""
    seed: int | None = None
    paper: str = ""
    description: str = ""

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], *, where: str = "manifest entry") -> "ModelSpec":
        """Validate a manifest entry and build the spec; errors name ``where`` and the bad key.

        >>> ModelSpec.from_dict(json.loads(Path("lrfer_config.json").read_text()))  # doctest: +SKIP
        >>> ModelSpec.from_dict({"name": "x"})  # raises ManifestError: missing required key(s) [...]  # doctest: +SKIP
        """
        if not isinstance(entry, Mapping):
            raise ManifestError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        label = f"{where} {entry.get('name', '?')!r}"
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            raise ManifestError(
                f"{label}: unknown key(s) {unknown}; allowed keys are {sorted(fields)}"
                " (fix the spelling or remove them; one written by a newer lrfer needs that version: "
                f"this is lrfer {_lrfer_version()}, `pip install -U lrfer`)"
            )
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in entry]
        if missing:
            raise ManifestError(f"{label}: missing required key(s) {missing}")

        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ManifestError(f"{label}: {key!r} must be {expected}, got {entry[key]!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key in ("name", "arch", "dataset", "file", "alignment", "recipe", "paper", "description"):
            if key in entry:
                check(key, isinstance(entry[key], str), "a string")
        for key in ("config", "source", "license", "metrics"):
            if key in entry:
                check(key, isinstance(entry[key], Mapping), "an object")
        def is_finite(v: Any) -> bool:
            return is_num(v) and math.isfinite(v)

        # The pipeline's faces are HR_SIZE px (as training's, lrfer.train.recipes.check_recipe): a larger size is
        # no face lrfer makes, and lrfer.load allocates resolution**2 floats at once (100000 px: 120 GB).
        check("resolution", is_int(entry["resolution"]) and 1 <= entry["resolution"] <= HR_SIZE,
              f"a positive int of at most {HR_SIZE} (the pipeline's faces are {HR_SIZE}x{HR_SIZE} px)")
        # The pipeline makes gray faces (FER2013's kind); a colour model could not be fed.
        check("in_chans", entry["in_chans"] == 1 and is_int(entry["in_chans"]), "1 (lrfer feeds models gray faces)")
        check("classes", isinstance(entry["classes"], list) and len(entry["classes"]) > 0
              and all(isinstance(c, str) and c.strip() for c in entry["classes"])
              and len(set(entry["classes"])) == len(entry["classes"]), "a list of distinct, non-empty strings")
        reserved = sorted(set(entry["classes"]) & set(RESERVED_COLUMNS))
        check("classes", not reserved, f"free of the result columns' names {reserved}")
        for key in ("mean", "std"):
            check(key, isinstance(entry[key], list) and len(entry[key]) == entry["in_chans"]
                  and all(is_finite(v) for v in entry[key]), f"a list of {entry['in_chans']} finite number(s)")
        check("std", all(v > 0 for v in entry["std"]), "positive")
        if "alignment" in entry:
            check("alignment", entry["alignment"] in ALIGNMENTS,
                  f"one of {list(ALIGNMENTS)} (the face framings lrfer makes: {HR_SIZE} px FER2013 crops, "
                  "aligned on 5 landmarks)")
        check("sha256", isinstance(entry["sha256"], str) and bool(_SHA256_RE.match(entry["sha256"])),
              "64 lowercase hex characters")
        if "temperature" in entry:
            # Below 0.001 logits / temperature overflow float32 (1e-300 is 0 there): every probability NaN.
            check("temperature", is_finite(entry["temperature"]) and entry["temperature"] >= MIN_TEMPERATURE,
                  f"a finite number of at least {MIN_TEMPERATURE}")
        if "seed" in entry:
            check("seed", entry["seed"] is None or is_int(entry["seed"]), "an int")
        check("file", entry["file"].lower().endswith(WEIGHTS_SUFFIX) and "/" not in entry["file"]
              and "\\" not in entry["file"], f"a plain '*{WEIGHTS_SUFFIX}' file name")
        lic = entry["license"]
        check("license", set(lic) == {"code", "weights", "data"} and all(isinstance(v, str) for v in lic.values()),
              "an object with exactly the string keys 'code', 'weights', 'data'")
        _check_source(entry["source"], label)
        _check_name(entry, label)
        _check_config(entry, label)

        values = dict(entry)
        for key in ("config", "source", "license", "metrics"):
            if key in values:
                values[key] = _frozen(values[key])
        for key in ("classes", "mean", "std"):
            values[key] = tuple(values[key])
        if "temperature" in values:
            values["temperature"] = float(values["temperature"])
        return cls(**values)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle / ``copy.deepcopy`` support (read-only mappings are not picklable themselves)."""
        return (_spec_from_plain, (self.to_dict(),))

    # -- views --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON-able data (the inverse of :meth:`from_dict`)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # -- read-only mapping access, as timm's ``model.pretrained_cfg["mean"]`` ----------------------------
    def keys(self) -> tuple[str, ...]:
        """The field names, :meth:`to_dict`'s keys (``dict(spec)`` works, its values read-only as the
        fields are); ``spec[key]`` is ``getattr(spec, key)``. timm's own names for the same values,
        :data:`TIMM_KEYS`, are read too (``spec["input_size"]``), but are not keys: ``dict(spec)`` is
        the entry.

        >>> spec = get_spec("gmenet-fer2013-16px")
        >>> spec["mean"], spec.get("std"), "classes" in spec, spec.get("input_size"), spec["num_classes"]
        ((0.5,), (0.25,), True, (1, 16, 16), 7)
        """
        return tuple(f.name for f in dataclasses.fields(self))

    def __getitem__(self, key: str) -> Any:
        if isinstance(key, str) and key in TIMM_KEYS:
            return TIMM_KEYS[key](self)
        if not isinstance(key, str) or key not in self.keys():
            raise KeyError(f"{key!r} is not a ModelSpec key; its keys are {list(self.keys())}, and timm's "
                           f"{list(TIMM_KEYS)} are read too")
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``spec[key]``, or ``default`` for a key the spec has not (as ``dict.get``)."""
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.keys() or key in TIMM_KEYS)

    def __iter__(self) -> Iterator[str]:
        """The keys, as a dict's (without it, ``list(spec)`` would try ``spec[0]``, ``spec[1]``...)."""
        return iter(self.keys())

    def items(self) -> list[tuple[str, Any]]:
        """``(key, spec[key])`` pairs, as ``dict.items``."""
        return [(key, getattr(self, key)) for key in self.keys()]

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(arch, **kwargs)``: ``config`` plus ``num_classes`` and
        ``in_chans`` taken from the spec (so labels and channels have one source of truth)."""
        return {"num_classes": self.num_classes, "in_chans": self.in_chans, **_plain(self.config)}


#: timm's ``pretrained_cfg`` keys that a :class:`ModelSpec` answers, and how (a timm user's
#: ``cfg.get("input_size")`` was None: lrfer's names for them differ).
TIMM_KEYS: Mapping[str, Callable[[ModelSpec], Any]] = MappingProxyType({
    "input_size": lambda spec: (spec.in_chans, spec.resolution, spec.resolution),
    "num_classes": lambda spec: spec.num_classes,
    "label_names": lambda spec: spec.classes,
    "architecture": lambda spec: spec.arch,
})


def _check_buildable(spec: ModelSpec, label: str) -> None:
    """ManifestError unless ``spec.arch`` is a known architecture taking every key of its config."""
    from lrfer.models import check_config

    try:
        check_config(spec.arch, spec.model_kwargs)
    except (KeyError, ValueError) as err:
        raise ManifestError(f"{label}: {err.args[0]}") from None


def _spec_from_plain(entry: dict[str, Any]) -> ModelSpec:
    return ModelSpec.from_dict(entry)


def _check_source(source: Mapping[str, Any], label: str) -> None:
    kind = source.get("kind")
    allowed = {"bundled": {"kind"}, "hub": {"kind", "repo_id", "revision"}, "local": {"kind", "path"}}
    if kind not in allowed:
        raise ManifestError(f"{label}: source.kind must be 'bundled', 'hub' or 'local', got {kind!r}")
    if set(source) != allowed[kind]:
        raise ManifestError(f"{label}: a {kind!r} source has exactly the keys {sorted(allowed[kind])}, "
                            f"got {sorted(source)}")
    if kind == "hub":
        if not isinstance(source["repo_id"], str) or source["repo_id"].count("/") != 1:
            raise ManifestError(f"{label}: source.repo_id must be 'org/repo', got {source['repo_id']!r}")
        rev = source["revision"]
        if not isinstance(rev, str) or not _COMMIT_RE.match(rev):
            raise ManifestError(
                f"{label}: source.revision must be a full 40-hex commit hash so the weights cannot change "
                f"under the same name, got {rev!r} (find it with `git rev-parse HEAD` in the Hub repo or on "
                "its 'Files' page)"
            )


def _check_name(entry: Mapping[str, Any], label: str) -> None:
    try:
        parsed = parse_name(entry["name"])
    except ValueError as err:
        raise ManifestError(f"{label}: {err}") from None
    if parsed.resolution != entry["resolution"]:
        raise ManifestError(f"{label}: name says {parsed.resolution}px but resolution is {entry['resolution']}")
    if parsed.dataset != DATASET_ALIASES.get(entry["dataset"], entry["dataset"]):
        raise ManifestError(f"{label}: name says dataset {parsed.dataset!r} but dataset is {entry['dataset']!r}")
    if not (parsed.arch == entry["arch"] or parsed.arch.startswith(entry["arch"] + "-")):
        raise ManifestError(f"{label}: name's arch part {parsed.arch!r} does not start with arch {entry['arch']!r}")


def _check_config(entry: Mapping[str, Any], label: str) -> None:
    config = entry["config"]
    expected = {"num_classes": len(entry["classes"]), "in_chans": entry["in_chans"],
                "input_size": entry["resolution"]}
    for key, want in expected.items():
        if key in config and config[key] != want:
            raise ManifestError(f"{label}: config.{key}={config[key]!r} disagrees with the entry ({want!r}); "
                                "remove it from config or make them equal")


# -------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class Manifest:
    """The parsed ``weights_manifest.json``."""

    schema_version: int
    default: str | None
    models: Mapping[str, ModelSpec] = field(hash=False)
    #: canonical dataset -> {"reason": str, "data_example": str}: datasets whose weights we cannot ship.
    unavailable: Mapping[str, Mapping[str, str]] = field(hash=False)


def _parse_manifest(data: Any, where: str) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: top level must be a JSON object")
    allowed = {"schema_version", "default", "models", "unavailable"}
    unknown = sorted(set(data) - allowed)
    missing = sorted(allowed - set(data))
    if unknown or missing:
        raise ManifestError(f"{where}: top-level keys must be {sorted(allowed)} (unknown: {unknown}, missing: {missing})")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(f"{where}: schema_version {data['schema_version']!r} is not supported "
                            f"(this lrfer reads {SCHEMA_VERSION}); upgrade lrfer")
    if not isinstance(data["models"], dict) or not isinstance(data["unavailable"], dict):
        raise ManifestError(f"{where}: 'models' and 'unavailable' must be objects")
    models: dict[str, ModelSpec] = {}
    for key, entry in data["models"].items():
        spec = ModelSpec.from_dict(entry, where=f"{where} models")
        if spec.name != key:
            raise ManifestError(f"{where}: entry under {key!r} has name {spec.name!r}; they must be equal")
        if spec.source["kind"] == "local":
            raise ManifestError(f"{where}: {key!r}: a manifest source is 'bundled' or 'hub', not 'local'")
        models[key] = spec
    default = data["default"]
    if default is not None and default not in models:
        raise ManifestError(f"{where}: default {default!r} is not one of the models {sorted(models)}")
    unavailable: dict[str, Mapping[str, str]] = {}
    for dataset, item in data["unavailable"].items():
        if not isinstance(item, dict) or set(item) != {"reason", "data_example"}:
            raise ManifestError(f"{where}: unavailable[{dataset!r}] must have exactly the keys "
                                "'reason' and 'data_example'")
        unavailable[DATASET_ALIASES.get(dataset, dataset)] = _frozen(item)
    return Manifest(SCHEMA_VERSION, default, _frozen(models), _frozen(unavailable))


@functools.lru_cache(maxsize=8)
def _load_manifest_cached(path: str, mtime_ns: int) -> Manifest:
    return _parse_manifest(_parse_json(Path(path).read_text(encoding="utf-8"), path), path)


def _parse_json(text: str, where: str) -> Any:
    """``text`` parsed as JSON; a :class:`ManifestError` naming ``where`` otherwise."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where} is not valid JSON ({err})") from None
    except _DuplicateKeyError as err:  # json.loads would keep the last silently (a second entry of a model)
        raise ManifestError(f"{where} has the key {err.args[0]!r} twice") from None
    except (RecursionError, ValueError) as err:  # nested deeper than Python's stack, an int of over 4300 digits
        raise ManifestError(f"{where} is not JSON lrfer can read ({err})") from None


class _DuplicateKeyError(Exception):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _DuplicateKeyError(key)
    return dict(pairs)


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Parse and validate a manifest file (default: the package's own copy).

    >>> load_manifest().schema_version
    1
    """
    target = Path(path) if path is not None else MANIFEST_PATH
    return _load_manifest_cached(str(target), target.stat().st_mtime_ns)


def list_models(pattern: str | Iterable[str] | None = None, *, pretrained: bool = False,
                filter: str | Iterable[str] | None = None,
                exclude_filters: str | Iterable[str] | None = None) -> list[str]:
    """Sorted manifest names, optionally filtered with an fnmatch pattern, or several (a name matching
    any of them), as timm's ``list_models`` filters; case-insensitive (names are lowercase). No pattern,
    ``""`` or an empty list: every name. ``filter=`` is timm's name for ``pattern`` (give one or the other:
    both is a TypeError). ``exclude_filters=`` (timm's keyword), a pattern or several, removes the names
    matching any of them. ``pretrained=True`` (timm's keyword) lists the same names: every manifest name
    has its weights.

    >>> list_models("*-8px")  # doctest: +SKIP
    ['gmenet-fer2013-8px']
    >>> list_models(["resnet*", "manet*"])  # doctest: +SKIP
    ['manet-fer2013-48px', 'resnet18-fer2013-48px']
    >>> list_models(filter="gmenet-fer2013-*", exclude_filters=["*-8px", "*-12px"])  # doctest: +SKIP
    ['gmenet-fer2013-16px', 'gmenet-fer2013-24px']
    """
    if not isinstance(pretrained, bool):  # pretrained="False" would read as True
        raise TypeError(f"pretrained must be True or False; got {pretrained!r}")
    if pattern is not None and filter is not None:
        raise TypeError(f"list_models got both pattern={pattern!r} and filter={filter!r}; filter is timm's name "
                        "for pattern: give one of them")
    keep = _fnmatch_patterns(filter, "filter") if filter is not None else _fnmatch_patterns(pattern, "pattern")
    drop = _fnmatch_patterns(exclude_filters, "exclude_filters")
    names = sorted(load_manifest().models)
    if keep:  # no filter, "" (timm's default; `lrfer models "$UNSET"` lists them all) or []: every name
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in keep)]
    return [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in drop)]


def _fnmatch_patterns(value: str | Iterable[str] | None, what: str) -> list[str]:
    """:func:`list_models`' ``what`` argument as lowercase fnmatch patterns (none for ``None``, ``""`` or an
    empty list); TypeError naming ``what`` for anything but a str or a list of them.

    >>> _fnmatch_patterns(["GMENET-*", "*-8px"], "pattern")
    ['gmenet-*', '*-8px']
    """
    if value is None or value == "":
        return []
    several = isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))
    patterns = [value] if isinstance(value, str) else list(value) if several else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{what} must be an fnmatch pattern (str) or a list of them; got {value!r}")
    return [p.lower() for p in patterns]


def default_model() -> str:
    """The manifest's default model name.

    >>> default_model()  # doctest: +SKIP
    'gmenet-fer2013-16px'
    """
    default = load_manifest().default
    if default is None:
        raise UnknownModelError("the weights manifest sets no default model yet; pass a name from "
                                f"lrfer.zoo.list_models() ({list_models() or 'none available'})")
    return default


def get_spec(name: str) -> ModelSpec:
    """The manifest entry for ``name``.

    Raises :class:`DatasetUnavailableError` for RAF-DB (and other undistributable) names and
    :class:`UnknownModelError`, listing close matches, for anything else not in the manifest.

    >>> get_spec("gmenet-fer2013-16px").arch  # doctest: +SKIP
    'gmenet'
    """
    manifest = load_manifest()
    key = name.strip().lower()  # names are lowercase (parse_name's grammar)
    if key in manifest.models:
        return manifest.models[key]
    try:
        parsed: ParsedName | None = parse_name(name)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.dataset in manifest.unavailable:
        message = _unavailable_message(name.strip(), parsed, manifest)  # --out NAME.safetensors
        trained = Path(f"{name.strip()}{WEIGHTS_SUFFIX}")
        if trained.is_file():  # the file that command writes is here: the name alone read as the zoo's
            message = (f"no weights for {name.strip()!r} in the zoo, but {str(trained)!r} is here: load it by its "
                       f"path, lrfer.load({str(trained)!r}) (a name is looked up in the zoo).\n{message}")
        raise DatasetUnavailableError(message)
    known = sorted(manifest.models)
    close = difflib.get_close_matches(name.lower(), known, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else (
        f"known models: {', '.join(known)}" if known else "the manifest has no models yet")
    raise UnknownModelError(f"unknown model {name!r}; {hint} (see lrfer.zoo.list_models(); a local "
                            f"'{WEIGHTS_SUFFIX}' file, a folder with {CONFIG_FILENAME} or 'hf://org/repo@commit' "
                            "also work)")


def _unavailable_message(name: str, parsed: ParsedName, manifest: Manifest) -> str:
    item = manifest.unavailable[parsed.dataset]
    arch = parsed.arch.split("-")[0]
    fer = f"{parsed.arch}-fer2013-{parsed.resolution}px"
    if fer in manifest.models:
        alternative = f"Use the FER2013 equivalent {fer!r} instead: lrfer.load({fer!r})."
    else:
        others = [n for n in sorted(manifest.models) if manifest.models[n].dataset == "fer2013"]
        alternative = f"No FER2013 equivalent {fer!r} is in the manifest" + (
            f"; FER2013 models: {', '.join(others)}." if others else " yet.")
    # A bundled variant has a recipe of its own name (lrfer.train.recipes.ZOO_RECIPES): --recipe keeps
    # the variant (gmenet-small) that --arch alone would lose.
    how = f"--recipe {fer}" if fer in manifest.models else f"--arch {arch} --resolution {parsed.resolution}"
    problem = None if fer in manifest.models else _no_recipe(parsed.arch, parsed.resolution)
    if problem is not None:
        return (f"no weights for {name!r}: {item['reason']} {alternative} No training recipe makes it either "
                f"({problem}); see `lrfer train --help`.")
    return (f"no weights for {name!r}: {item['reason']} {alternative} To use RAF-DB, train on your own copy "
            f"and load the .safetensors file it writes:\n  lrfer train {how} --data {item['data_example']} "
            f"--out {name}{WEIGHTS_SUFFIX}")


def _no_recipe(arch: str, resolution: int) -> str | None:
    """Why ``lrfer train --arch ARCH --resolution RES`` would be refused, or would not train the variant
    ``arch`` (``gmenet-small``: ``--arch gmenet`` trains the default widths), or None."""
    try:
        from lrfer.train.recipes import ZOO_RECIPES, check_recipe, recipe_for
    except ImportError:  # an install without the training code: nothing to check against
        return None
    base = arch.split("-")[0]
    if arch != base:
        recipes = [name for name in ZOO_RECIPES if parse_name(name).arch == arch]
        return (f"`--arch {base}` trains {base}'s default widths, not {arch}, "
                + (f"whose recipes are {', '.join(recipes)}" if recipes else "which has no recipe"))
    try:
        check_recipe(recipe_for(arch, resolution))
    except ValueError as err:
        return str(err)
    return None


# -------------------------------------------------------------------------------------------- hashing
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    >>> sha256_file("lrfer/weights_manifest.json")  # doctest: +SKIP
    '3b0c...'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FileHashes(NamedTuple):
    """:func:`safetensors_sha256s`: the file's sha256, and the content sha256 its header records
    (:data:`CONTENT_SHA_METADATA_KEY`) with the one recomputed, both ``None`` without that key."""

    whole: str
    recorded: str | None
    content: str | None


def safetensors_sha256s(path: str | os.PathLike[str]) -> FileHashes:
    """Hex sha256 of a safetensors file and, when its header records one, of its content (the file as
    :func:`save_weights` writes it without :data:`CONTENT_SHA_METADATA_KEY`), in one read."""
    whole = hashlib.sha256()
    with open(path, "rb") as handle:
        length = handle.read(8)
        size = int.from_bytes(length, "little")
        header_bytes = handle.read(size) if size <= MAX_HEADER_BYTES else b""  # else damaged: hashed as data
        whole.update(length + header_bytes)
        recorded, content = _recorded_content_sha(header_bytes)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            whole.update(chunk)
            if content is not None:
                content.update(chunk)
    return FileHashes(whole.hexdigest(), recorded, None if content is None else content.hexdigest())


def _recorded_content_sha(header_bytes: bytes) -> tuple[str | None, "hashlib._Hash | None"]:
    """The content sha256 a header records, and a hash fed with the header's bytes as written without
    it (to be fed the tensor bytes); for a file that records only the older tensor-bytes sha256, that
    one and an empty hash; ``(None, None)`` for a header with neither or that does not parse."""
    try:
        header = json.loads(header_bytes)
        metadata = header["__metadata__"]
        if CONTENT_SHA_METADATA_KEY not in metadata:
            legacy = metadata[LEGACY_DATA_SHA_METADATA_KEY]
            return (legacy, hashlib.sha256()) if isinstance(legacy, str) else (None, None)
        recorded = metadata.pop(CONTENT_SHA_METADATA_KEY)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None, None
    if not isinstance(recorded, str):
        return None, None
    return recorded, hashlib.sha256(_join_safetensors(header, b""))


def _verify(path: Path, expected: str, *, cached: bool, what: str, cache_only: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected``; delete bad cached files.
    ``cache_only``: what keeps this call off the network (``HF_HUB_OFFLINE=1``, ``local_files_only=True``), if
    anything: a re-run under it cannot download the deleted copy again."""
    actual = sha256_file(path)
    if actual == expected:
        logger.debug("sha256 ok for %s (%s)", path, actual)
        return
    message = f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}."
    if cached and _remove_cached(path):
        again = f" without {cache_only}" if cache_only else ""
        message += f" The corrupted cached copy was deleted; re-run{again} to download it again."
    elif cached:
        message += " The corrupted cached copy could not be deleted (a read-only cache?): delete it by hand."
    else:
        message += " The file was modified or is not the one the spec describes; restore or re-export it."
    raise ChecksumError(message)


def _remove_cached(path: Path) -> bool:
    """Delete a Hub-cache snapshot entry and the blob it links to; False if one could not be deleted."""
    blob = path.resolve()
    removed = True
    for target in (path, blob):
        try:
            target.unlink()
            logger.warning("deleted bad cached file %s", target)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.warning("could not delete bad cached file %s: %s", target, err)
            removed = False
    return removed


# ------------------------------------------------------------------------------------------- resolving
WeightSpec = Union[str, "os.PathLike[str]", ModelSpec]


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str | None:
    """Argument > ``$LRFER_CACHE`` > huggingface_hub's default (``None``)."""
    if cache_dir is not None:
        if not str(cache_dir).strip():  # huggingface_hub would use the working folder
            raise ValueError("cache_dir is empty (an unset variable?); pass None for the default cache")
        return str(cache_dir)
    return os.environ.get(CACHE_ENV) or None


def _check_cache_folder(cache_dir: str | None) -> None:
    """ValueError when the cache folder asked for is a file: huggingface_hub then failed with a bare "File
    exists" online, and offline the not-cached error said to copy the cache to that file. (Checked when the
    Hub is used: bundled weights ignore the cache.)"""
    if cache_dir is not None and Path(cache_dir).expanduser().is_file():  # expanded as huggingface_hub does
        raise ValueError(f"the Hub cache folder {cache_dir!r} (cache_dir, --cache-dir or ${CACHE_ENV}) is a file, "
                         "not a folder; point it at a folder, or leave it unset for huggingface_hub's cache")


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` read now (huggingface_hub reads it only at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


#: Packages whose exceptions mean the connection failed (huggingface_hub uses requests before 1.0, httpx after).
TRANSPORT_PACKAGES = frozenset({"httpx", "httpx2", "httpcore", "requests", "urllib3", "http"})


def _is_transport_error(err: BaseException) -> bool:
    """A connection that dropped, timed out or broke its protocol (not a local OSError)."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__module__.split(".")[0] in TRANSPORT_PACKAGES for cls in type(err).__mro__)


#: Errors of this machine's files that hf_xet reports as a bare RuntimeError too ("IO Error: No space
#: left on device (os error 28)"): not a transfer that a second try mends.
_LOCAL_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "ENOENT",
                                                              "ENOTDIR", "EISDIR", "EFBIG", "EIO")
                          if hasattr(errno, name))  # EDQUOT: not on every system


def _raised_by_xet_transfer(err: BaseException) -> bool:
    """hf_xet, which huggingface_hub >= 0.32 uses for Xet-backed files (every new upload to the Hub), reports a
    transfer that failed after its own retries as a bare ``RuntimeError`` raised inside ``xet_get`` (and a
    local file error the same way: that one is not a transfer)."""
    if type(err) is not RuntimeError:
        return False
    local = re.search(r"\(os error (\d+)\)", str(err))
    if local and int(local[1]) in _LOCAL_ERRNOS:
        return False
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return (last is not None and last.tb_frame.f_code.co_name == "xet_get"
            and last.tb_frame.f_globals.get("__name__") == "huggingface_hub.file_download")


#: Where a Hub token comes from, as the advice of an error names them: the commands take the first two (as
#: huggingface_hub's own calls do); a Python caller may pass one instead.
_TOKEN_ADVICE = ("HF_TOKEN, `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0) or, in Python, the "
                 "token= keyword")


def _why_not_fetched(err: BaseException) -> tuple[str, str]:
    """(cause, remedy) of a LocalEntryNotFoundError raised online: huggingface_hub chains what the Hub did."""
    from huggingface_hub.utils import FileMetadataError, HfHubHTTPError

    answer = err.__cause__
    response = getattr(answer, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(answer, HfHubHTTPError) and response is not None and isinstance(status, int):
        said = getattr(answer, "server_message", None) or response.headers.get("X-Error-Message") or ""
        said = f" ({said.strip().rstrip('.')})" if said.strip() else ""
        if status == 429:
            return (f"the Hub refused the request: HTTP 429, too many requests{said}",
                    f"wait and run it again, or log in ({_TOKEN_ADVICE}) for a higher rate limit")
        if status >= 500:
            return f"the Hub answered HTTP {status}, a server error{said}", "run it again later"
        return (f"the Hub refused the request: HTTP {status}{said}",
                f"check the repo and your access to it (a token: {_TOKEN_ADVICE})")
    if isinstance(answer, FileMetadataError):
        return (f"the server at HF_ENDPOINT does not answer like the Hub ({answer})",
                "check HF_ENDPOINT and the proxy settings (HTTPS_PROXY)")
    return "the Hub could not be reached", "connect this machine to the Hub"


#: Variables that send Hub requests through a proxy, which resolves the Hub's name itself.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


#: How long a failed lookup of the Hub's name is believed (seconds): one load asks for a config and
#: then the weights, and a resolver without network can take seconds to say no each time.
UNRESOLVED_HOST_MEMORY_S = 30.0
_unresolved_until: dict[str, float] = {}


def _unresolved_hub_host() -> str | None:
    """The Hub's host name when this machine cannot resolve it (no network, no DNS), else None.

    huggingface_hub retries a failed connection five times with back-off: about 25 s before the
    not-cached error on a machine without network. A name lookup fails at once; without a name the
    Hub cannot be reached, so the cache is read as if offline. Behind a proxy the proxy resolves it.
    A failed lookup is remembered for ``UNRESOLVED_HOST_MEMORY_S``; a successful one is not."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    host = urlsplit(str(constants.ENDPOINT)).hostname
    if not host:
        return None
    if time.monotonic() < _unresolved_until.get(host, -math.inf):
        return host
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        _unresolved_until[host] = time.monotonic() + UNRESOLVED_HOST_MEMORY_S
        return host
    except (OSError, UnicodeError):  # anything else: let huggingface_hub try and report
        return None
    _unresolved_until.pop(host, None)
    return None


@dataclass(frozen=True)
class _HubAccess:
    """How the Hub is asked for files: the ``token`` handed to ``hf_hub_download`` (``None``: huggingface_hub's
    own, HF_TOKEN or the saved login; left out of the repr, so it is never shown) and ``local_files_only``
    (the cache alone, as ``HF_HUB_OFFLINE=1``)."""

    token: str | bool | None = field(default=None, repr=False)
    local_files_only: bool = False


_DEFAULT_ACCESS = _HubAccess()


def _hub_access(token: Any, local_files_only: Any) -> _HubAccess:
    """The checked ``token`` and ``local_files_only`` arguments of :func:`resolve`; errors never show the token."""
    if token is not None and not isinstance(token, (str, bool)):
        raise TypeError(f"token must be a str, True, False or None, got a {type(token).__name__}")
    if isinstance(token, str) and not token.strip():
        raise ValueError("token is empty (an unset variable?); pass None for huggingface_hub's default "
                         "(HF_TOKEN, or the token `hf auth login` saved)")
    if isinstance(token, str):
        _check_token_characters(token)
    if not isinstance(local_files_only, bool):
        raise TypeError(f"local_files_only must be True or False, got a {type(local_files_only).__name__}")
    return _HubAccess(token, local_files_only)


def _check_token_characters(token: str) -> None:
    """ValueError, naming the place but not the token, when it holds a character an HTTP header cannot carry (a
    space, a newline: a token read from a file keeps its last one): httpx's error quoted the whole header, token
    and all, and lrfer reported it as a broken connection."""
    bad = next((i for i, char in enumerate(token) if not "!" <= char <= "~"), None)
    if bad is not None:
        kind = {" ": "a space", "\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(
            token[bad], "a character that is not printable ASCII")
        raise ValueError(f"token holds {kind} at position {bad} of {len(token)}, which an HTTP header cannot carry "
                         "(a token read from a file keeps its newline: strip it)")


def _hub_download(repo_id: str, filename: str, revision: str, cache_dir: str | None, label: str,
                  access: _HubAccess = _DEFAULT_ACCESS) -> Path:
    """``hf_hub_download`` (with ``access``'s token, and only from the cache when ``access.local_files_only``)
    with a clear error when offline and not cached."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError  # also there before huggingface_hub 0.25

    _check_cache_folder(cache_dir)
    offline = _offline()
    cache_only = offline or access.local_files_only
    unresolved = None if cache_only else _unresolved_hub_host()
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=access.token,
                               local_files_only=cache_only or unresolved is not None)
    except LocalEntryNotFoundError as err:
        from huggingface_hub import constants

        if access.local_files_only:
            cause, remedy = "local_files_only=True was given", "leave out local_files_only=True to fetch it"
            if offline:
                cause, remedy = f"{cause} (and HF_HUB_OFFLINE=1 is set)", f"{remedy} and unset HF_HUB_OFFLINE"
        elif offline:
            cause, remedy = "HF_HUB_OFFLINE=1 is set", "unset HF_HUB_OFFLINE"
        elif unresolved is not None:
            cause, remedy = (f"the Hub's host name {unresolved} could not be resolved (no network or no DNS)",
                             "connect this machine to the Hub")
        else:
            cause, remedy = _why_not_fetched(err)
        if cache_dir:  # the folder asked for (cache_dir, --cache-dir or $LRFER_CACHE): fetch into it, copy it here
            where, fetch = cache_dir, f"`lrfer download {label} --cache-dir {shlex.quote(cache_dir)}`"
            copy = f"copy that folder to {cache_dir} here"
        else:  # huggingface_hub's, as HF_HOME / HF_HUB_CACHE made it when huggingface_hub was imported
            where, fetch = f"the huggingface_hub cache ({constants.HF_HUB_CACHE})", f"`lrfer download {label}`"
            copy = f"copy its cache here (point ${CACHE_ENV} at the copy)"
        raise NotCachedError(
            f"{filename} of {label} ({repo_id}@{revision}) is not in {where} and {cause}. Run {fetch} on a "
            f"connected machine and {copy}, or {remedy}."
        ) from (None if cache_only else err)
    except HfHubHTTPError:  # the Hub's answers (404, 401, ...): their own messages
        raise
    except Exception as err:
        if not (_is_transport_error(err) or _raised_by_xet_transfer(err)):  # a full disk, a read-only cache, a bug
            raise
        raise HubDownloadError(f"downloading {filename} of {label} ({repo_id}@{revision}) failed: {err}. Check "
                               "the connection (and HF_ENDPOINT or a proxy, if set) and run the command again.") from err
    return Path(path)


def _check_suffix(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise UnsupportedFormatError(
            f"{path}: {suffix} checkpoints are pickles and are never loaded (they can run code). Convert it "
            f"once, in a trusted environment, with lrfer.zoo.save_weights(state_dict, 'model{WEIGHTS_SUFFIX}', entry)."
        )
    if suffix != WEIGHTS_SUFFIX:
        raise UnsupportedFormatError(f"{path}: only '{WEIGHTS_SUFFIX}' weights are supported, got {suffix or 'no suffix'!r}")


def _read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header's metadata; :class:`ChecksumError` when the file is not whole safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.metadata() or {}
    except SafetensorError as err:
        raise ChecksumError(f"{path} is not a readable safetensors file ({err}): truncated or corrupt; "
                            "copy or export it again") from None


#: What a config or manifest entry must say as the weights file's own header does: the fields that
#: decide how faces are fed to the network and how its outputs are read. (The temperature may be
#: re-fitted after export; only a config that leaves it out, falling back to 1.0, is refused.)
HEADER_CHECKED_FIELDS = ("arch", "model_kwargs", "resolution", "classes", "mean", "std", "alignment")


def _check_against_header(spec: ModelSpec, path: Path, metadata: dict[str, str],
                          given: Collection[str] | None = None) -> None:
    """ManifestError if ``spec`` (from a manifest or a ``lrfer_config.json``, whose keys are ``given``)
    contradicts the spec that :func:`save_weights` wrote into the file: a config that listed the
    classes in another order, or left out the temperature, would mislabel or mis-scale every face of
    a file whose sha256 it has right."""
    if SPEC_METADATA_KEY not in metadata:
        return
    embedded = ModelSpec.from_dict({**_read_embedded_entry(path, metadata), "file": spec.file, "sha256": spec.sha256,
                                    "source": dict(spec.source)}, where=f"{path}: {SPEC_METADATA_KEY!r} metadata")
    wrong = [f"{field} {_checked(spec, field)!r} (the file: {_checked(embedded, field)!r})"
             for field in HEADER_CHECKED_FIELDS if not _same(_checked(spec, field), _checked(embedded, field))]
    if given is not None and "temperature" not in given and not _same(spec.temperature, embedded.temperature):
        wrong.append(f"no temperature, so 1.0 (the file: {embedded.temperature!r})")
    if wrong:
        raise ManifestError(f"the entry of {spec.name!r} contradicts the header of {path}: " + "; ".join(wrong)
                            + f". Write the entry from the file: lrfer info {shlex.quote(str(path))} --config")


def _checked(spec: ModelSpec, field: str) -> Any:
    """A field as the network sees it: the build arguments without an input size equal to the resolution."""
    if field != "model_kwargs":
        return getattr(spec, field)
    return {k: v for k, v in spec.model_kwargs.items() if not (k == "input_size" and v == spec.resolution)}


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats equal to rounding (a config written by another tool)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return a == b


def _read_embedded_entry(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if SPEC_METADATA_KEY not in metadata:
        raise ManifestError(
            f"{path} has no {SPEC_METADATA_KEY!r} metadata, so its architecture and labels are unknown; write it "
            "with lrfer.zoo.save_weights(state_dict, path, entry), or put it in a folder next to a "
            f"{CONFIG_FILENAME} that names it"
        )
    return _manifest_entry(metadata[SPEC_METADATA_KEY], f"{path}: {SPEC_METADATA_KEY!r} metadata")


def _read_config(path: Path) -> dict[str, Any]:
    """A ``lrfer_config.json`` in UTF-8, with or without a byte-order mark, or in UTF-16/32 (as ``json.loads``
    reads bytes): Windows PowerShell 5 writes ``lrfer info F --config > lrfer_config.json`` as UTF-16 with a
    BOM, and ``Out-File -Encoding utf8`` UTF-8 with one; both were "not valid JSON" / "not UTF-8 text"."""
    data = path.read_bytes()
    try:
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as err:  # a ValueError that would name neither the file nor what is wrong
        raise ManifestError(f"{path} is not UTF-8 text ({err})") from None
    return _manifest_entry(text, str(path))


def _manifest_entry(text: str, where: str) -> dict[str, Any]:
    """``text`` parsed as one manifest entry (a JSON object); a :class:`ManifestError` naming ``where`` otherwise."""
    entry = _parse_json(text, where)
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} must hold one manifest entry (a JSON object), not {type(entry).__name__}")
    return entry


def _resolve_local_file(path: Path, metadata: dict[str, str] | None = None) -> tuple[ModelSpec, Path]:
    """A weights file loaded by path: checked against the sha256 that :func:`save_weights` recorded in
    its header; a file without one (written otherwise) against the manifest entry of its file name or,
    failing that, of the model name in its metadata, if any. ``metadata``: the header's, where the caller
    has read it already (:func:`_read_metadata`)."""
    _check_suffix(path)
    hashes = safetensors_sha256s(path)
    logger.info("%s sha256 %s", path, hashes.whole)
    by_file = next((m for m in load_manifest().models.values() if m.file == path.name), None)
    try:
        metadata = _read_metadata(path) if metadata is None else metadata
    except ChecksumError as err:
        hint = f"; re-download it with `lrfer download {by_file.name}`" if by_file is not None else ""
        raise ChecksumError(f"{err}{hint}") from None
    if hashes.recorded is not None and hashes.content != hashes.recorded:
        raise ChecksumError(f"sha256 mismatch for {path}: its header records {hashes.recorded}, its content hashes "
                            f"to {hashes.content}. The file was modified or damaged; copy or export it again.")
    entry = _read_embedded_entry(path, metadata)
    known = by_file or load_manifest().models.get(str(entry.get("name")))
    if hashes.recorded is None and known is not None and known.sha256 != hashes.whole:
        raise ChecksumError(f"sha256 mismatch for {path}: the manifest's {known.name!r} expects {known.sha256}, "
                            f"got {hashes.whole}. The file was modified: re-download it with `lrfer download "
                            f"{known.name}`, or, if it is a model of your own, write it with "
                            "lrfer.zoo.save_weights (which records its sha256) under a name of its own.")
    for key in ("file", "sha256"):
        entry.pop(key, None)
    entry.update(file=path.name, sha256=hashes.whole, source=_local_source(path))
    spec = ModelSpec.from_dict(entry, where=f"{path} metadata")
    # after the entry is accepted: a file refused anyway (a run's final weights, arch and config only)
    # gets its error alone, not a warning about loading it first
    if hashes.recorded is None and known is None:
        logger.warning("%s records no sha256 and no manifest entry names it, so nothing could verify it (sha256 %s); "
                       "lrfer.zoo.save_weights writes files that record theirs", path, hashes.whole)
    return spec, path


def _local_source(path: Path) -> dict[str, str]:
    """A local spec's ``source``: its path made absolute (not resolved: a link stays the link), so that the spec
    still finds its weights once the working folder has changed (a relative path then named another file)."""
    return {"kind": "local", "path": str(path.absolute())}


def _resolve_local_dir(folder: Path) -> tuple[ModelSpec, Path]:
    config = folder / CONFIG_FILENAME
    if not config.is_file():
        return _resolve_lone_weights_file(folder)
    entry = _read_config(config)
    entry["source"] = _local_source(folder)
    spec = ModelSpec.from_dict(entry, where=str(config))
    weights = folder / spec.file
    if not weights.is_file():
        raise FileNotFoundError(f"{config} names {spec.file!r} but {weights} does not exist")
    return spec, _fetch(spec, None, given=entry.keys())


def _resolve_lone_weights_file(folder: Path) -> tuple[ModelSpec, Path]:
    """A folder without ``lrfer_config.json``: its one ``.safetensors`` file, loaded as by its path when its header
    holds the entry :func:`save_weights` writes; otherwise a FileNotFoundError saying what the folder needs."""
    files = sorted(p.name for p in folder.iterdir()
                   if p.suffix.lower() == WEIGHTS_SUFFIX and not p.name.startswith(".") and p.is_file())
    config = folder / CONFIG_FILENAME
    if not files:
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILENAME} and no {WEIGHTS_SUFFIX} file; a weights folder "
                                f"holds {CONFIG_FILENAME} (a manifest entry) and the {WEIGHTS_SUFFIX} file it names, "
                                f"or a single {WEIGHTS_SUFFIX} file written by lrfer.zoo.save_weights (or lrfer train)")
    if len(files) > 1:
        shown = ", ".join(files[:5]) + (f", ... (+{len(files) - 5})" if len(files) > 5 else "")
        first = shlex.quote(str(folder / files[0]))
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_FILENAME} and {len(files)} {WEIGHTS_SUFFIX} files ({shown}), so which to load "
            f"is not clear: give the file's path, or add a {CONFIG_FILENAME} naming the one to load (for a file "
            f"written by lrfer: lrfer info {first} --config > {shlex.quote(str(config))})")
    path = folder / files[0]
    metadata = _read_metadata(path)  # read once: what says it is lrfer's, then what it is loaded by
    if SPEC_METADATA_KEY not in metadata:
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_FILENAME}, and its one weights file {files[0]} has no {SPEC_METADATA_KEY!r} "
            f"metadata (written by other means than lrfer.zoo.save_weights), so its architecture and labels are "
            f"unknown: add a {CONFIG_FILENAME}, a manifest entry (name, arch, config, classes, mean, std, ...) whose "
            f"'file' is {files[0]!r} and 'sha256' that file's sha256")
    return _resolve_local_file(path, metadata)


def _hub_uri(text: str) -> str | None:
    """``text`` as ``hf://org/repo[@revision]`` when it is a Hub id, else ``None``: ``hf://`` or timm's
    ``hf-hub:`` / ``hf_hub:`` (``hf-hub://`` too, a common slip), the scheme in any case (URL schemes are
    case-insensitive: ``HF://``, ``Hf-Hub:``), surrounding space dropped (a line read from a file). The repo
    and revision keep their case. :func:`resolve` (so :func:`load_model`, :func:`info`, :func:`download`
    and the CLI) reads Hub ids through it.

    >>> _hub_uri("HF-HUB:Org/Repo@v1")
    'hf://Org/Repo@v1'
    >>> _hub_uri("gmenet-fer2013-16px") is None
    True
    """
    stripped = text.strip()
    lowered = stripped.lower()
    prefix = next((p for p in TIMM_HF_PREFIXES if lowered.startswith(p)), None)
    if prefix is not None:
        return HF_PREFIX + stripped[len(prefix):].removeprefix("//")
    if lowered.startswith(HF_PREFIX):
        return HF_PREFIX + stripped[len(HF_PREFIX):]
    return None


def _resolve_hf_uri(uri: str, cache_dir: str | None, revision: str | None = None,
                    access: _HubAccess = _DEFAULT_ACCESS) -> tuple[ModelSpec, Path]:
    """The spec and weights of ``hf://org/repo[@rev]``; ``revision`` (the keyword, normalised): the revision when
    the id names none, and one it names must be the same."""
    # "hf://org/repo/" (a folder's spelling, as HfFileSystem's paths end): the same repo
    uri = uri.rstrip("/")
    match = _HF_RE.match(uri)
    if match is None:
        raise ValueError(f"{uri!r} is not 'hf://org/repo' or 'hf://org/repo@revision'")
    repo_id, named = match["repo"], match["rev"]
    if named is not None:
        named = _normalised_revision(named)
        if revision is not None and revision != named:
            raise ValueError(f"{uri!r} names the revision {named!r} and revision={revision!r} another; give the "
                             "revision once (in the id or as revision=), or the same one in both")
    elif revision is not None:  # named in the id from here on: the errors' `lrfer download` fetches that revision
        uri = f"{HF_PREFIX}{repo_id}@{revision}"
    revision = named if named is not None else "main" if revision is None else revision  # "" is checked, not main
    _check_revision(uri, revision)
    if not _COMMIT_RE.match(revision):
        logger.warning("%s is not pinned to a commit; pin it (hf://%s@<40-hex commit>) for reproducible weights",
                       uri, repo_id)
    config = _hub_download(repo_id, CONFIG_FILENAME, revision, cache_dir, uri, access)
    commit = config.parent.name if _COMMIT_RE.match(config.parent.name) else revision  # snapshots/<commit>/
    # A damaged cached config (not JSON, or naming other weights) is deleted, to be fetched again next
    # time; one that parses but that this lrfer refuses (e.g. written for a newer one) is kept.
    try:
        entry = _read_config(config)
    except ManifestError:
        _remove_cached(config)
        raise
    entry["source"] = {"kind": "hub", "repo_id": repo_id, "revision": commit}
    spec = ModelSpec.from_dict(entry, where=f"{uri} {CONFIG_FILENAME}")
    try:
        return spec, _fetch(spec, cache_dir, label=uri, given=entry.keys(), access=access)
    except ChecksumError:
        _remove_cached(config)
        raise


def _check_revision(uri: str, revision: str, os_name: str | None = None) -> None:
    """ValueError unless ``revision`` is a name git accepts for a branch or tag (``git check-ref-format
    --allow-onelevel``; ``v1.0+cpu`` is one) or a commit. huggingface_hub writes refs/<revision> in its cache,
    so "@../../x" would write (and, offline, read) a file outside the cache: git's rules refuse it. On
    Windows (``os_name``, by default ``os.name``, is ``"nt"``) a name holding a character Windows refuses
    in file names (``<>"|``, which git allows) is refused too: the cache could not hold it (an obscure
    OSError from huggingface_hub otherwise), and so is a part that Windows reserves for a device (``CON``,
    ``nul.txt``, ``COM1``: the file would be the device) or that ends in a dot or space (dropped there)."""
    parts = revision.split("/")
    if (_REF_FORBIDDEN_RE.search(revision) or revision == "@" or revision.endswith(".") or "" in parts
            or any(part.startswith(".") or part.endswith(".lock") for part in parts)):
        raise ValueError(f"{uri!r}: {revision!r} is not a revision (a commit hash, branch or tag, named as git "
                         "allows: no '..', '@{', space, control character or any of ~^:?*[\\, no empty part "
                         "between slashes, no part starting with '.' or ending in '.lock', not ending in '.', "
                         "not '@')")
    problem = _windows_name_problem(revision) if (os.name if os_name is None else os_name) == "nt" else None
    if problem is not None:
        raise ValueError(f"{uri!r}: the revision {revision!r} {problem}, so the Hub cache cannot hold it "
                         "(huggingface_hub writes the revision as a file name); use the full 40-hex commit sha "
                         f"instead: {uri.partition('@')[0]}@<commit>")


def _normalised_revision(revision: str) -> str:
    """A commit as some tools print it (upper case) in lower case, as git reads it; any other name as it is."""
    return revision.lower() if _COMMIT_RE.match(revision.lower()) else revision


def _revision_argument(revision: Any) -> str | None:
    """The ``revision`` keyword of :func:`resolve`, normalised (a str or ``None``; what it may name is checked
    where the kind of weights is known)."""
    if revision is None:
        return None
    if not isinstance(revision, str):
        raise TypeError(f"revision must be a str (a commit, branch or tag) or None, got a {type(revision).__name__}")
    return _normalised_revision(revision)


def _check_pinned_revision(spec: ModelSpec, revision: str | None, what: str) -> None:
    """ValueError unless ``revision`` (the keyword) is ``None`` or the commit ``spec`` pins its Hub weights to:
    the spec records that commit's sha256, so other weights cannot load under it. ``what`` names the spec."""
    if revision is None:
        return
    if spec.source["kind"] != "hub":
        _refuse_revision(revision, f"{what} has {spec.source['kind']} weights")
    repo_id, pinned = spec.source["repo_id"], spec.source["revision"]
    _check_revision(f"{HF_PREFIX}{repo_id}@{revision}", revision)
    if revision != pinned:
        raise ValueError(f"{what} pins its weights to {repo_id}@{pinned} (with their sha256), so revision="
                         f"{revision!r} cannot load under it; load another revision of that repo as "
                         f"'{HF_PREFIX}{repo_id}@{revision}' (its {CONFIG_FILENAME} gives that revision's sha256)")


def _refuse_revision(revision: str, why: str) -> NoReturn:
    """The ValueError for a ``revision`` given for weights that do not come from the Hub."""
    raise ValueError(f"revision={revision!r} applies only to Hub weights, and {why}; leave revision out (a Hub "
                     f"repo's revision loads as '{HF_PREFIX}org/repo@REV', or with revision= beside '{HF_PREFIX}org/repo')")


def _check_unfetched(spec: ModelSpec, given: WeightSpec, revision: str | None, token: str | bool | None,
                     local_files_only: bool) -> ModelSpec:
    """``spec`` (``given`` as itself or by its manifest name), once :func:`resolve`'s keywords are checked as resolve
    checks them, for a caller that takes the spec without fetching its weights (:func:`info`,
    :func:`config_entry`): a revision other than the one it pins is refused, not ignored."""
    _hub_access(token, local_files_only)
    _check_pinned_revision(spec, _revision_argument(revision), _named_spec(spec, given))
    return spec


def _named_spec(spec: ModelSpec, given: WeightSpec) -> str:
    """How an error names ``spec``, given as itself or by its manifest name."""
    return f"the ModelSpec {spec.name!r}" if isinstance(given, ModelSpec) else f"the manifest's {spec.name!r}"


def _windows_name_problem(revision: str) -> str | None:
    """Why Windows cannot hold the file refs/<revision> (a character it forbids; a part that is a device name
    such as ``CON`` or ``nul.txt``, or that ends in a dot or space, which it drops), or None."""
    windows = _WINDOWS_FORBIDDEN_RE.search(revision)
    if windows:
        return f"holds {windows[0]!r}, which Windows does not allow in a file name"
    for part in revision.split("/"):
        if _WINDOWS_DEVICE_RE.fullmatch(part):
            return f"has the part {part!r}, a name Windows reserves for a device (CON, PRN, AUX, NUL, COM1-9, LPT1-9)"
        if part.endswith((".", " ")):
            return f"has the part {part!r}, which ends in {part[-1]!r}: Windows drops it from a file name"
    return None


def _fetch(spec: ModelSpec, cache_dir: str | None, label: str | None = None,
           given: Collection[str] | None = None, access: _HubAccess = _DEFAULT_ACCESS) -> Path:
    """The verified local weights path for a spec's source (Hub weights fetched with ``access``)."""
    kind = spec.source["kind"]
    if kind == "bundled":
        path = WEIGHTS_DIR / spec.file
        if not path.is_file():
            raise FileNotFoundError(f"bundled weights {path} for {spec.name!r} are missing; reinstall lrfer "
                                    "(the wheel ships lrfer/weights/*.safetensors)")
        _verify(path, spec.sha256, cached=False, what=spec.name)
    elif kind == "hub":
        repo_id, revision = spec.source["repo_id"], spec.source["revision"]
        path = _hub_download(repo_id, spec.file, revision, cache_dir, label or _download_label(spec), access)
        _verify(path, spec.sha256, cached=True, what=f"{spec.name} ({repo_id}@{revision}/{spec.file})",
                cache_only=_cache_only_reason(access))
    else:
        path = Path(spec.source["path"])
        path = path / spec.file if path.is_dir() else path
        _verify(path, spec.sha256, cached=False, what=spec.name)
    _check_against_header(spec, path, _read_metadata(path), given)  # a sha256 match is no proof that it is safetensors
    return path


def _cache_only_reason(access: _HubAccess) -> str | None:
    """What keeps a Hub fetch in the cache: ``local_files_only=True``, ``HF_HUB_OFFLINE=1`` (both named), or None."""
    reasons = [name for name, on in (("local_files_only=True", access.local_files_only), ("HF_HUB_OFFLINE=1", _offline()))
               if on]
    return " and ".join(reasons) or None


def _download_label(spec: ModelSpec) -> str:
    """What ``lrfer download`` takes to fetch a Hub spec's weights: its name when the manifest holds those
    weights under it, else its Hub id (a spec read from a Hub repo's config has a name no manifest knows)."""
    known = load_manifest().models.get(spec.name)
    if known is not None and known.sha256 == spec.sha256:
        return spec.name
    return f"{HF_PREFIX}{spec.source['repo_id']}@{spec.source['revision']}"


def resolve(spec: WeightSpec, cache_dir: str | os.PathLike[str] | None = None, *, revision: str | None = None,
            token: str | bool | None = None, local_files_only: bool = False) -> tuple[ModelSpec, Path]:
    """Turn any weight spec into ``(ModelSpec, verified local .safetensors path)``.

    ``spec`` is a manifest name, a :class:`ModelSpec`, a local ``.safetensors`` file, a folder with
    ``lrfer_config.json`` (or with one ``.safetensors`` file written by :func:`save_weights`), or
    ``hf://org/repo[@revision]`` (or timm's ``hf-hub:org/repo[@revision]``). A local spec's ``source`` holds
    its absolute path.
    Hub files go to ``cache_dir`` > ``$LRFER_CACHE`` > the huggingface_hub default cache; the sha256
    is always checked.

    The keywords are huggingface_hub's, for Hub weights (``hf_hub_download``'s, ``from_pretrained``'s):

    * ``revision``: the commit, branch or tag of a Hub id that names none (``resolve("hf://org/repo",
      revision="v1")`` is ``resolve("hf://org/repo@v1")``); one that names another raises ``ValueError``.
      A manifest name (or :class:`ModelSpec`) with Hub weights pins a commit and its sha256: only that
      commit is taken (load another as ``hf://org/repo@REV``). Bundled or local weights take none.
    * ``token``: handed to ``hf_hub_download`` (``None``: huggingface_hub's, ``HF_TOKEN`` or the token
      ``hf auth login`` saved; ``False``: none is sent). It is never logged or put into an error.
    * ``local_files_only``: use the cache alone, as ``HF_HUB_OFFLINE=1`` does; weights not in it raise
      :class:`NotCachedError` naming it.

    >>> spec, path = resolve("gmenet-fer2013-16px")  # doctest: +SKIP
    >>> spec, path = resolve("runs/mine/gmenet-raf-16px.safetensors")  # doctest: +SKIP
    >>> spec, path = resolve("hf://org/repo", revision="<commit>", local_files_only=True)  # doctest: +SKIP
    """
    cache = _cache_dir(cache_dir)
    revision = _revision_argument(revision)
    access = _hub_access(token, local_files_only)
    if isinstance(spec, ModelSpec):
        _check_pinned_revision(spec, revision, _named_spec(spec, spec))
        return spec, _fetch(spec, cache, access=access)
    hub_id = _hub_uri(spec) if isinstance(spec, str) else None
    if hub_id is not None:
        return _resolve_hf_uri(hub_id, cache, revision, access)
    if isinstance(spec, str) and not spec.strip():  # Path("") is the working folder (an unset variable)
        get_spec(spec)  # raises UnknownModelError listing the models
    path = Path(spec)
    if isinstance(spec, str) and _reads_as_name(spec):
        resolved = get_spec(spec)
        _check_pinned_revision(resolved, revision, _named_spec(resolved, spec))
        return resolved, _fetch(resolved, cache, access=access)
    folder = path.is_dir()
    if not folder:
        if not path.is_file() and path.suffix.lower() not in REFUSED_SUFFIXES:  # pickles are refused by name
            raise FileNotFoundError(_missing_path_message(path, spec if isinstance(spec, str) else None))
        _check_suffix(path)
    if revision is not None:
        _refuse_revision(revision, f"{str(path)!r} is a local {'folder' if folder else 'file'}")
    return _resolve_local_dir(path) if folder else _resolve_local_file(path)


#: Suffixes of files (weights, pickles, configs) that a missing ``dir/name.suffix`` was meant as: such a
#: path gets no Hub hint, where ``timm/resnet18.a1_in1k`` (a Hub id with a dot) does.
_FILE_SUFFIXES = (WEIGHTS_SUFFIX, ".json", ".onnx") + REFUSED_SUFFIXES
#: A URL (``https://huggingface.co/org/repo/tree/<rev>``): lrfer fetches only Hub ids, never URLs.
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HF_URL_RE = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
                        r"(?:/(?:tree|blob|resolve|commit)/(?P<rev>[^/?#]+))?")


def _url_message(url: str) -> str:
    """The error for a model given as a URL: a Hub page's ``hf://`` spelling, else what to do instead."""
    match = _HF_URL_RE.match(url)
    if match is None:
        return (f"{url!r} is a URL, and lrfer downloads weights only from the Hugging Face Hub: download the "
                f".safetensors file and give its path, or give 'hf://org/repo@<40-hex commit>'")
    repo, rev = match["repo"], match["rev"]
    pinned = f"'{HF_PREFIX}{repo}@{rev}'" if rev else f"'{HF_PREFIX}{repo}@<40-hex commit>'"
    return (f"{url!r} is a URL, not a model spec; for the Hugging Face Hub repo {repo!r} use {pinned} "
            f"(or '{HF_PREFIX}{repo}' for its main branch)")


def _missing_path_message(path: Path, text_given: str | None = None) -> str:
    """What a weight spec that is not on disk may have meant (``org/repo`` is a Hub id written as a path,
    ``https://huggingface.co/org/repo`` a Hub page). ``text_given``: the caller's string, before
    :class:`~pathlib.Path` folded a URL's ``//``."""
    if path.exists():  # a FIFO, a device, a socket (or a link to one): not a file to read weights from
        return f"{path} is not a regular file (a .safetensors file or a folder with {CONFIG_FILENAME} was expected)"
    if path.is_symlink():  # "does not exist" of a file that `ls` lists
        return (f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist (moved or deleted?); "
                "point the link at the weights file, or give that file's path")
    if text_given is not None and _URL_RE.match(text_given.strip()):
        return _url_message(text_given.strip())
    text = path.as_posix()
    match = _HF_RE.match(HF_PREFIX + text)
    if match and path.suffix.lower() not in _FILE_SUFFIXES and not path.is_absolute():
        repo = match["repo"]
        pinned = f"'{HF_PREFIX}{text}'" if match["rev"] else f"'{HF_PREFIX}{repo}@<40-hex commit>'"
        return (f"{text} is not a local file or folder; for the Hugging Face Hub repo {repo!r} use "
                f"{pinned} (or '{HF_PREFIX}{repo}' for its main branch)")
    hints: list[str] = []
    zoo_file = next((m.name for m in load_manifest().models.values() if m.file.lower() == text.lower()), None)
    if zoo_file is not None:  # the file name that `lrfer download` prints
        hints.append(f"for the zoo model of that file, give its name: {zoo_file!r}")
    if text.strip().lower() in load_manifest().models:  # Path("<name>"): a path-like is never read as a name
        hints.append(f"for the zoo model of that name, give the name as a str: {text.strip().lower()!r}")
    if text.startswith("~"):
        hints.append(f"'~' is not expanded (write the home folder out: {os.path.expanduser(text)!r})")
    return (f"{path} does not exist (a .safetensors file or a folder with {CONFIG_FILENAME} was expected)"
            + "".join(f"; {hint}" for hint in hints))


def _reads_as_name(text: str) -> bool:
    """Whether :func:`resolve` reads ``text`` as a manifest name: a manifest name stays a name even beside a
    folder of that name (``./name`` is the folder)."""
    return not _looks_like_path(text) and (text in load_manifest().models or not Path(text).exists())


def _looks_like_path(text: str) -> bool:
    """A string with a path separator or a weights suffix is a path, never a manifest name."""
    return "/" in text or os.sep in text or Path(text).suffix.lower() in REFUSED_SUFFIXES + (WEIGHTS_SUFFIX,)


# -------------------------------------------------------------------------------------------- loading
_LOAD_ADVICE = ("The file was made for a different architecture or config; fix the spec's arch/config or use the "
                "weights that match it.")


def _check_state_dict(model: "nn.Module", state: Mapping[str, "torch.Tensor"], spec: ModelSpec, *,
                      what: str, advice: str) -> None:
    """:class:`StateDictMismatchError` naming the missing and unexpected keys and the shape mismatches, unless
    ``state`` is ``model``'s state dict; ``what`` names the weights, ``advice`` ends the message
    (:func:`_dry_build` words both)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: weights {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if not (missing or unexpected or shapes):
        return

    def show(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" ... (+{len(items) - 8})" if len(items) > 8 else "")

    parts = [f"{label} ({len(items)}): {show(items)}" for label, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
    raise StateDictMismatchError(
        f"{what} do not fit build_model({spec.arch!r}, **{spec.model_kwargs}): " + "; ".join(parts) + ". " + advice
    )


class _OverBudget(Exception):
    """Building the network has called torch far more often than the weights file's tensors call for (see
    :func:`_dry_build`)."""


def _dry_build(spec: ModelSpec, path: Path, state: Mapping[str, "torch.Tensor"], *, what: str | None = None,
               advice: str = _LOAD_ADVICE) -> None:
    """Build ``spec``'s network on the meta device (no memory) and raise unless its state dict is the file's.

    The config comes from the file or its ``lrfer_config.json``: one asking for a width of 10**6 or a million
    blocks would otherwise allocate gigabytes (or run for hours) before the strict load found that the file
    does not fit. On the meta device a width costs nothing; the number of modules costs time, so the build is
    stopped once it has called torch far more often than the file's tensors need (lrfer's networks make 4 to
    5 calls per state-dict entry: a tensor made, then initialised). The calls are counted by a torch
    function mode, which sees this thread's calls only: a global parameter-registration hook would be added
    to and removed from a dict that every other thread building a module iterates ("OrderedDict mutated
    during iteration"). A config torch cannot build at all (a negative or overflowing width) is a
    :class:`ManifestError` naming it. :func:`save_weights` makes the same check before it writes (``what`` and
    ``advice`` word its messages).
    """
    what = f"weights for {spec.name!r}" if what is None else what
    model = _meta_build(spec.arch, spec.model_kwargs, len(state), what, str(path))
    _check_state_dict(model, state, spec, what=what, advice=advice)


def _meta_build(arch: str, kwargs: Mapping[str, Any], tensors: int, what: str, where: str) -> "nn.Module":
    """``build_model(arch, **kwargs)`` on the meta device, stopped (:class:`StateDictMismatchError`) once it has
    called torch far more often than ``tensors`` state-dict entries need; :class:`ManifestError` when torch
    cannot build it. ``what`` and ``where`` name the weights in the messages (see :func:`_dry_build`)."""
    import torch
    from torch.overrides import TorchFunctionMode

    from lrfer.models import build_model

    budget = 32 * tensors + 1024

    class Budget(TorchFunctionMode):  # this thread's calls only, unlike a global module hook
        calls = 0

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.calls += 1
            if self.calls > budget:
                raise _OverBudget
            return func(*args, **(kwargs or {}))

    described = f"build_model({arch!r}, **{dict(kwargs)})"
    try:
        with torch.device("meta"), Budget():
            return build_model(arch, **kwargs)
    except _OverBudget:
        raise StateDictMismatchError(
            f"{what} do not fit {described}: building that network took over {budget} tensor operations, far "
            f"more than the {tensors} tensors of {where} need. The config was written for another network, or "
            "the file was made to look like one; it was not built."
        ) from None
    except (KeyError, ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise ManifestError(f"{what} ({where}): {described} fails when laid out on torch's meta device, before "
                            f"the network is built: {err.args[0] if err.args else err}") from None


def load_model(spec: WeightSpec, device: "str | torch.device" = "cpu",
               cache_dir: str | os.PathLike[str] | None = None, *, revision: str | None = None,
               token: str | bool | None = None, local_files_only: bool = False) -> "nn.Module":
    """Build a model and load its verified weights strictly, in eval mode.

    The :class:`ModelSpec` is attached as ``model.pretrained_cfg``. ``revision``, ``token`` and
    ``local_files_only`` are :func:`resolve`'s, for Hub weights.

    >>> model = load_model("gmenet-fer2013-16px")  # doctest: +SKIP
    >>> model.pretrained_cfg.classes  # doctest: +SKIP
    ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
    >>> model = load_model("hf://org/repo", revision="<commit>", token=False)  # doctest: +SKIP
    """
    from safetensors.torch import load as load_safetensors

    from lrfer.models import build_model

    model_spec, path = resolve(spec, cache_dir, revision=revision, token=token, local_files_only=local_files_only)
    # One read: the tensors loaded are the bytes hashed here, not a file that may have been replaced since
    # resolve() checked it (a shared cache, a folder another process writes to).
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != model_spec.sha256:
        raise ChecksumError(f"{path} changed while it was being loaded: sha256 {digest}, verified as "
                            f"{model_spec.sha256} a moment before. Load it again once nothing writes to it.")
    state = load_safetensors(data)
    header, _ = _split_safetensors(data)  # safetensors has checked it
    _check_against_header(model_spec, path, header.get("__metadata__") or {})
    del data
    # The config, and the file's names and shapes against it, are checked there, before any memory is
    # spent on the network: the build below is the same one, for real.
    _dry_build(model_spec, path, state)
    # float32 whatever the caller's default dtype (a float64 default would make float64 networks)
    model = build_model(model_spec.arch, **model_spec.model_kwargs).float()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    model.pretrained_cfg = model_spec  # type: ignore[assignment]  # torch's stubs: a Module's attributes are tensors or modules
    logger.info("loaded %s from %s", model_spec.name, path)
    return model


def save_weights(state_dict: Mapping[str, "torch.Tensor"], path: str | os.PathLike[str],
                 entry: Mapping[str, Any] | ModelSpec) -> str:
    """Write fp16 safetensors with ``entry`` (minus file/sha256) in metadata; return the sha256.

    Floating tensors are stored as fp16, integer buffers are kept. The entry is validated first;
    ``file``, ``sha256`` and ``source`` may be left out (a loaded file's source is its own path). The state
    dict is then checked against the entry's network, laid out on the meta device as :func:`load_model`
    does: missing or unexpected keys and wrong shapes raise :class:`StateDictMismatchError` naming them,
    and nothing is written (such a file was written, and only ``lrfer.load`` refused it). A ``path``
    that is a symbolic link is written through: the file it points to gets the weights, the link stays.

    >>> sha = save_weights(model.state_dict(), "gmenet-raf-16px.safetensors", entry)  # doctest: +SKIP
    """
    import torch
    from safetensors.torch import save

    target = Path(path)
    _check_suffix(target)
    fields = entry.to_dict() if isinstance(entry, ModelSpec) else entry
    meta = {k: _plain(v) for k, v in fields.items() if k not in ("file", "sha256")}
    placeholder = {"file": target.name, "sha256": "0" * 64, "source": {"kind": "bundled"}}
    spec = ModelSpec.from_dict({**placeholder, **meta, "file": target.name}, where="save_weights entry")
    _check_buildable(spec, "save_weights entry")
    if spec.source["kind"] == "local" and isinstance(spec.source["path"], str):
        meta["source"] = _local_source(Path(spec.source["path"]))  # a relative one names another file elsewhere
    _dry_build(spec, target, state_dict, what=f"weights given for {spec.name!r}",
               advice=f"Nothing was written to {target}; give the state dict of the network the entry's arch/config "
                      "builds, or fix the entry's arch/config (classes: one output per class).")
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        tensors[key] = (tensor.to(torch.float16) if tensor.is_floating_point() else tensor).clone().contiguous()
    # written through a symbolic link, to the file it points to (which may not exist yet): renamed over the link,
    # the new file replaced the link and the file it pointed to kept the old weights
    destination = Path(os.path.realpath(target))
    destination.parent.mkdir(parents=True, exist_ok=True)
    blob = sealed(save(tensors, metadata={SPEC_METADATA_KEY: json.dumps(meta, sort_keys=True), "format": "pt"}))
    _write_atomically(destination, blob)
    digest = hashlib.sha256(blob).hexdigest()
    logger.info("wrote %s (sha256 %s)", target, digest)
    return digest


def _write_atomically(target: Path, blob: bytes) -> None:
    """Write ``blob`` to a sibling and rename it over ``target``: a run killed while writing leaves the
    file it was replacing whole (it was truncated: a model lost for the one being exported)."""
    # the thread too: two threads saving one path shared the sibling, and the second rename found it gone
    pending = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        pending.write_bytes(blob)
        pending.replace(target)
    finally:
        pending.unlink(missing_ok=True)


def sealed(blob: bytes) -> bytes:
    """A safetensors file's bytes with its header's keys sorted and its content sha256 recorded in its
    metadata (:data:`CONTENT_SHA_METADATA_KEY`, replacing any there): what :func:`save_weights` writes.

    >>> import torch
    >>> header, data = _split_safetensors(sealed(safetensors_bytes({"a": torch.zeros(2)})))
    >>> recorded = header["__metadata__"].pop(CONTENT_SHA_METADATA_KEY)
    >>> recorded == hashlib.sha256(_join_safetensors(header, data)).hexdigest()
    True
    """
    header, data = _split_safetensors(blob)
    metadata = header.setdefault("__metadata__", {})
    metadata.pop(CONTENT_SHA_METADATA_KEY, None)
    metadata[CONTENT_SHA_METADATA_KEY] = hashlib.sha256(_join_safetensors(header, data)).hexdigest()
    return _join_safetensors(header, data)


def safetensors_bytes(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted: the same tensors and metadata give
    the same bytes, hence the same sha256 (safetensors writes its header in a random key order).

    >>> import torch
    >>> safetensors_bytes({"b": torch.ones(1), "a": torch.zeros(1)}) == safetensors_bytes({"a": torch.zeros(1), "b": torch.ones(1)})
    True
    """
    from safetensors.torch import save

    blob = save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    return _join_safetensors(*_split_safetensors(blob))


def _split_safetensors(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """A safetensors file's bytes as its parsed JSON header and its tensor bytes."""
    length = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def _join_safetensors(header: Mapping[str, Any], data: bytes) -> bytes:
    """The bytes of a safetensors file from its header (written with sorted keys) and tensor bytes."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # the tensors start 8-byte aligned, as safetensors pads them
    return len(text).to_bytes(8, "little") + text + data


#: Licences of the bundled face-detector weights (used by every model's default pipeline).
DETECTOR_LICENSES = {
    "blazeface": "Apache-2.0 (MediaPipe face_detection_full_range, Google; lrfer/weights/BLAZEFACE_LICENSE.txt)",
    "mtcnn": "MIT (facenet-pytorch 2.6.0, Tim Esler; lrfer/weights/MTCNN_LICENSE.txt)",
}


def info(name: WeightSpec, cache_dir: str | os.PathLike[str] | None = None, *, revision: str | None = None,
         token: str | bool | None = None, local_files_only: bool = False) -> dict[str, Any]:
    """A JSON-able summary of a model, including its architecture config, the alignment its faces get
    (template, crop and degradation) and the three licences: a manifest name, or any other weight spec
    :func:`resolve` takes (a local file or folder, a Hub id; its weights are fetched to ``cache_dir``,
    as :func:`download` does, and checked first).

    ``revision``, ``token`` and ``local_files_only`` are :func:`resolve`'s, for Hub weights. A manifest name or a
    :class:`ModelSpec` fetches nothing (its entry is the summary), so only the revision it pins is taken, and
    the other two are checked but have nothing to fetch.

    >>> info("gmenet-fer2013-16px")["license"]  # doctest: +SKIP
    {'code': 'MIT', 'weights': '...', 'data': '...'}
    >>> info("hf://org/private-repo", revision="v1", token=os.environ["READ_TOKEN"])["source"]  # doctest: +SKIP
    {'kind': 'hub', 'repo_id': 'org/private-repo', 'revision': '<commit of v1>'}
    """
    spec = _spec_of(name, cache_dir, revision, token, local_files_only)
    return {
        "name": spec.name,
        "arch": spec.arch,
        "config": _plain(spec.config),
        "dataset": spec.dataset,
        "resolution": spec.resolution,
        "in_chans": spec.in_chans,
        "classes": list(spec.classes),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "temperature": spec.temperature,
        "alignment": _alignment_steps(spec.alignment, spec.resolution),
        "metrics": _plain(spec.metrics),
        "source": _plain(spec.source),
        "file": spec.file,
        "sha256": spec.sha256,
        "license": dict(spec.license),
        "detector_licenses": dict(DETECTOR_LICENSES),
        "paper": spec.paper,
        "description": spec.description,
    }


def _spec_of(name: WeightSpec, cache_dir: str | os.PathLike[str] | None, revision: str | None,
             token: str | bool | None, local_files_only: bool) -> ModelSpec:
    """The spec of ``name``: a :class:`ModelSpec` or a manifest name as it is (:func:`resolve`'s keywords checked
    against it: its weights are not fetched), anything else resolved with them (Hub weights fetched and verified)."""
    if isinstance(name, ModelSpec):
        return _check_unfetched(name, name, revision, token, local_files_only)
    if isinstance(name, str) and _reads_as_name(name) and name.strip().lower() in load_manifest().models:
        # in any case and spacing, as load takes it: a Hub entry is not fetched for it (config_entry fetched
        # the weights, and offline without them raised NotCachedError, for what the manifest holds)
        return _check_unfetched(get_spec(name), name, revision, token, local_files_only)
    return resolve(name, cache_dir, revision=revision, token=token, local_files_only=local_files_only)[0]


def _alignment_steps(alignment: str, resolution: int) -> dict[str, Any]:
    """How the pipeline makes the faces a model with this ``alignment`` and native ``resolution`` is fed
    (:func:`lrfer.faces.align_faces`, then :func:`lrfer.faces.degrade.to_native`): the framing's template and
    crop, then the degradation. Coordinates are in pixels of the aligned frame. ``alignment`` is one of
    :data:`~lrfer.constants.ALIGNMENTS`, as :meth:`ModelSpec.from_dict` checked.

    >>> _alignment_steps("fer2013", 16)["degradation"]
    'area down-sampling of the 48x48 face to 16x16 px'
    """
    degradation = (f"{NATIVE_DOWNSAMPLING} down-sampling of the {HR_SIZE}x{HR_SIZE} face to {resolution}x{resolution} px"
                   if resolution != HR_SIZE else f"none (the model reads the {HR_SIZE}x{HR_SIZE} face)")
    return {
        "name": alignment,
        "crop": f"{HR_SIZE}x{HR_SIZE} px, gray (ITU-R BT.601 luma)",
        "mapping": "5 landmarks mapped onto template_px by a similarity transform (rotation, uniform scale, "
                   "shift); a face without landmarks: its box's centre and mean side onto face_box_px",
        "template_px": {part: list(point) for part, point in zip(LANDMARK_NAMES, FER2013_LANDMARKS)},
        "face_box_px": list(FER2013_BOX),
        "degradation": degradation,
    }


def config_entry(name: WeightSpec, cache_dir: str | os.PathLike[str] | None = None, *, revision: str | None = None,
                 token: str | bool | None = None, local_files_only: bool = False) -> dict[str, Any]:
    """A model's entry as a ``lrfer_config.json`` (or a manifest entry without its ``source``): for a
    weights file, what its header records plus its file name and sha256, ready to publish beside it.
    ``revision``, ``token`` and ``local_files_only`` are :func:`resolve`'s, for Hub weights (a manifest name or a
    :class:`ModelSpec` fetches nothing, as for :func:`info`: only the revision it pins is taken).

    >>> config_entry("gmenet-fer2013-16px")["classes"][0]  # doctest: +SKIP
    'angry'
    >>> config_entry("hf://org/repo", revision="v1", local_files_only=True)["sha256"]  # doctest: +SKIP
    '<sha256 of the weights at v1>'
    """
    spec = _spec_of(name, cache_dir, revision, token, local_files_only)
    entry = spec.to_dict()
    entry.pop("source", None)
    return entry


def download(name: WeightSpec, cache_dir: str | os.PathLike[str] | None = None, *, revision: str | None = None,
             token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """Pre-fetch and verify weights (bundled ones are only verified); return the local path, absolute.

    A bundled model's path is inside the installed package; a Hub model's is in the cache; a local file's,
    or the file of a local folder, is made absolute as a local spec's ``source`` is (a link stays the link).
    ``revision``, ``token`` and ``local_files_only`` are :func:`resolve`'s, for Hub weights
    (``local_files_only=True`` checks that the weights are in the cache, verified, without the network). A
    manifest name with Hub weights also caches its repo's ``lrfer_config.json`` at the pinned commit, when the
    repo has one, so ``hf://org/repo@<commit>`` loads offline too.

    >>> download("gmenet-fer2013-16px")  # doctest: +SKIP
    PosixPath('.../site-packages/lrfer/weights/gmenet-fer2013-16px.safetensors')
    >>> download("hf://org/repo@<commit>")  # doctest: +SKIP
    PosixPath('.../snapshots/<commit>/<file>.safetensors')
    >>> download("hf://org/private-repo", revision="v1", token=os.environ["READ_TOKEN"])  # doctest: +SKIP
    PosixPath('.../snapshots/<commit of v1>/<file>.safetensors')
    """
    spec, path = resolve(name, cache_dir, revision=revision, token=token, local_files_only=local_files_only)
    if spec.source["kind"] == "hub":
        _cache_hub_config(spec, _cache_dir(cache_dir), _hub_access(token, local_files_only))
    # absolute as the path of a folder with lrfer_config.json (its spec's source) is: a file given by a relative
    # path, or a folder's lone file, came back as given, so `lrfer download` printed the two kinds
    return path.absolute()


def _cache_hub_config(spec: ModelSpec, cache_dir: str | None, access: _HubAccess) -> None:
    """Fetch the ``lrfer_config.json`` of a Hub spec's repo at its pinned commit into the cache, unless the cache
    already knows it (fetched, or known to be missing: no request then). :func:`download` of a manifest name
    fetched the weights alone, so the same repo loaded offline as ``hf://org/repo@<commit>`` (the spelling the
    errors and ``lrfer info`` give) was not cached. A repo without one is fine: a manifest entry is its config.
    Kept to the cache (``local_files_only``, ``HF_HUB_OFFLINE``), nothing is fetched."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError

    repo_id, commit = spec.source["repo_id"], spec.source["revision"]
    where = None if cache_dir is None else str(Path(cache_dir).expanduser())  # as hf_hub_download reads it
    known = try_to_load_from_cache(repo_id, CONFIG_FILENAME, cache_dir=where, revision=commit)
    if known is not None or _cache_only_reason(access) is not None:  # a path, or huggingface_hub's "no such file"
        return
    label = f"{HF_PREFIX}{repo_id}@{commit}"
    try:
        _hub_download(repo_id, CONFIG_FILENAME, commit, cache_dir, label, access)
    except EntryNotFoundError:  # the Hub said so; huggingface_hub remembers it in the cache
        logger.debug("%s has no %s; its manifest entry is its config", label, CONFIG_FILENAME)
    except (NotCachedError, HubDownloadError) as err:  # the weights, which were asked for, are there
        logger.warning("the weights of %s are cached, but its repo's %s is not, so %s still needs the network: %s",
                       spec.name, CONFIG_FILENAME, label, err)
