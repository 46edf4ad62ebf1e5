"""Network-free tests of the model zoo: name grammar, manifest schema, integrity, loading."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lrfer import zoo
from lrfer.constants import CLASSES
from lrfer.models import build_model

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_CONFIG = {"width": 8, "input_size": 16}


def tiny_entry(name: str = "baseline-fer2013-16px", **overrides: Any) -> dict[str, Any]:
    """A complete manifest entry for the tiny test model (file/sha256 are placeholders)."""
    entry: dict[str, Any] = {
        "name": name,
        "arch": "baseline",
        "config": dict(TINY_CONFIG),
        "dataset": "fer2013",
        "resolution": 16,
        "in_chans": 1,
        "classes": list(CLASSES),
        "mean": [0.5],
        "std": [0.25],
        "temperature": 1.3,
        "alignment": "fer2013",
        "file": f"{name}.safetensors",
        "sha256": "0" * 64,
        "source": {"kind": "bundled"},
        "license": {"code": "MIT", "weights": "MIT", "data": "FER2013 (research use)"},
        "metrics": {"test_acc": 0.5},
        "recipe": "lrfer train --arch baseline ...",
        "seed": 0,
        "paper": "n/a",
        "description": "tiny test model",
    }
    entry.update(overrides)
    return entry


def tiny_model() -> torch.nn.Module:
    """The tiny baseline with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model("baseline", **TINY_CONFIG)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.fixture
