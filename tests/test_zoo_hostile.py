"""Weights and specs from outside that are damaged or made to harm: refused by name, before memory is spent."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from lrfer import zoo
from lrfer.constants import CLASSES
from lrfer.models import build_model

COMMIT = "a" * 40


def entry(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "baseline-fer2013-16px", "arch": "baseline", "config": {"width": 8, "input_size": 16},
        "dataset": "fer2013", "resolution": 16, "in_chans": 1, "classes": list(CLASSES), "mean": [0.5],
        "std": [0.25], "temperature": 1.0, "alignment": "fer2013",
        "license": {"code": "MIT", "weights": "MIT", "data": "FER2013"},
    }
    data.update(overrides)
    return data


def forged(path: Path, meta: dict[str, Any], fill: float | None = None) -> str:
    """A width-8 baseline's tensors under a header that says ``meta``, sealed with its own content sha256
    (anyone can do that: a file loaded by path is only as trustworthy as its maker); returns its sha256."""
    torch.manual_seed(0)
    state = build_model("baseline", width=8, input_size=16).state_dict()
    tensors = {k: (v.half() if fill is None else torch.full_like(v, fill).half()) if v.is_floating_point() else v
               for k, v in state.items()}
    blob = zoo.sealed(zoo.safetensors_bytes(tensors, {zoo.SPEC_METADATA_KEY: json.dumps(meta, sort_keys=True)}))
    path.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture
def real_parameters(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Element counts of every parameter created off the meta device (real memory) while a test runs."""
    from torch.nn.modules import module as torch_module

    sizes: list[int] = []

    def record(module: Any, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            sizes.append(param.numel())

    handle = torch_module.register_module_parameter_registration_hook(record)
    yield sizes
    handle.remove()


@pytest.mark.parametrize("config", [{"width": 10**7}, {"width": 8, "blocks_per_stage": 300}])
def test_a_config_far_larger_than_its_file_is_refused_before_it_is_built(
        config: dict[str, int], tmp_path: Path, real_parameters: list[int]) -> None:
    """A 46 KB file whose header asks for width 10**7 (36 TB of parameters) or a million blocks (hours, and
    gigabytes, of Python) was built before the strict load found the file did not fit."""
    path = tmp_path / "hostile.safetensors"
    forged(path, entry(config={**config, "input_size": 16}))
    real_parameters.clear()  # the file's own tiny network
    with pytest.raises(zoo.StateDictMismatchError, match="do not fit"):
        zoo.load_model(path)
    assert real_parameters == [], "no parameter of the network may be allocated"


@pytest.mark.parametrize("width, problem", [(-1, "negative dimension"), (10**40, "Overflow")])
def test_a_width_torch_cannot_build_is_a_manifest_error(width: int, problem: str, tmp_path: Path) -> None:
    """A negative width was a bare RuntimeError from torch, an overflowing one a TypeError (which the CLI did not
    catch): neither named the config."""
    path = tmp_path / "hostile.safetensors"
    forged(path, entry(config={"width": width, "input_size": 16}))
    with pytest.raises(zoo.ManifestError, match=rf"'width': {width}.*{problem}"):
        zoo.load_model(path)


def test_a_resolution_no_face_has_is_refused() -> None:
    """lrfer.load allocated resolution**2 floats at once: 100000 px, 120 GB, from a 46 KB file."""
    spec = {**entry(name="baseline-fer2013-100000px", resolution=100000, config={"width": 8, "input_size": 100000}),
            "file": "x.safetensors", "sha256": "0" * 64, "source": {"kind": "bundled"}}
    with pytest.raises(zoo.ManifestError, match="'resolution' must be a positive int of at most 48"):
        zoo.ModelSpec.from_dict(spec)


def test_an_unknown_source_kind_names_every_kind_there_is() -> None:
    """The message listed 'bundled' and 'hub' only, while 'local' (a file or folder lrfer resolved) is taken."""
    spec = {**entry(), "file": "x.safetensors", "sha256": "0" * 64, "source": {"kind": "s3"}}
    with pytest.raises(zoo.ManifestError, match="source.kind must be 'bundled', 'hub' or 'local', got 's3'"):
        zoo.ModelSpec.from_dict(spec)
    local = {**spec, "source": {"kind": "local", "path": "/weights/x.safetensors"}}
    assert zoo.ModelSpec.from_dict(local).source["kind"] == "local"


def test_the_tensors_loaded_are_the_bytes_whose_sha256_was_checked(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A file replaced after its sha256 was checked (another process writing a shared cache or folder) was
    loaded as it then was: verified bytes and loaded bytes were two reads apart."""
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "baseline-fer2013-16px.safetensors"
    digest = forged(weights, entry())
    forged(tmp_path / "evil.safetensors", entry(), fill=7.0)  # same header, other tensors
    (folder / zoo.CONFIG_FILENAME).write_text(json.dumps({**entry(), "file": weights.name, "sha256": digest}))
    good = zoo.load_model(folder).fc.bias.detach().clone()

    import lrfer.models

    real_build = lrfer.models.build_model

    def build_while_the_file_is_replaced(*args: Any, **kwargs: Any) -> torch.nn.Module:
        shutil.copyfile(tmp_path / "evil.safetensors", weights)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(lrfer.models, "build_model", build_while_the_file_is_replaced)
    model = zoo.load_model(folder)
    assert torch.equal(model.fc.bias, good), "the tensors must be those of the verified file"

    real_resolve = zoo.resolve

    def resolve_then_replace(*args: Any, **kwargs: Any) -> Any:
        resolved = real_resolve(*args, **kwargs)
        shutil.copyfile(tmp_path / "evil.safetensors", weights)
        return resolved

    monkeypatch.setattr(lrfer.models, "build_model", real_build)
    forged(weights, entry())
    monkeypatch.setattr(zoo, "resolve", resolve_then_replace)
    with pytest.raises(zoo.ChecksumError, match="changed while it was being loaded"):
        zoo.load_model(folder)


@pytest.mark.parametrize("text, problem", [
    (b"[" * 100_000 + b"]" * 100_000, "maximum recursion depth"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "4300"),  # Python 3.10 words the limit otherwise
    (b'{"name": "\xff"}', "not UTF-8"),
])
def test_unreadable_config_is_a_manifest_error_naming_the_file(text: bytes, problem: str, tmp_path: Path) -> None:
    """A RecursionError, a bare ValueError and a UnicodeDecodeError named neither the file nor the key."""
    (tmp_path / zoo.CONFIG_FILENAME).write_bytes(text)
    with pytest.raises(zoo.ManifestError, match=rf"{zoo.CONFIG_FILENAME}.*{problem}"):
        zoo.resolve(tmp_path)


def test_an_embedded_spec_nested_too_deep_is_a_manifest_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={zoo.SPEC_METADATA_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(zoo.ManifestError, match=rf"{zoo.SPEC_METADATA_KEY!r} metadata is not JSON lrfer can read"):
        zoo.resolve(path)


@pytest.mark.parametrize("key, value", [("sha256", "0" * 64 + "\n"),
                                        ("source", {"kind": "hub", "repo_id": "org/repo", "revision": COMMIT + "\n"})])
def test_a_hash_with_a_trailing_newline_is_refused(key: str, value: Any) -> None:
    """'$' matched before a final newline: the entry was accepted, and then no file ever matched its sha256
    (a Hub download was deleted and fetched again on every load)."""
    spec = {**entry(), "file": "x.safetensors", "sha256": "0" * 64, "source": {"kind": "bundled"}, key: value}
    with pytest.raises(zoo.ManifestError):
        zoo.ModelSpec.from_dict(spec)


@pytest.mark.parametrize("revision", ["../../../outside/pwned", "refs//x", "/abs", "a/.."])
def test_a_revision_that_climbs_out_of_the_cache_is_refused(revision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub writes refs/<revision> in its cache (and reads it offline): '@../../x' wrote a file
    outside it, wherever the endpoint answered for that revision."""
    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be fetched for this revision")

    monkeypatch.setattr(zoo, "_hub_download", no_download)
    with pytest.raises(ValueError, match="is not a revision"):
        zoo.resolve(f"hf://org/repo@{revision}")


#: Branch and tag names git accepts (``git check-ref-format --allow-onelevel``), and names it refuses.
GIT_REF_NAMES = ["v1.0+cpu", "release/2.1", "v1@2", "x#1", "ünïcode", "a.lock.b", "a{b}", "100%", "@x", "a./b", "lock"]
NOT_GIT_REF_NAMES = ["a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "x.lock", "x/y.lock", "x//y", "@",
                     "a@{1}", ".hidden", "a/.b", "a.", "a/b.", "a\x7fb", "a\x01b", "a\tb"]


def _git_accepts(name: str) -> bool | None:
    """``git check-ref-format --allow-onelevel NAME``, or None without git."""
    if shutil.which("git") is None:
        return None
    return subprocess.run(["git", "check-ref-format", "--allow-onelevel", name], capture_output=True).returncode == 0


class _Fetched(Exception):
    pass


@pytest.mark.parametrize("revision", GIT_REF_NAMES)
def test_every_ref_name_git_accepts_is_a_revision(revision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag such as 'v1.0+cpu' (PyTorch's local-version style, a valid git tag) was refused: the check allowed
    only letters, digits and '_.-/'."""
    def fetch(repo_id: str, filename: str, rev: str, *args: Any) -> None:
        raise _Fetched(rev)

    assert _git_accepts(revision) in (True, None)
    monkeypatch.setattr(zoo, "_hub_download", fetch)
    with pytest.raises(_Fetched) as fetched:
        zoo.resolve(f"hf://org/repo@{revision}")
    assert fetched.value.args == (revision,)


@pytest.mark.parametrize("revision", NOT_GIT_REF_NAMES)
def test_a_name_git_refuses_is_not_a_revision(revision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What git refuses in a ref name is refused before anything is fetched, with the same message."""
    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be fetched for this revision")

    assert _git_accepts(revision) in (False, None)
    monkeypatch.setattr(zoo, "_hub_download", no_download)
    with pytest.raises(ValueError, match="is not a revision .*branch or tag"):
        zoo.resolve(f"hf://org/repo@{revision}")


#: Characters Windows refuses in file names that git allows in a ref name (``:?*`` and control characters it refuses).
WINDOWS_ONLY_FORBIDDEN = ["<", ">", "|", '"']


@pytest.mark.parametrize("char", WINDOWS_ONLY_FORBIDDEN)
def test_on_windows_a_revision_with_a_character_windows_forbids_is_refused_naming_it(char: str) -> None:
    """huggingface_hub writes the revision as the file refs/<revision> in its cache: on Windows 'v1|cpu',
    a name git accepts, failed there with an obscure OSError (invalid argument) instead of saying why."""
    revision = f"v1{char}cpu"
    assert _git_accepts(revision) in (True, None)
    with pytest.raises(ValueError, match=rf"holds {re.escape(repr(char))}, which Windows does not allow .*commit sha"):
        zoo._check_revision(f"hf://org/repo@{revision}", revision, os_name="nt")
    zoo._check_revision(f"hf://org/repo@{revision}", revision, os_name="posix")  # elsewhere a file may be so named


#: Revisions git accepts whose part Windows cannot hold as a file: (revision, the part, why).
DEVICE = "reserves for a device"
WINDOWS_RESERVED_PARTS = [("CON", "CON", DEVICE), ("release/nul", "nul", DEVICE), ("Aux.txt", "Aux.txt", DEVICE),
                          ("com1", "com1", DEVICE), ("v1/LPT9.tar.gz/x", "LPT9.tar.gz", DEVICE), ("prn", "prn", DEVICE),
                          ("a./b", "a.", "ends in '.'")]


@pytest.mark.parametrize(("revision", "part", "why"), WINDOWS_RESERVED_PARTS)
def test_on_windows_a_revision_with_a_part_windows_reserves_is_refused_naming_it(revision: str, part: str,
                                                                                    why: str) -> None:
    """huggingface_hub writes refs/<revision> in its cache: on Windows a part 'CON' or 'nul.txt' (names git
    accepts) is a device, not a file, and 'a.' loses its dot; they reached huggingface_hub instead of being named."""
    assert _git_accepts(revision) in (True, None)
    with pytest.raises(ValueError, match=rf"has the part {re.escape(repr(part))}.*{re.escape(why)}.*commit sha"):
        zoo._check_revision(f"hf://org/repo@{revision}", revision, os_name="nt")
    zoo._check_revision(f"hf://org/repo@{revision}", revision, os_name="posix")  # elsewhere a file may be so named


@pytest.mark.parametrize("revision", ["CONSOLE", "com10", "COM0", "nul-x", "lpt", "v1.0+cpu", "x/aux_y", "connect.txt"])
def test_on_windows_names_that_only_look_like_devices_are_revisions(revision: str) -> None:
    """Only the device names themselves, with or without an extension, are refused: not names that begin with one."""
    zoo._check_revision(f"hf://org/repo@{revision}", revision, os_name="nt")

def test_a_revision_windows_cannot_hold_is_fetched_elsewhere_and_refused_on_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check follows the system it runs on (``os.name``): refused before anything is fetched on Windows only."""
    def fetch(repo_id: str, filename: str, rev: str, *args: Any) -> None:
        raise _Fetched(rev)

    monkeypatch.setattr(zoo, "_hub_download", fetch)
    expected = ValueError if os.name == "nt" else _Fetched
    with pytest.raises(expected):
        zoo.resolve("hf://org/repo@a<b>")


def test_a_tampered_teacher_file_is_refused(tmp_path: Path) -> None:
    """``lrfer train --teacher FILE.safetensors`` read the file with no check at all: a file written by
    ``lrfer train --out`` whose tensors were changed (or that asks for a width of 10**7) was used as it was."""
    from lrfer.train.recipes import load_trained

    path = tmp_path / "teacher.safetensors"
    forged(path, entry())
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(zoo.ChecksumError, match="its header records"):
        load_trained(path, torch.device("cpu"))
    forged(path, entry(config={"width": 10**7, "input_size": 16}))
    with pytest.raises(zoo.StateDictMismatchError, match="do not fit"):
        load_trained(path, torch.device("cpu"))


def test_the_meta_build_adds_no_global_hook_that_other_threads_iterate(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A global parameter-registration hook added and removed around the meta build mutated the dict that every
    thread building a module iterates: another thread's ``nn.Linear(1, 1)`` raised 'OrderedDict mutated during
    iteration', and a load in another thread a ManifestError blaming its config."""
    import lrfer.models
    from torch.nn.modules import module as torch_module

    real_build = lrfer.models.build_model
    before = len(torch_module._global_parameter_registration_hooks)
    seen: list[int] = []

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        seen.append(len(torch_module._global_parameter_registration_hooks))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(lrfer.models, "build_model", build)
    path = tmp_path / "m.safetensors"
    forged(path, entry())
    zoo.load_model(path)
    assert seen == [before, before]


def test_a_run_weights_file_asking_for_a_million_blocks_is_refused_at_once(tmp_path: Path) -> None:
    """``lrfer train --teacher`` with a file in save_trained's form (arch and config, no hash): its meta build
    had no budget, so a 200-byte header asking for a million blocks ran for hours (3,000 blocks: 19 s)."""
    from safetensors.torch import save_file

    from lrfer.train.recipes import load_trained

    path = tmp_path / "teacher.safetensors"
    spec = {"arch": "gmenet", "config": {"width": 8, "blocks_per_stage": 10**6}, "resolution": 16}
    save_file({"w": torch.zeros(2)}, str(path), metadata={zoo.SPEC_METADATA_KEY: json.dumps(spec)})
    with pytest.raises(zoo.StateDictMismatchError, match="do not fit"):
        load_trained(path, torch.device("cpu"))


@pytest.mark.parametrize("temperature", [1e-300, 0.0, -1.0])
def test_a_temperature_that_would_make_every_probability_nan_is_refused(temperature: float) -> None:
    """1e-300 passed as "a positive finite number"; in float32 it is 0, and logits / 0 made every
    probability NaN."""
    spec = {**entry(temperature=temperature), "file": "x.safetensors", "sha256": "0" * 64, "source": {"kind": "bundled"}}
    with pytest.raises(zoo.ManifestError, match="'temperature' must be a finite number of at least 0.001"):
        zoo.ModelSpec.from_dict(spec)
    assert zoo.ModelSpec.from_dict({**spec, "temperature": 0.001}).temperature == 0.001


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX FIFOs and /dev/zero")
def test_a_path_that_is_no_regular_file_is_named_so(tmp_path: Path) -> None:
    """A FIFO (or /dev/zero behind a link) named like weights was said not to exist."""
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(FileNotFoundError, match="is not a regular file"):
        zoo.resolve(fifo)
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    with pytest.raises(FileNotFoundError, match="is not a regular file"):
        zoo.resolve(tmp_path / "zero.safetensors")


def test_a_broken_symlink_to_weights_names_its_missing_target(tmp_path: Path) -> None:
    """A link whose weights file was moved or deleted was reported as "does not exist", though ``ls`` lists it."""
    link = tmp_path / "model.safetensors"
    link.symlink_to(tmp_path / "moved" / "model.safetensors")
    for spec in (link, str(link)):
        with pytest.raises(FileNotFoundError, match=r"symbolic link to '.*moved/model\.safetensors', which does not"):
            zoo.resolve(spec)