def use_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Point the zoo at a temporary manifest (and a temporary bundled-weights folder)."""
    weights_dir = tmp_path / "bundled"
    weights_dir.mkdir()
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights_dir)

    def write(models: list[dict[str, Any]], default: str | None = None) -> Path:
        shipped = json.loads(zoo.MANIFEST_PATH.read_text())
        data = {"schema_version": 1, "default": default, "models": {m["name"]: m for m in models},
                "unavailable": shipped["unavailable"]}
        path = tmp_path / f"manifest-{len(list(tmp_path.glob('manifest-*')))}.json"
        path.write_text(json.dumps(data))
        monkeypatch.setattr(zoo, "MANIFEST_PATH", path)
        return weights_dir

    return write


# ------------------------------------------------------------------------------------------ name grammar
@pytest.mark.parametrize("name, expected", [
    ("gmenet-fer2013-16px", ("gmenet", "fer2013", 16)),
    ("resnet18-fer2013-48px", ("resnet18", "fer2013", 48)),
    ("gmenet-raf-8px", ("gmenet", "rafdb", 8)),
    ("gmenet-rafdb-8px", ("gmenet", "rafdb", 8)),
    ("gmenet-RAF-DB-12px", ("gmenet", "rafdb", 12)),
    ("gmenet-small-fer2013-24px", ("gmenet-small", "fer2013", 24)),
])
def test_parse_name(name: str, expected: tuple[str, str, int]) -> None:
    assert tuple(zoo.parse_name(name)) == expected


@pytest.mark.parametrize("name", ["gmenet16px", "gmenet-fer2013-16", "gmenet-fer2013-px", "fer2013-16px", "",
                                  "gmenet_fer2013_16px"])
def test_parse_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="<arch>-<dataset>-<res>px"):
        zoo.parse_name(name)


# ---------------------------------------------------------------------------------------- manifest schema
def test_spec_from_valid_entry_is_frozen() -> None:
    spec = zoo.ModelSpec.from_dict(tiny_entry())
    assert spec.classes == CLASSES and spec.mean == (0.5,) and spec.temperature == 1.3
    assert spec.model_kwargs == {"num_classes": 7, "in_chans": 1, **TINY_CONFIG}
    assert zoo.ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(Exception):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.config["width"] = 9  # type: ignore[index]


def test_optional_keys_default() -> None:
    entry = tiny_entry()
    for key in ("temperature", "alignment", "metrics", "recipe", "seed", "paper", "description"):
        del entry[key]
    spec = zoo.ModelSpec.from_dict(entry)
    assert spec.temperature == 1.0 and spec.seed is None and dict(spec.metrics) == {}


def test_unknown_key_rejected() -> None:
    with pytest.raises(zoo.ManifestError, match=r"unknown key\(s\) \['input_sise'\]"):
        zoo.ModelSpec.from_dict(tiny_entry(input_sise=16))


@pytest.mark.parametrize("key", ["arch", "sha256", "classes", "source", "license"])
def test_missing_key_rejected(key: str) -> None:
    entry = tiny_entry()
    del entry[key]
    with pytest.raises(zoo.ManifestError, match=rf"missing required key\(s\) \['{key}'\]"):
        zoo.ModelSpec.from_dict(entry)


@pytest.mark.parametrize("revision", ["main", "v1.0", COMMIT[:7], COMMIT.upper(), COMMIT + "0"])
def test_hub_revision_must_be_full_commit(revision: str) -> None:
    entry = tiny_entry(source={"kind": "hub", "repo_id": "org/repo", "revision": revision})
    with pytest.raises(zoo.ManifestError, match="full 40-hex commit"):
        zoo.ModelSpec.from_dict(entry)


def test_hub_source_with_commit_accepted() -> None:
    spec = zoo.ModelSpec.from_dict(tiny_entry(source={"kind": "hub", "repo_id": "org/repo", "revision": COMMIT}))
    assert spec.source["revision"] == COMMIT


@pytest.mark.parametrize("overrides, message", [
    ({"sha256": "abc"}, "64 lowercase hex"),
    ({"resolution": 24}, "name says 16px"),
    ({"dataset": "rafdb"}, "name says dataset"),
    ({"arch": "gmenet"}, "does not start with arch"),
    ({"config": {"width": 8, "input_size": 24}}, "config.input_size=24"),
    ({"config": {"width": 8, "num_classes": 6}}, "config.num_classes=6"),
    ({"file": "model.pt"}, "plain '\\*\\.safetensors' file name"),
    ({"mean": [0.5, 0.5]}, "list of 1 finite number"),
    ({"std": [0.0]}, "positive"),
    ({"license": {"code": "MIT", "weights": "MIT"}}, "'code', 'weights', 'data'"),
    ({"source": {"kind": "url", "url": "http://x"}}, "source.kind"),
    ({"source": {"kind": "hub", "repo_id": "org/repo", "revision": COMMIT, "token": "x"}}, "exactly the keys"),
    ({"source": {"kind": "hub", "repo_id": "repo", "revision": COMMIT}}, "'org/repo', got 'repo'"),
    ({"resolution": "16"}, "positive int"),
    ({"alignment": "rafdb-aligned"}, r"'alignment' must be one of \['fer2013'\]"),
])
def test_invalid_values_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(zoo.ManifestError, match=message):
        zoo.ModelSpec.from_dict(tiny_entry(**overrides))


def test_manifest_level_checks(tmp_path: Path) -> None:
    def parse(data: dict[str, Any]) -> zoo.Manifest:
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(data))
        return zoo.load_manifest(path)

    good = {"schema_version": 1, "default": None, "models": {"baseline-fer2013-16px": tiny_entry()},
            "unavailable": {}}
    assert list(parse(good).models) == ["baseline-fer2013-16px"]
    with pytest.raises(zoo.ManifestError, match="must be equal"):
        parse({**good, "models": {"other-fer2013-16px": tiny_entry()}})
    with pytest.raises(zoo.ManifestError, match="default 'nope-fer2013-16px'"):
        parse({**good, "default": "nope-fer2013-16px"})
    with pytest.raises(zoo.ManifestError, match="unknown: \\['extra'\\]"):
        parse({**good, "extra": 1})
    with pytest.raises(zoo.ManifestError, match="schema_version 2"):
        parse({**good, "schema_version": 2})
    local = tiny_entry(source={"kind": "local", "path": "/x"})
    with pytest.raises(zoo.ManifestError, match="not 'local'"):
        parse({**good, "models": {"baseline-fer2013-16px": local}})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(zoo.ManifestError, match="broken.json is not valid JSON"):
        zoo.load_manifest(broken)
    with pytest.raises(zoo.ManifestError, match="top level must be a JSON object"):
        parse([good])  # type: ignore[arg-type]
    with pytest.raises(zoo.ManifestError, match="'models' and 'unavailable' must be objects"):
        parse({**good, "models": [tiny_entry()]})
    with pytest.raises(zoo.ManifestError, match=r"unavailable\['rafdb'\] must have exactly the keys"):
        parse({**good, "unavailable": {"rafdb": {"reason": "licence"}}})


def test_package_manifest_is_copy_of_top_level() -> None:
    top, packaged = REPO / "weights_manifest.json", REPO / "lrfer" / "weights_manifest.json"
    assert packaged.read_bytes() == top.read_bytes(), "run: python scripts/sync_manifest.py"
    manifest = zoo.load_manifest()
    assert manifest.schema_version == 1
    assert "rafdb" in manifest.unavailable
    assert manifest.default is None or manifest.default in manifest.models


def test_default_model(use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry()], default="baseline-fer2013-16px")
    assert zoo.default_model() == "baseline-fer2013-16px"
    use_manifest([tiny_entry()])
    with pytest.raises(zoo.UnknownModelError, match="no default"):
        zoo.default_model()


# ------------------------------------------------------------------------------------ every shipped model
@pytest.mark.parametrize("name", zoo.list_models())
def test_manifest_bundled_file_matches(name: str) -> None:
    spec = zoo.get_spec(name)
    if spec.source["kind"] != "bundled":
        pytest.skip(f"{name} is hosted on the Hub (pinned to {spec.source['revision']})")
    path = zoo.WEIGHTS_DIR / spec.file
    assert path.is_file(), f"{path} missing"
    assert zoo.sha256_file(path) == spec.sha256


@pytest.mark.parametrize("name", zoo.list_models())
def test_manifest_model_loads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network; Hub weights must be cached
    spec = zoo.get_spec(name)
    try:
        model = zoo.load_model(name)
    except zoo.NotCachedError:
        pytest.skip(f"{name}: Hub weights not cached")
    assert model.pretrained_cfg == spec and not model.training
    with torch.no_grad():
        out = model(torch.zeros(2, spec.in_chans, spec.resolution, spec.resolution))
    assert out.shape == (2, len(spec.classes))
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- lookups
def test_unknown_name_suggests_close_matches(use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(), tiny_entry("baseline-fer2013-8px", resolution=8, config={"width": 8})])
    with pytest.raises(zoo.UnknownModelError, match="did you mean 'baseline-fer2013-16px'") as err:
        zoo.get_spec("baseline-fer2013-61px")
    assert isinstance(err.value, ValueError)
    with pytest.raises(zoo.UnknownModelError, match="known models: baseline-fer2013-16px, baseline-fer2013-8px"):
        zoo.get_spec("zzz")


def test_a_spec_is_read_only_all_the_way_down(use_manifest: Callable[..., Path]) -> None:
    """A spec's nested values (metrics by resolution) were the cached manifest's own dicts: editing one
    changed get_spec and info for the rest of the process."""
    metrics = {"publictest_accuracy": 0.5, "publictest_accuracy_by_px": {"8": 0.3}, "notes": ["a", {"b": 1}]}
    use_manifest([tiny_entry(metrics=metrics)])
    spec = zoo.get_spec("baseline-fer2013-16px")
    with pytest.raises(TypeError):
        spec.metrics["publictest_accuracy_by_px"]["8"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.metrics["notes"][1]["b"] = 2  # type: ignore[index]
    assert zoo.get_spec("baseline-fer2013-16px").metrics["publictest_accuracy_by_px"]["8"] == 0.3
    assert zoo.info("baseline-fer2013-16px")["metrics"] == metrics
    copied = spec.to_dict()
    copied["metrics"]["publictest_accuracy_by_px"]["8"] = 1.0  # to_dict's copy is the caller's to edit
    assert copied["metrics"]["notes"] == ["a", {"b": 1}]
    assert zoo.get_spec("baseline-fer2013-16px").metrics["publictest_accuracy_by_px"]["8"] == 0.3


def test_list_models_fnmatch(use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(), tiny_entry("baseline-fer2013-8px", resolution=8, config={"width": 8})])
    assert zoo.list_models() == ["baseline-fer2013-16px", "baseline-fer2013-8px"]
    assert zoo.list_models("*-8px") == ["baseline-fer2013-8px"]
    assert zoo.list_models("gmenet-*") == []
    assert zoo.list_models("BASELINE-*-8PX") == ["baseline-fer2013-8px"]  # names are lowercase; patterns need not be
    # several patterns, as timm's list_models takes them: a name matching any (a list raised AttributeError)
    assert zoo.list_models(["*-8px", "nothing*"]) == ["baseline-fer2013-8px"]
    assert zoo.list_models(("*-16px", "*-8px")) == ["baseline-fer2013-16px", "baseline-fer2013-8px"]
    assert zoo.list_models([]) == zoo.list_models()  # no filter, as in timm
    assert zoo.list_models("") == zoo.list_models()  # timm's default filter (an empty string matched nothing)
    for bad in (3, ["*-8px", 3], {"*-8px": 1}, b"*-8px"):
        with pytest.raises(TypeError, match="pattern must be an fnmatch pattern"):
            zoo.list_models(bad)  # type: ignore[arg-type]


def test_list_models_takes_timms_pretrained_keyword(use_manifest: Callable[..., Path]) -> None:
    """``lrfer.list_models(pretrained=True)``, as timm users list models with weights, raised TypeError
    (unexpected keyword). Every manifest name has weights, so the list is the same either way."""
    use_manifest([tiny_entry(), tiny_entry("baseline-fer2013-8px", resolution=8, config={"width": 8})])
    assert zoo.list_models(pretrained=True) == zoo.list_models() == zoo.list_models(pretrained=False)
    assert zoo.list_models("*-8px", pretrained=True) == ["baseline-fer2013-8px"]
    with pytest.raises(TypeError, match="pretrained must be True or False"):
        zoo.list_models(pretrained="False")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["gmenet-raf-16px", "gmenet-rafdb-16px", "gmenet-raf-db-16px"])
@pytest.mark.parametrize("spacing", ["{}", " {}\n"])  # surrounding space is no part of a name (nor of --out)
def test_rafdb_names_explain_and_point_to_fer2013(name: str, spacing: str, use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry("gmenet-fer2013-16px", arch="gmenet", config={})])
    with pytest.raises(zoo.DatasetUnavailableError) as err:
        zoo.get_spec(spacing.format(name))
    text = str(err.value)
    assert "RAF-DB" in text and "redistribut" in text
    assert "'gmenet-fer2013-16px'" in text
    assert (f"lrfer train --recipe gmenet-fer2013-16px --data /path/to/RAF-DB/basic "
            f"--out {name}.safetensors") in text
    assert isinstance(err.value, zoo.UnknownModelError)


def test_a_raf_name_whose_trained_file_is_here_says_to_load_it_by_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_manifest: Callable[..., Path]) -> None:
    """After ``lrfer train ... --out gmenet-raf-16px.safetensors``, ``lrfer.load("gmenet-raf-16px")`` said
    again to train it, without a word about the file just written beside it."""
    use_manifest([tiny_entry("gmenet-fer2013-16px", arch="gmenet", config={})])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gmenet-raf-16px.safetensors").write_bytes(b"trained")
    with pytest.raises(zoo.DatasetUnavailableError,
                       match=re.escape("'gmenet-raf-16px.safetensors' is here: load it by its path, "
                                       "lrfer.load('gmenet-raf-16px.safetensors')")):
        zoo.get_spec("gmenet-raf-16px")


def test_rafdb_error_without_fer2013_equivalent_names_arch_and_resolution(use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry("gmenet-fer2013-16px", arch="gmenet", config={})])
    with pytest.raises(zoo.DatasetUnavailableError) as err:
        zoo.get_spec("baseline-raf-12px")
    assert "lrfer train --arch baseline --resolution 12 --data /path/to/RAF-DB/basic" in str(err.value)


def test_rafdb_error_with_shipped_manifest() -> None:
    """Every bundled variant's hint trains that variant: its recipe, which `lrfer train` knows."""
    from lrfer.train.recipes import ZOO_RECIPES

    for fer in zoo.list_models():
        raf = fer.replace("-fer2013-", "-raf-")
        with pytest.raises(zoo.DatasetUnavailableError, match=f"lrfer train --recipe {fer} ") as err:
            zoo.get_spec(raf)
        assert f"'{fer}'" in str(err.value) and fer in ZOO_RECIPES


def test_info(use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(license={"code": "MIT", "weights": "CC-BY-4.0", "data": "FER2013 terms"})])
    summary = zoo.info("baseline-fer2013-16px")
    assert summary["license"] == {"code": "MIT", "weights": "CC-BY-4.0", "data": "FER2013 terms"}
    assert summary["classes"] == list(CLASSES) and summary["resolution"] == 16
    assert summary["arch"] == "baseline" and summary["metrics"] == {"test_acc": 0.5}
    assert "Apache-2.0" in summary["detector_licenses"]["blazeface"] and "MIT" in summary["detector_licenses"]["mtcnn"]
    json.dumps(summary)  # JSON-able


def test_info_gives_the_architecture_config_and_the_alignment(use_manifest: Callable[..., Path]) -> None:
    """info left out the architecture's config and the faces the model expects (framing template, crop and
    the degradation to its resolution): neither could be read without opening the manifest and the code."""
    from lrfer.constants import NATIVE_DOWNSAMPLING
    from lrfer.faces.align import FER2013_FACE_BOX, FER2013_TEMPLATE

    use_manifest([tiny_entry(), tiny_entry("baseline-fer2013-48px", resolution=48, config={"width": 8})])
    summary = zoo.info("baseline-fer2013-16px")
    assert summary["config"] == TINY_CONFIG
    alignment = summary["alignment"]
    assert alignment["name"] == "fer2013" and alignment["crop"].startswith("48x48 px, gray")
    assert torch.equal(torch.tensor(list(alignment["template_px"].values())), FER2013_TEMPLATE)
    assert list(alignment["template_px"]) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert torch.equal(torch.tensor(alignment["face_box_px"]), FER2013_FACE_BOX)
    assert NATIVE_DOWNSAMPLING == "area" and alignment["degradation"] == "area down-sampling of the 48x48 face to 16x16 px"
    assert zoo.info("baseline-fer2013-48px")["alignment"]["degradation"].startswith("none")
    json.dumps(summary)  # JSON-able


# ------------------------------------------------------------------------------------ save / load
def test_fp16_round_trip(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "tiny.safetensors"
    digest = zoo.save_weights(model.state_dict(), path, tiny_entry(file="ignored.safetensors"))
    assert digest == zoo.sha256_file(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()[zoo.SPEC_METADATA_KEY])
        dtypes = {key: handle.get_tensor(key).dtype for key in handle.keys()}
    assert "file" not in meta and "sha256" not in meta and meta["arch"] == "baseline"
    assert dtypes["fc.weight"] == torch.float16 and dtypes["stem.1.running_var"] == torch.float16
    assert dtypes["stem.1.num_batches_tracked"] == torch.int64

    loaded = zoo.load_model(path)
    spec = loaded.pretrained_cfg
    assert isinstance(spec, zoo.ModelSpec) and spec.sha256 == digest and spec.file == "tiny.safetensors"
    assert spec.source == {"kind": "local", "path": str(path)}
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        original = model.state_dict()[key]
        assert value.dtype == original.dtype
        expected = original.half().float() if original.is_floating_point() else original
        assert torch.equal(value, expected), key
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (2, 7)
        assert torch.allclose(out, model(x), atol=2e-2)


def test_threads_saving_one_path_all_succeed(tmp_path: Path) -> None:
    """Threads of one process wrote the same temporary sibling (named by the process id alone): the first
    rename took it, and the others failed with FileNotFoundError."""
    model = tiny_model()
    path = tmp_path / "tiny.safetensors"
    errors: list[BaseException] = []

    def save() -> None:
        try:
            zoo.save_weights(model.state_dict(), path, tiny_entry())
        except BaseException as err:  # noqa: BLE001 - collected for the assert
            errors.append(err)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert zoo.load_model(path).pretrained_cfg.name == tiny_entry()["name"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temporary file left


def test_list_models_takes_timms_filter_and_exclude_filters(use_manifest: Callable[..., Path]) -> None:
    """``lrfer.list_models(filter="gmenet-*", exclude_filters="*-8px")``, as timm users write it, raised
    TypeError (unexpected keywords): ``filter`` is timm's name of the first argument, and ``exclude_filters``
    (a pattern or several) removes the names matching any of them."""
    use_manifest([tiny_entry(), tiny_entry("baseline-fer2013-8px", resolution=8, config={"width": 8})])
    assert zoo.list_models(filter="*-8px") == zoo.list_models("*-8px") == ["baseline-fer2013-8px"]
    assert zoo.list_models(filter=["*-16px", "*-8px"]) == zoo.list_models()
    assert zoo.list_models(exclude_filters="*-8px") == ["baseline-fer2013-16px"]
    assert zoo.list_models("baseline-*", exclude_filters=["*-8PX", "nothing*"]) == ["baseline-fer2013-16px"]
    assert zoo.list_models(filter="baseline-*", exclude_filters=["*-8px", "*-16px"]) == []
    assert zoo.list_models(exclude_filters="") == zoo.list_models(exclude_filters=[]) == zoo.list_models()  # timm's default
    with pytest.raises(TypeError, match="both pattern='\\*-8px' and filter='\\*-16px'"):
        zoo.list_models("*-8px", filter="*-16px")
    with pytest.raises(TypeError, match="filter must be an fnmatch pattern"):
        zoo.list_models(filter=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exclude_filters must be an fnmatch pattern"):
        zoo.list_models(exclude_filters=["*-8px", None])  # type: ignore[list-item]


def test_spec_reads_as_a_read_only_mapping_as_timms_pretrained_cfg(tmp_path: Path) -> None:
    """timm users read ``model.pretrained_cfg["mean"]`` and ``.get("std")``: on lrfer's ModelSpec (a frozen
    dataclass, attribute access only) that raised TypeError ("not subscriptable") / AttributeError."""
    import copy
    import pickle

    path = tmp_path / "m.safetensors"
    entry = tiny_entry()
    del entry["source"], entry["file"], entry["sha256"]
    zoo.save_weights(tiny_model().state_dict(), path, entry)
    cfg = zoo.load_model(path).pretrained_cfg
    assert cfg["mean"] == cfg.mean and cfg["classes"] == cfg.classes and cfg["config"] == cfg.config
    assert cfg.get("std") == cfg.std and cfg.get("classes") == cfg.classes
    assert cfg.get("crop_pct") is None and cfg.get("crop_pct", 1.0) == 1.0
    assert "mean" in cfg and "crop_pct" not in cfg and 0 not in cfg
    assert list(cfg.keys()) == list(cfg) == list(cfg.to_dict())
    assert dict(cfg.items()) == dict(cfg) and dict(cfg)["resolution"] == cfg.resolution
    with pytest.raises(KeyError, match="'crop_pct' is not a ModelSpec key; .* timm's .*'input_size'"):
        cfg["crop_pct"]
    with pytest.raises(TypeError):  # read-only: no item assignment
        cfg["mean"] = (0.0,)  # type: ignore[index]
    with pytest.raises(TypeError):  # nested values stay read-only too
        cfg["config"]["width"] = 2
    # equality, hash, pickling and attribute access are as they were
    clone = copy.deepcopy(cfg)
    assert clone == cfg and hash(clone) == hash(cfg) and pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.mean == tuple(entry["mean"]) and cfg.num_classes == len(entry["classes"])


def test_spec_answers_timms_own_keys_for_its_values(tmp_path: Path) -> None:
    """A timm user's ``pretrained_cfg.get("input_size")`` was None and ``["num_classes"]`` a KeyError: lrfer
    names them otherwise (resolution, in_chans, classes, arch). timm's names now read the same values,
    without becoming keys of the entry (``dict(cfg)`` is still what the manifest holds)."""
    entry = tiny_entry()
    del entry["source"], entry["file"], entry["sha256"]
    path = tmp_path / "m.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, entry)
    cfg = zoo.load_model(path).pretrained_cfg
    assert cfg["input_size"] == cfg.get("input_size") == (1, 16, 16)
    assert cfg["num_classes"] == len(entry["classes"]) and cfg["label_names"] == tuple(entry["classes"])
    assert cfg["architecture"] == entry["arch"] and "input_size" in cfg
    assert "input_size" not in dict(cfg) and set(dict(cfg)) == set(cfg.to_dict())


def test_spec_survives_deepcopy_and_pickle(tmp_path: Path) -> None:
    import copy
    import pickle

    path = tmp_path / "m.safetensors"
    entry = tiny_entry()
    del entry["source"], entry["file"], entry["sha256"]  # optional for save_weights
    zoo.save_weights(tiny_model().state_dict(), path, entry)
    model = zoo.load_model(path)
    clone = copy.deepcopy(model)
    assert clone.pretrained_cfg == model.pretrained_cfg
    assert pickle.loads(pickle.dumps(model.pretrained_cfg)) == model.pretrained_cfg
    assert hash(clone.pretrained_cfg) == hash(model.pretrained_cfg)


def test_save_weights_validates_entry(tmp_path: Path) -> None:
    entry = tiny_entry()
    del entry["arch"]
    with pytest.raises(zoo.ManifestError, match="arch"):
        zoo.save_weights(tiny_model().state_dict(), tmp_path / "x.safetensors", entry)
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("overrides,problem", [
    ({"classes": ["a", "a", "b", "c", "d", "e", "f"]}, "distinct"),
    ({"classes": ["", "b", "c", "d", "e", "f", "g"]}, "non-empty"),
    ({"classes": ["label", "b", "c", "d", "e", "f", "g"]}, "result columns' names"),
    ({"classes": ["time_s", "b", "c", "d", "e", "f", "g"]}, "result columns' names"),
    ({"in_chans": 3, "mean": [0.5] * 3, "std": [0.25] * 3}, "gray faces"),
    ({"mean": [float("nan")]}, "finite"),
    ({"std": [float("inf")]}, "finite"),
    ({"temperature": float("inf")}, "finite"),
    ({"config": {**TINY_CONFIG, "widht": 8}}, "'widht'.* not options of architecture 'baseline'"),
    ({"arch": "resnet50", "name": "resnet50-fer2013-16px"}, "unknown architecture 'resnet50'"),
])
def test_save_weights_refuses_entries_the_pipeline_cannot_serve(tmp_path: Path, overrides: dict, problem: str) -> None:
    with pytest.raises(zoo.ManifestError, match=problem):
        zoo.save_weights(tiny_model().state_dict(), tmp_path / "x.safetensors", tiny_entry(**overrides))
    assert not (tmp_path / "x.safetensors").exists()


def test_a_config_typo_in_a_loaded_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    spec = json.loads(metadata[zoo.SPEC_METADATA_KEY])
    spec["config"]["widht"] = 8  # written by other means than save_weights
    metadata[zoo.SPEC_METADATA_KEY] = json.dumps(spec)
    del metadata[zoo.CONTENT_SHA_METADATA_KEY]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(zoo.ManifestError, match="'widht'"):
        zoo.load_model(path)


def test_info_takes_a_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    summary = zoo.info(str(path))
    assert summary["name"] == "baseline-mine-16px" and summary["source"]["kind"] == "local"
    assert summary["temperature"] == 1.3 and summary["mean"] == [0.5] and summary["std"] == [0.25]


def write_unchecked(state: dict[str, torch.Tensor], path: Path, entry: dict[str, Any]) -> str:
    """Write ``state`` as save_weights would (fp16, the entry in the header, sealed) without its check that the
    state dict fits the entry's network: a mismatched file, as written by other means, for load to refuse."""
    meta = {k: v for k, v in entry.items() if k not in ("file", "sha256")}
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    blob = zoo.sealed(zoo.safetensors_bytes(
        tensors, {zoo.SPEC_METADATA_KEY: json.dumps(meta, sort_keys=True), "format": "pt"}))
    path.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def missing_and_extra_keys() -> dict[str, torch.Tensor]:
    state = tiny_model().state_dict()
    state.pop("fc.bias")
    state["head.extra"] = torch.zeros(3)
    return state


def test_strict_load_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    write_unchecked(missing_and_extra_keys(), path, tiny_entry())
    with pytest.raises(zoo.StateDictMismatchError, match=r"missing keys \(1\): fc.bias.*unexpected keys \(1\): "
                                                         r"head.extra"):
        zoo.load_model(path)


def test_strict_load_reports_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "wide.safetensors"
    write_unchecked(tiny_model().state_dict(), path, tiny_entry(config={"width": 16, "input_size": 16}))
    with pytest.raises(zoo.StateDictMismatchError, match="shape mismatches"):
        zoo.load_model(path)


@pytest.mark.parametrize("state, overrides, problem", [
    (missing_and_extra_keys, {}, r"missing keys \(1\): fc.bias.*unexpected keys \(1\): head.extra"),
    (lambda: tiny_model().state_dict(), {"config": {"width": 16, "input_size": 16}},
     r"shape mismatches \(\d+\): .*weights \(8,.* vs model \(16,"),
    (lambda: tiny_model().state_dict(), {"classes": list(CLASSES[:5])},
     r"shape mismatches \(2\): fc.bias: weights \(7,\) vs model \(5,\)"),
    (lambda: build_model("gmenet", num_classes=7, in_chans=1).state_dict(), {},
     r"unexpected keys \(\d+\): global_module"),
], ids=["keys", "width", "classes", "another-arch"])
def test_save_weights_refuses_a_state_dict_that_does_not_fit_the_entry_and_writes_nothing(
        tmp_path: Path, state: Callable[[], dict[str, torch.Tensor]], overrides: dict, problem: str) -> None:
    """save_weights wrote any state dict: another arch's weights, a changed class count, missing or extra
    keys; only lrfer.load refused the file afterwards."""
    path = tmp_path / "bad.safetensors"
    with pytest.raises(zoo.StateDictMismatchError, match=problem) as caught:
        zoo.save_weights(state(), path, tiny_entry(**overrides))
    assert "Nothing was written" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_save_weights_of_a_fitting_state_dict_still_writes_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.safetensors"
    model = tiny_model()
    zoo.save_weights(model.state_dict(), path, tiny_entry())
    loaded = zoo.load_model(path)
    assert loaded.state_dict().keys() == model.state_dict().keys()


# ------------------------------------------------------------------------------------- local specs
def make_dir(folder: Path, name: str = "baseline-fer2013-16px") -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    entry = tiny_entry(name, file="weights.safetensors")
    digest = zoo.save_weights(tiny_model().state_dict(), folder / entry["file"], entry)
    (folder / zoo.CONFIG_FILENAME).write_text(json.dumps({**entry, "sha256": digest}))
    return folder, digest


def test_local_dir_spec(tmp_path: Path) -> None:
    folder, digest = make_dir(tmp_path / "mymodel")
    spec, path = zoo.resolve(folder)
    assert path == folder / "weights.safetensors" and spec.sha256 == digest
    assert spec.source["kind"] == "local"
    model = zoo.load_model(str(folder))
    assert model.pretrained_cfg.name == "baseline-fer2013-16px"
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)


def test_a_folder_holding_only_a_saved_weights_file_loads_it(tmp_path: Path) -> None:
    """A folder with no lrfer_config.json was refused even when its one file, written by save_weights,
    carries the whole entry in its header."""
    folder = tmp_path / "mine"
    path = folder / "mine.safetensors"
    folder.mkdir()
    digest = zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    (folder / ".mine.safetensors.part").write_bytes(b"")  # hidden and temporary files are not candidates
    (folder / "notes.txt").write_text("trained on my data")
    spec, resolved = zoo.resolve(folder)
    assert resolved == path and spec.sha256 == digest and spec.name == "baseline-mine-16px"
    model = zoo.load_model(str(folder))
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    assert zoo.info(folder)["name"] == "baseline-mine-16px"


def test_a_lone_weights_file_is_found_beside_hidden_files_and_folders_of_its_suffix(tmp_path: Path) -> None:
    """Pins down which names count as the folder's weights files: macOS's ``._mine.safetensors`` (an
    AppleDouble file copied along onto other disks) and a folder named ``old.safetensors`` are not weights
    files; counted, the folder was refused as holding 3 .safetensors files, so which to load was not clear."""
    folder = tmp_path / "mine"
    (folder / "old.safetensors").mkdir(parents=True)
    path = folder / "mine.safetensors"
    digest = zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    (folder / "._mine.safetensors").write_bytes(b"\x00\x05\x16\x07")
    spec, resolved = zoo.resolve(folder)
    assert resolved == path and spec.sha256 == digest


def test_a_lone_weights_file_with_an_upper_case_suffix_is_found(tmp_path: Path) -> None:
    """Pins down that the folder's weights file is found whatever the case of its suffix, as a load by the
    file's path takes it (``MINE.SAFETENSORS``, as some Windows tools and FAT disks write names): it was
    a folder with "no .safetensors file"."""
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / "MINE.SAFETENSORS"
    digest = zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    assert zoo.resolve(path)[0].sha256 == digest  # by its path
    spec, resolved = zoo.resolve(folder)
    assert resolved == path and spec.sha256 == digest


def test_a_lone_weights_file_in_a_folder_has_its_header_read_once(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's one save_weights file had its safetensors header read twice: once to see that lrfer
    wrote it, then again by the load by path, which the first read's metadata serves as well."""
    folder = tmp_path / "mine"
    folder.mkdir()
    zoo.save_weights(tiny_model().state_dict(), folder / "mine.safetensors", tiny_entry(name="baseline-mine-16px",
                                                                                         dataset="mine"))
    read: list[Path] = []
    real = zoo._read_metadata

    def counted(path: Path) -> dict[str, str]:
        read.append(path)
        return real(path)

    monkeypatch.setattr(zoo, "_read_metadata", counted)
    spec, resolved = zoo.resolve(folder)
    assert spec.name == "baseline-mine-16px" and read == [resolved]


def test_a_folder_without_config_says_what_it_needs(tmp_path: Path) -> None:
    """Without lrfer_config.json: no weights file, several, or one without lrfer's header each get an error
    naming what the folder needs."""
    with pytest.raises(FileNotFoundError, match=f"has no {zoo.CONFIG_FILENAME} and no .safetensors file.*"
                                                "single .safetensors file written by lrfer.zoo.save_weights"):
        zoo.resolve(tmp_path)
    for name in ("a.safetensors", "b.safetensors"):
        zoo.save_weights(tiny_model().state_dict(), tmp_path / name, tiny_entry())
    with pytest.raises(FileNotFoundError, match=r"2 .safetensors files \(a.safetensors, b.safetensors\), so which "
                                                f"to load is not clear: give the file's path, or add a "
                                                f"{zoo.CONFIG_FILENAME} naming the one to load .*lrfer info .*--config"):
        zoo.resolve(tmp_path)
    (tmp_path / "a.safetensors").unlink()
    (tmp_path / "b.safetensors").unlink()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FileNotFoundError, match=f"its one weights file other.safetensors has no "
                                                f"'{zoo.SPEC_METADATA_KEY}' metadata.*add a {zoo.CONFIG_FILENAME}.*"
                                                "'file' is 'other.safetensors'"):
        zoo.resolve(tmp_path)


def test_a_local_source_is_absolute_so_the_spec_survives_a_change_of_folder(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A file or folder given by a relative path kept that path as its source: from another working folder the
    spec (model.pretrained_cfg, info's source, a save_weights header) named a file that is not there."""
    folder, digest = make_dir(tmp_path / "mymodel")
    zoo.save_weights(tiny_model().state_dict(), tmp_path / "m.safetensors", tiny_entry())
    monkeypatch.chdir(tmp_path)
    by_file = zoo.load_model("m.safetensors").pretrained_cfg
    by_folder = zoo.load_model("mymodel").pretrained_cfg
    assert by_file.source["path"] == str(tmp_path / "m.safetensors")
    assert by_folder.source["path"] == str(folder)
    assert zoo.info("./m.safetensors")["source"]["path"] == str(tmp_path / "m.safetensors")
    zoo.save_weights(tiny_model().state_dict(), "copy.safetensors", by_file.to_dict() | {
        "source": {"kind": "local", "path": "m.safetensors"}})
    with safe_open("copy.safetensors", framework="pt") as handle:
        header = json.loads(handle.metadata()[zoo.SPEC_METADATA_KEY])
    assert header["source"] == {"kind": "local", "path": str(tmp_path / "m.safetensors")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert zoo.resolve(by_file) == (by_file, tmp_path / "m.safetensors")
    assert zoo.resolve(by_folder)[1] == folder / "weights.safetensors"
    assert zoo.load_model(by_folder).pretrained_cfg.sha256 == digest


def test_a_local_source_keeps_a_symbolic_link_as_given(tmp_path: Path) -> None:
    """Pins down that a local spec's source is made absolute but not resolved: loaded through a link (a
    release's ``current.safetensors``), the spec names the link, so a spec kept from it follows the link to
    the next release, not the file it pointed to at the time."""
    real = tmp_path / "store" / "v1.safetensors"
    zoo.save_weights(tiny_model().state_dict(), real, tiny_entry())
    link = tmp_path / "current.safetensors"
    link.symlink_to(real)
    assert zoo.resolve(link)[0].source == {"kind": "local", "path": str(link)}
    linked_folder = tmp_path / "release"
    linked_folder.symlink_to(real.parent, target_is_directory=True)
    assert zoo.resolve(linked_folder)[0].source["path"] == str(linked_folder / "v1.safetensors")


def test_save_weights_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    """The atomic rename replaced a link given as the path with a regular file: the file it pointed to (a
    shared models folder, a release's current.safetensors) kept its old weights."""
    real = tmp_path / "store" / "v1.safetensors"
    zoo.save_weights(tiny_model().state_dict(), real, tiny_entry(temperature=1.0))
    link = tmp_path / "current.safetensors"
    link.symlink_to(real)
    digest = zoo.save_weights(tiny_model().state_dict(), link, tiny_entry(temperature=2.0))
    assert link.is_symlink() and link.resolve() == real
    assert zoo.sha256_file(real) == digest and zoo.load_model(link).pretrained_cfg.temperature == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.safetensors", "store"]
    assert [p.name for p in real.parent.iterdir()] == ["v1.safetensors"]  # no temporary file left
    dangling = tmp_path / "next.safetensors"
    dangling.symlink_to(tmp_path / "store" / "v2.safetensors")  # a link to a file still to be written
    zoo.save_weights(tiny_model().state_dict(), dangling, tiny_entry())
    assert dangling.is_symlink() and (tmp_path / "store" / "v2.safetensors").is_file()


def test_local_file_spec_reports_sha(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.safetensors"
    digest = zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    with caplog.at_level("INFO", logger="lrfer.zoo"):
        spec, resolved = zoo.resolve(str(path))
    assert resolved == path and spec.sha256 == digest and spec.file == "m.safetensors"
    assert digest in caplog.text
    assert zoo.download(path) == path


def test_tampered_local_dir_raises_checksum_error(tmp_path: Path) -> None:
    folder, digest = make_dir(tmp_path / "mymodel")
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError, match=f"expected {digest}, got [0-9a-f]{{64}}") as err:
        zoo.load_model(folder)
    assert isinstance(err.value, ValueError) and str(weights) in str(err.value)
    assert weights.exists(), "a user's own file is never deleted"


def test_tampered_bundled_weights(tmp_path: Path, use_manifest: Callable[..., Path]) -> None:
    source = tmp_path / "src.safetensors"
    digest = zoo.save_weights(tiny_model().state_dict(), source, tiny_entry())
    weights_dir = use_manifest([tiny_entry(sha256=digest)])
    bundled = weights_dir / "baseline-fer2013-16px.safetensors"
    bundled.write_bytes(source.read_bytes())
    assert zoo.download("baseline-fer2013-16px") == bundled
    model = zoo.load_model("baseline-fer2013-16px")
    assert model.pretrained_cfg == zoo.get_spec("baseline-fer2013-16px")
    assert zoo.load_model(zoo.get_spec("baseline-fer2013-16px")).pretrained_cfg.sha256 == digest
    bundled.write_bytes(source.read_bytes()[:-1] + b" ")
    with pytest.raises(zoo.ChecksumError, match=digest):
        zoo.load_model("baseline-fer2013-16px")


def save_without_data_sha(path: Path, **overrides: Any) -> None:
    """A weights file without the content sha256 in its header (written by other means than save_weights)."""
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(**overrides))
    with safe_open(str(path), framework="pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if k != zoo.CONTENT_SHA_METADATA_KEY}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(path), metadata=metadata)


def test_local_copy_of_manifest_file_without_data_sha_is_compared(tmp_path: Path, use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(sha256="f" * 64)])
    path = tmp_path / "baseline-fer2013-16px.safetensors"
    save_without_data_sha(path)
    with pytest.raises(zoo.ChecksumError, match="f" * 64):
        zoo.resolve(path)


def test_retrained_file_named_like_a_manifest_file_loads(tmp_path: Path, use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(sha256="f" * 64)])
    path = tmp_path / "baseline-fer2013-16px.safetensors"
    digest = zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    spec, resolved = zoo.resolve(path)
    assert resolved == path and spec.sha256 == digest and spec.source["kind"] == "local"


def test_save_weights_records_the_content_sha(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    hashes = zoo.safetensors_sha256s(path)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()[zoo.CONTENT_SHA_METADATA_KEY] == hashes.recorded == hashes.content
    assert hashes.whole == zoo.sha256_file(path)


def test_edited_header_of_a_local_file_is_a_checksum_error(tmp_path: Path) -> None:
    """Swapping two class names in the header (the tensors untouched) would mislabel every face."""
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    header, data = zoo._split_safetensors(path.read_bytes())
    spec = json.loads(header["__metadata__"][zoo.SPEC_METADATA_KEY])
    spec["classes"][0], spec["classes"][3] = spec["classes"][3], spec["classes"][0]
    header["__metadata__"][zoo.SPEC_METADATA_KEY] = json.dumps(spec, sort_keys=True)
    path.write_bytes(zoo._join_safetensors(header, data))
    with pytest.raises(zoo.ChecksumError, match="its header records"):
        zoo.load_model(path)


def test_sealing_a_sealed_file_changes_nothing(tmp_path: Path) -> None:
    """scripts/seal_weights.py seals files that are sealed already and keeps those whose bytes stay the same:
    a seal that hashed the header with the old record still in it wrote a file that failed its own check."""
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    blob = path.read_bytes()
    assert zoo.sealed(blob) == blob
    resealed = tmp_path / "resealed.safetensors"
    resealed.write_bytes(zoo.sealed(zoo.sealed(blob)))
    assert zoo.resolve(resealed)[0].sha256 == zoo.sha256_file(path)


def test_every_bundled_file_records_its_content_sha() -> None:
    for spec in zoo.load_manifest().models.values():
        hashes = zoo.safetensors_sha256s(zoo.WEIGHTS_DIR / spec.file)
        assert hashes.recorded is not None and hashes.recorded == hashes.content, spec.name
        assert hashes.whole == spec.sha256, spec.name


def test_damaged_renamed_copy_of_a_bundled_file_is_a_checksum_error(tmp_path: Path) -> None:
    path = tmp_path / "renamed.safetensors"
    data = bytearray((zoo.WEIGHTS_DIR / zoo.get_spec("gmenet-fer2013-16px").file).read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError):
        zoo.load_model(path)


def test_file_without_content_sha_is_compared_by_its_model_name(tmp_path: Path,
                                                                 use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(sha256="f" * 64)])
    path = tmp_path / "renamed.safetensors"
    save_without_data_sha(path)  # its metadata names baseline-fer2013-16px, a manifest model
    with pytest.raises(zoo.ChecksumError, match="f" * 64):
        zoo.resolve(path)
    save_without_data_sha(path, name="baseline-mine-16px", dataset="mine")
    assert zoo.resolve(path)[0].name == "baseline-mine-16px"  # no manifest model of that name


def test_damaged_local_file_is_a_checksum_error(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of a tensor: the header still parses
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError, match="mine.safetensors: its header records"):
        zoo.load_model(path)


@pytest.mark.parametrize("name", ["mine.safetensors", "baseline-fer2013-16px.safetensors"])
def test_truncated_local_file_is_a_checksum_error(name: str, tmp_path: Path, use_manifest: Callable[..., Path]) -> None:
    use_manifest([tiny_entry(sha256="f" * 64)])
    path = tmp_path / name
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    path.write_bytes(path.read_bytes()[:-100])  # an interrupted copy
    with pytest.raises(zoo.ChecksumError, match="truncated or corrupt") as err:
        zoo.load_model(path)
    assert ("lrfer download baseline-fer2013-16px" in str(err.value)) == name.startswith("baseline")


def test_manifest_name_wins_over_a_folder_of_that_name(tmp_path: Path, use_manifest: Callable[..., Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    weights_dir = use_manifest([tiny_entry(sha256="0" * 64)])
    digest = zoo.save_weights(tiny_model().state_dict(), weights_dir / "baseline-fer2013-16px.safetensors", tiny_entry())
    use_manifest([tiny_entry(sha256=digest)])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "baseline-fer2013-16px").mkdir()  # e.g. a results folder named after the model
    spec, _ = zoo.resolve("baseline-fer2013-16px")
    assert spec.source["kind"] == "bundled"
    with pytest.raises(FileNotFoundError, match="lrfer_config.json"):
        zoo.resolve("./baseline-fer2013-16px")  # written as a path: the folder


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_formats_refused(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even read")
    for spec in (path, str(path), f"model{suffix}"):
        with pytest.raises(zoo.UnsupportedFormatError, match="pickles and are never loaded"):
            zoo.load_model(spec)
    with pytest.raises(zoo.UnsupportedFormatError):
        zoo.save_weights({}, tmp_path / f"out{suffix}", tiny_entry())


def test_file_without_spec_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(zoo.ManifestError, match="save_weights"):
        zoo.resolve(path)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", r"must hold one manifest entry \(a JSON object\), not list"),
])
def test_malformed_entry_in_config_or_metadata(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / zoo.CONFIG_FILENAME).write_text(text, encoding="utf-8")
    with pytest.raises(zoo.ManifestError, match=rf"{zoo.CONFIG_FILENAME} {message}"):
        zoo.resolve(tmp_path)
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={zoo.SPEC_METADATA_KEY: text})
    with pytest.raises(zoo.ManifestError, match=rf"{zoo.SPEC_METADATA_KEY!r} metadata {message}"):
        zoo.resolve(path)


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        zoo.resolve(str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match=zoo.CONFIG_FILENAME):
        zoo.resolve(tmp_path)


def test_a_missing_zoo_file_name_or_home_path_says_what_was_meant(tmp_path: Path, use_manifest: Callable[..., Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled file's name (printed by `lrfer download`) given for the model, and a '~' path (not expanded,
    though a '~' cache_dir is): the error said only that the file does not exist."""
    use_manifest([tiny_entry(file="baseline-16.safetensors")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="give its name: 'baseline-fer2013-16px'"):
        zoo.resolve("Baseline-16.safetensors")
    with pytest.raises(FileNotFoundError, match="not expanded .*" + re.escape(repr(str(tmp_path / "home" / "mine.safetensors")))):
        zoo.resolve("~/mine.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        zoo.resolve("elsewhere/nope.safetensors")
    assert ";" not in str(err.value)


def test_a_model_name_given_as_a_path_object_says_to_give_it_as_a_str(
        tmp_path: Path, use_manifest: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``lrfer.load(Path("baseline-fer2013-16px"))`` (a name built with pathlib) is read as a path, rightly, but
    the error said only that no such file exists."""
    use_manifest([tiny_entry()])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="give the name as a str: 'baseline-fer2013-16px'"):
        zoo.resolve(Path("baseline-fer2013-16px"))


def test_resolution_errors_name_the_problem(tmp_path: Path, use_manifest: Callable[..., Path]) -> None:
    """Each way a weight spec can fail to resolve says what is wrong and what to do."""
    use_manifest([tiny_entry("gmenet-fer2013-16px", arch="gmenet", config={})])
    with pytest.raises(zoo.DatasetUnavailableError) as err:
        zoo.get_spec("gmenet-raf-20px")  # RAF-DB, and no FER2013 GME-Net at 20 px either
    assert "No FER2013 equivalent 'gmenet-fer2013-20px' is in the manifest; FER2013 models: gmenet-fer2013-16px." in str(err.value)
    assert "lrfer train --arch gmenet --resolution 20" in str(err.value)
    with pytest.raises(FileNotFoundError, match="bundled weights .*gmenet-fer2013-16px.safetensors.* reinstall lrfer"):
        zoo.resolve("gmenet-fer2013-16px")  # in the manifest, not in the (temporary) wheel folder
    folder, _ = make_dir(tmp_path / "mymodel")
    (folder / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="names 'weights.safetensors' but .* does not exist"):
        zoo.resolve(folder)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x08\x01")
    with pytest.raises(zoo.UnsupportedFormatError, match="only '.safetensors' weights are supported, got '.onnx'"):
        zoo.resolve(other)
    for uri in ("hf://no-slash", "hf://org/repo@", "hf://org/re po"):
        with pytest.raises(ValueError, match="is not 'hf://org/repo' or 'hf://org/repo@revision'"):
            zoo.resolve(uri)


def test_import_is_light() -> None:
    code = "import sys, lrfer.zoo; print('torch' in sys.modules, 'huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


def test_save_weights_is_byte_reproducible(tmp_path: Path) -> None:
    """safetensors writes its header's keys in a random order; save_weights sorts them, so the same
    weights and entry always give the same sha256 (a retrained zoo file can match its manifest)."""
    digests = {zoo.save_weights(tiny_model().state_dict(), tmp_path / f"run{i}.safetensors", tiny_entry()) for i in range(6)}
    assert len(digests) == 1
    with safe_open(str(tmp_path / "run0.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == set(tiny_model().state_dict())


@pytest.mark.parametrize("typed", ["GMENET-FER2013-16PX", " gmenet-fer2013-16px", "gmenet-fer2013-16px\n"])
def test_model_names_ignore_case_and_surrounding_space(typed: str) -> None:
    assert zoo.get_spec(typed).name == "gmenet-fer2013-16px"
    assert zoo.resolve(typed)[0].name == "gmenet-fer2013-16px"


def test_upper_case_suffix_loads(tmp_path: Path) -> None:
    path = tmp_path / "MINE.SAFETENSORS"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())
    assert zoo.load_model(path).pretrained_cfg.file == "MINE.SAFETENSORS"


@pytest.mark.parametrize("name, why", [("resnet18-raf-16px", "resnet18 runs at 48 px only"),
                                       ("gmenet-raf-64px", "resolution must be 1..48"),
                                       ("foo-raf-16px", "no recipe for architecture 'foo'"),
                                       # --arch gmenet would train the default widths into gmenet-small-raf-12px.safetensors
                                       ("gmenet-small-raf-12px", "not gmenet-small, whose recipes are gmenet-small-fer2013-16px"),
                                       ("gmenet-foo-raf-16px", "not gmenet-foo, which has no recipe")])
def test_raf_name_without_a_recipe_suggests_no_failing_command(name: str, why: str) -> None:
    with pytest.raises(zoo.DatasetUnavailableError) as err:
        zoo.get_spec(name)
    assert why in str(err.value) and "lrfer train --arch" not in str(err.value)


def test_file_with_the_older_tensor_bytes_sha_is_still_checked(tmp_path: Path) -> None:
    """Files written by save_weights before the content hash record lrfer_data_sha256 only: their tensors
    are checked against it (and they are not compared with a manifest entry of the same model name)."""
    import hashlib

    path = tmp_path / "old.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry())  # named like the manifest's baseline
    header, data = zoo._split_safetensors(path.read_bytes())
    del header["__metadata__"][zoo.CONTENT_SHA_METADATA_KEY]
    header["__metadata__"][zoo.LEGACY_DATA_SHA_METADATA_KEY] = hashlib.sha256(data).hexdigest()
    path.write_bytes(zoo._join_safetensors(header, data))
    assert zoo.resolve(path)[0].name == "baseline-fer2013-16px"
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(zoo.ChecksumError, match="its header records"):
        zoo.resolve(path)


@pytest.mark.parametrize("header", [b"[" * 100_000, None])
def test_pathological_headers_are_checksum_errors(tmp_path: Path, header: bytes | None) -> None:
    """A deeply nested header raised RecursionError, an absurd header length MemoryError."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes((len(header).to_bytes(8, "little") + header) if header else (1 << 62).to_bytes(8, "little") + b"{}")
    with pytest.raises(zoo.ChecksumError, match="not a readable safetensors file"):
        zoo.resolve(path)


@pytest.mark.parametrize("change", ["drop temperature", "reverse classes", "mean", "std"])
def test_a_config_that_contradicts_its_weights_header_is_refused(tmp_path: Path, change: str) -> None:
    """The config's sha256 was right, but it left out the temperature or listed the classes in another
    order than the file records: every face would have been mislabelled or mis-scaled."""
    folder, _ = make_dir(tmp_path / "repo")
    config = json.loads((folder / zoo.CONFIG_FILENAME).read_text())
    if change == "drop temperature":
        del config["temperature"]
    elif change == "reverse classes":
        config["classes"] = config["classes"][::-1]
    elif change == "mean":
        config["mean"] = [0.3]
    else:
        config["std"] = [0.25 * 1.01]  # 1 % off: no rounding, every face normalised a little wrong
    (folder / zoo.CONFIG_FILENAME).write_text(json.dumps(config))
    field = change.split()[-1]
    with pytest.raises(zoo.ManifestError, match=f"contradicts the header .*{field}.*lrfer info .* --config"):
        zoo.resolve(folder)


def test_the_command_that_rewrites_a_contradicting_config_quotes_its_path(tmp_path: Path) -> None:
    """The suggested ``lrfer info PATH --config`` left a path with spaces unquoted: pasted into a shell it
    named two files that do not exist."""
    folder, _ = make_dir(tmp_path / "my models")
    config = json.loads((folder / zoo.CONFIG_FILENAME).read_text())
    config["mean"] = [0.3]
    (folder / zoo.CONFIG_FILENAME).write_text(json.dumps(config))
    with pytest.raises(zoo.ManifestError) as caught:
        zoo.resolve(folder)
    command = str(caught.value).split("Write the entry from the file: ", 1)[1]
    assert shlex.split(command)[:2] == ["lrfer", "info"]
    assert Path(shlex.split(command)[2]).is_file() and shlex.split(command)[3:] == ["--config"]


def test_info_config_writes_a_config_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lrfer.cli import main

    folder = tmp_path / "repo"
    folder.mkdir()
    weights = folder / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), weights, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    assert main(["info", str(weights), "--config"]) == 0
    (folder / zoo.CONFIG_FILENAME).write_text(capsys.readouterr().out)
    spec, path = zoo.resolve(folder)
    assert path == weights and spec.name == "baseline-mine-16px" and spec.temperature == 1.3
    assert spec.sha256 == zoo.sha256_file(weights)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_config_written_by_windows_powershell_loads(encoding: str, tmp_path: Path) -> None:
    """``lrfer info F --config > lrfer_config.json`` in Windows PowerShell 5 writes UTF-16 with a byte-order
    mark (and ``Out-File -Encoding utf8`` UTF-8 with one): the config was "not UTF-8 text" / "not valid JSON"."""
    folder, _ = make_dir(tmp_path / "repo")
    config = folder / zoo.CONFIG_FILENAME
    expected, _ = zoo.resolve(folder)
    config.write_bytes(config.read_text(encoding="utf-8").encode(encoding))
    assert zoo.resolve(folder)[0] == expected


def test_a_manifest_with_a_model_twice_is_refused(tmp_path: Path) -> None:
    entry = json.dumps(tiny_entry())
    path = tmp_path / "manifest.json"
    path.write_text('{"schema_version": 1, "default": "baseline-fer2013-16px", "unavailable": {}, "models": '
                    f'{{"baseline-fer2013-16px": {entry}, "baseline-fer2013-16px": {entry}}}}}')
    with pytest.raises(zoo.ManifestError, match="'baseline-fer2013-16px' twice"):
        zoo.load_manifest(path)


@pytest.mark.parametrize("change", ["temperature 1.41", "mean rounded", "num_classes in config"])
def test_a_config_may_refit_the_temperature_and_spell_the_same_network_otherwise(tmp_path: Path, change: str) -> None:
    """A temperature re-fitted after export (lrfer eval --calibrate-on) is the config's to give; floats
    equal to rounding and build arguments that repeat the entry are the same network."""
    folder, _ = make_dir(tmp_path / "repo")
    config = json.loads((folder / zoo.CONFIG_FILENAME).read_text())
    if change == "temperature 1.41":
        config["temperature"] = 1.41
    elif change == "mean rounded":
        config["mean"] = [0.5 + 1e-12]
    else:
        config["config"]["num_classes"] = 7
    (folder / zoo.CONFIG_FILENAME).write_text(json.dumps(config))
    spec, _ = zoo.resolve(folder)
    assert spec.temperature == (1.41 if change == "temperature 1.41" else 1.3)


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_name_is_an_unknown_model_not_the_working_folder(name: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``lrfer.load("")`` (an unset variable) read the working folder: a folder with a config loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / zoo.CONFIG_FILENAME).write_text("{}")
    with pytest.raises(zoo.UnknownModelError, match="unknown model .*known models: "):
        zoo.resolve(name)


def test_a_file_nothing_can_verify_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file written without save_weights (no recorded sha256) under a name no manifest entry has loaded
    with an info line only: "verified before use" was silently not true for it. A file that records its
    sha256 loads without the warning."""
    path = tmp_path / "mine.safetensors"
    zoo.save_weights(tiny_model().state_dict(), path, tiny_entry(name="baseline-mine-16px", dataset="mine"))
    with caplog.at_level("WARNING", logger="lrfer.zoo"):
        zoo.resolve(path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    header, data = zoo._split_safetensors(path.read_bytes())
    del header["__metadata__"][zoo.CONTENT_SHA_METADATA_KEY]
    path.write_bytes(zoo._join_safetensors(header, data))
    with caplog.at_level("WARNING", logger="lrfer.zoo"):
        zoo.resolve(path)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{path} records no sha256 and no manifest entry names it, so nothing could verify it (sha256 "
        f"{zoo.sha256_file(path)}); lrfer.zoo.save_weights writes files that record theirs"]


def test_a_file_refused_for_its_header_gets_no_warning_about_loading_it(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A run's final weights (save_trained: arch and config, no sha256, no manifest entry) are refused;
    the error came after a warning that the file would load unverified."""
    from safetensors.torch import save_file

    path = tmp_path / "final.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model().state_dict().items()}, str(path),
              metadata={zoo.SPEC_METADATA_KEY: json.dumps({"arch": "baseline", "config": {}, "resolution": 16})})
    with caplog.at_level("WARNING", logger="lrfer.zoo"), pytest.raises(zoo.ManifestError):
        zoo.resolve(path)
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
