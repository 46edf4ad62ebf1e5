"""Hub downloads through the real ``huggingface_hub.hf_hub_download``, against a local server.

The server speaks the part of the Hub protocol ``hf_hub_download`` uses: ``HEAD``/``GET
/{repo_id}/resolve/{revision}/{filename}`` answered with ``X-Repo-Commit``, ``ETag`` and
``Content-Length`` (see ``huggingface_hub.file_download.get_hf_file_metadata``). It listens on
127.0.0.1 only; huggingface_hub's endpoint constants are patched to point at it and telemetry
(which would fetch a registry from huggingface.co) is switched off.
"""
from __future__ import annotations

import hashlib
import json
import re
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

import pytest
import torch
from huggingface_hub import constants as hf_constants

from lrfer import zoo
from lrfer.constants import CLASSES
from lrfer.models import build_model

COMMIT = "a" * 40
REPO_ID = "lrfer-test/tiny"
NAME = "baseline-fer2013-16px"
WEIGHTS = f"{NAME}.safetensors"


class FakeHub:
    """In-memory repos, ``files[repo_id][filename] = bytes``, answered as huggingface.co answers an anonymous client.

    * Only the revisions in ``revisions`` exist (``main`` and COMMIT); another is ``404 RevisionNotFound``.
    * A repo that is not there is ``401 RepoNotFound`` (the Hub's answer when no token is sent: private and
      missing repos look alike); a file that is not there is ``404 EntryNotFound`` with ``X-Repo-Commit``.
    * A small file is served from ``/resolve/`` (``ETag``: its git blob id). A ``.safetensors`` file is LFS:
      ``/resolve/`` answers ``302`` with an absolute ``Location`` on another origin (the CDN, a second server
      here), ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``; the CDN honours ``Range`` (``206``).
    * ``xet_cas``: also send ``X-Xet-Hash`` and the ``xet-auth`` link, as for a Xet-backed file; the token
      route names this CAS URL (nothing speaks the CAS protocol here, so only failures can be tested).
    * ``refuse``: answer every ``/resolve/`` request with this status and these headers (429, 403, 503, ...).
    * ``private[repo_id] = token``: that repo answers as a missing one (401) unless ``Authorization: Bearer <token>``
      comes with the request.
    * ``files_at[(repo_id, commit)]``: the repo's files at that commit (``files[repo_id]`` at every other one), for
      a revision (add it to ``revisions``) whose files differ.
    * ``requests`` and ``headers``: the method and path, and the headers, of every request, the CDN's included.
    """

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.revisions: dict[str, str] = {"main": COMMIT, COMMIT: COMMIT}
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.cut_short: set[str] = set()  # file names the CDN stops sending half way, on every try (the connection drops)
        self.refuse: tuple[int, dict[str, str]] | None = None
        self.xet_cas: str | None = None
        self.private: dict[str, str] = {}
        self.files_at: dict[tuple[str, str], dict[str, bytes]] = {}
        self.endpoint = self.cdn = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"", *, send_body: bool = True,
                      length: int | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if send_body and self.command == "GET":
                    self.wfile.write(body)

            def _cdn(self, sha: str) -> None:
                repos = [*hub.files.values(), *hub.files_at.values()]
                name, data = next(((n, d) for repo in repos for n, d in repo.items()
                                   if hashlib.sha256(d).hexdigest() == sha), ("", None))
                if data is None:
                    return self._send(404, {})
                start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0])
                status = 206 if start else 200
                headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                stop = len(data) // 2 if name in hub.cut_short else len(data)
                self._send(status, headers, data[start:stop], length=len(data) - start)

            def _answer(self) -> None:
                hub.requests.append((self.command, self.path))
                hub.headers.append(dict(self.headers))
                raw = self.path.split("?")[0].lstrip("/")
                if raw.startswith("cdn/"):
                    return self._cdn(raw.removeprefix("cdn/"))
                if "/xet-read-token/" in raw and hub.xet_cas:
                    return self._send(200, {"X-Xet-Cas-Url": hub.xet_cas, "X-Xet-Access-Token": "token",
                                            "X-Xet-Token-Expiration": str(int(time.time()) + 3600)}, b"{}")
                repo_id, sep, rest = raw.partition("/resolve/")
                quoted_revision, _, quoted_filename = rest.partition("/")  # the client quotes "/" in a revision
                revision, filename = unquote(quoted_revision), unquote(quoted_filename)
                if hub.refuse is not None:
                    return self._send(hub.refuse[0], hub.refuse[1])
                sent = {k.lower(): v for k, v in self.headers.items()}.get("authorization")
                if not sep or repo_id not in hub.files or (
                        repo_id in hub.private and sent != f"Bearer {hub.private[repo_id]}"):
                    return self._send(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                commit = hub.revisions.get(revision)
                if commit is None:
                    return self._send(404, {"X-Error-Code": "RevisionNotFound",
                                            "X-Error-Message": f"Invalid rev id: {revision}"})
                data = hub.files_at.get((repo_id, commit), hub.files[repo_id]).get(filename)
                if data is None:
                    return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                            "X-Repo-Commit": commit})
                if not filename.endswith(".safetensors"):
                    git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    return self._send(200, {"X-Repo-Commit": commit, "ETag": f'"{git_oid}"',
                                            "Content-Type": "application/octet-stream"}, data)
                sha = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
                headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(pointer).hexdigest()}"',
                           "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                           "Location": f"{hub.cdn}/cdn/{sha}"}
                if hub.xet_cas:
                    headers["X-Xet-Hash"] = sha
                    headers["Link"] = (f'<{hub.endpoint}/api/models/{repo_id}/xet-read-token/{commit}>; '
                                       'rel="xet-auth"')
                self._send(302, headers)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
                self._answer()

            def do_GET(self) -> None:  # noqa: N802
                self._answer()

        return Handler


def point_file_download_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """huggingface_hub before 0.21 (setup.cfg allows 0.20) copied these constants into file_download."""
    from huggingface_hub import file_download

    monkeypatch.setattr(file_download, "ENDPOINT", endpoint, raising=False)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}", raising=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub on 127.0.0.1 with huggingface_hub (and its cache) pointed at it."""
    fake = FakeHub()
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), fake.handler()) for _ in range(2)]  # the Hub, its CDN
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    endpoint, fake.cdn = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    fake.endpoint = endpoint
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    point_file_download_at(monkeypatch, endpoint)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # No token of the developer's reaches the test server: huggingface_hub read HF_HOME at import, so the token
    # file's path is patched too, and a test that wants a token sets HF_TOKEN itself.
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"), raising=False)
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"), raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False, raising=False)
    monkeypatch.setenv("LRFER_CACHE", str(tmp_path / "cache"))
    try:
        yield fake
    finally:
        for server, thread in zip(servers, threads):
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def entry(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": NAME, "arch": "baseline", "config": {"width": 8, "input_size": 16}, "dataset": "fer2013",
        "resolution": 16, "in_chans": 1, "classes": list(CLASSES), "mean": [0.5], "std": [0.25],
        "temperature": 1.0, "alignment": "fer2013", "file": WEIGHTS, "sha256": "0" * 64,
        "source": {"kind": "hub", "repo_id": REPO_ID, "revision": COMMIT},
        "license": {"code": "MIT", "weights": "MIT", "data": "FER2013"}, "metrics": {}, "recipe": "test",
        "seed": 0, "paper": "", "description": "tiny hub model",
    }
    data.update(overrides)
    return data


@pytest.fixture
def weights(tmp_path: Path) -> tuple[bytes, str, torch.nn.Module]:
    """A tiny model's fp16 safetensors bytes, their sha256 and the model."""
    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16).eval()
    path = tmp_path / "made" / WEIGHTS
    digest = zoo.save_weights(model.state_dict(), path, entry())
    return path.read_bytes(), digest, model


def publish(hub: FakeHub, data: bytes, digest: str) -> None:
    hub.files[REPO_ID] = {WEIGHTS: data, zoo.CONFIG_FILENAME: json.dumps(entry(sha256=digest)).encode()}


@pytest.fixture
def hub_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def write(digest: str) -> None:
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps({"schema_version": 1, "default": NAME, "models": {NAME: entry(sha256=digest)},
                                    "unavailable": {}}))
        monkeypatch.setattr(zoo, "MANIFEST_PATH", path)

    return write


def publish_in_manifest(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                        hub_manifest: Callable[[str], None]) -> tuple[bytes, str, torch.nn.Module]:
    """The tiny model published on the fake Hub and named in the manifest as a hub entry."""
    data, digest, _ = weights
    publish(hub, data, digest)
    hub_manifest(digest)
    return weights


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def check_model(model: torch.nn.Module, original: torch.nn.Module) -> None:
    assert not model.training
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.allclose(out, original(x), atol=2e-2)


def test_hf_uri_download_and_load(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                  tmp_path: Path) -> None:
    data, digest, original = weights
    publish(hub, data, digest)
    model = zoo.load_model(f"hf://{REPO_ID}@{COMMIT}")
    check_model(model, original)
    spec = model.pretrained_cfg
    assert spec.sha256 == digest and dict(spec.source) == {"kind": "hub", "repo_id": REPO_ID, "revision": COMMIT}
    fetched = {path for method, path in hub.requests if method == "GET"}
    # the config from the Hub itself; the weights (LFS) from the CDN the Hub redirects to
    assert fetched == {f"/{REPO_ID}/resolve/{COMMIT}/{zoo.CONFIG_FILENAME}", f"/cdn/{digest}"}
    # $LRFER_CACHE was used, in huggingface_hub's layout
    cached = list((tmp_path / "cache").rglob(f"snapshots/{COMMIT}/{WEIGHTS}"))
    assert len(cached) == 1


def test_a_commit_written_in_upper_case_is_the_same_pinned_commit(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """It was taken for a branch name: "not pinned" warned, and offline the cache lookup missed."""
    data, digest, original = weights
    publish(hub, data, digest)
    with caplog.at_level("WARNING"):
        model = zoo.load_model(f"hf://{REPO_ID}@{COMMIT.upper()}")
    check_model(model, original)
    assert "not pinned" not in caplog.text and model.pretrained_cfg.source["revision"] == COMMIT


def test_a_tag_with_a_plus_loads_pinned_to_its_commit(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """``hf://org/repo@v1.0+cpu``, a valid git tag, was refused as "not 'hf://org/repo@revision'"."""
    data, digest, original = weights
    publish(hub, data, digest)
    hub.revisions["v1.0+cpu"] = COMMIT
    model = zoo.load_model(f"hf://{REPO_ID}@v1.0+cpu")
    check_model(model, original)
    assert model.pretrained_cfg.source["revision"] == COMMIT


def test_timm_style_hub_id_is_the_same_spec(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """``hf-hub:org/repo@commit`` (timm's spelling) loads what ``hf://org/repo@commit`` loads."""
    data, digest, original = weights
    publish(hub, data, digest)
    spec, path = zoo.resolve(f"hf-hub:{REPO_ID}@{COMMIT}")
    assert (spec, path) == zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    check_model(zoo.load_model(f"hf-hub:{REPO_ID}@{COMMIT}"), original)


@pytest.mark.parametrize("scheme", ["HF://", "Hf://", "HF-HUB:", "Hf-Hub:", "HF_HUB:", "HF-HUB://"])
def test_a_hub_scheme_in_any_case_is_the_same_spec(scheme: str, hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """URL schemes are case-insensitive, but ``HF://org/repo@commit`` was read as a URL ("lrfer downloads
    weights only from the Hugging Face Hub") and ``HF-HUB:org/repo`` as a missing local path, by
    lrfer.load, lrfer.info, lrfer.download and the CLI alike; both are the ``hf://`` id."""
    from lrfer.cli import main

    data, digest, original = weights
    publish(hub, data, digest)
    expected = zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    given = f"{scheme}{REPO_ID}@{COMMIT}"
    assert zoo.resolve(given) == expected
    assert zoo.download(given) == expected[1]
    assert zoo.info(given) == zoo.info(f"hf://{REPO_ID}@{COMMIT}")
    check_model(zoo.load_model(given), original)
    capsys.readouterr()
    assert main(["download", given]) == 0
    assert capsys.readouterr().out.strip() == str(expected[1])
    assert main(["info", given, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["repo_id"] == REPO_ID


def test_a_hub_schemes_case_leaves_the_repo_and_revision_as_given(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """Only the scheme is case-insensitive: the repo and a branch or tag keep their case (``@V1`` is not ``@v1``)."""
    assert zoo._hub_uri(" HF-HUB:Org/Repo@Main\n") == "hf://Org/Repo@Main"
    assert zoo._hub_uri("Hf-Hub://Org/Repo") == "hf://Org/Repo"
    assert zoo._hub_uri("HF://Org/Repo@V1") == "hf://Org/Repo@V1"
    assert zoo._hub_uri("hfx://org/repo") is None and zoo._hub_uri("org/repo") is None
    data, digest, _ = weights
    publish(hub, data, digest)
    hub.revisions["V1"] = COMMIT
    assert zoo.load_model(f"HF://{REPO_ID}@V1").pretrained_cfg.source["revision"] == COMMIT
    from huggingface_hub.utils import RevisionNotFoundError

    with pytest.raises(RevisionNotFoundError):  # another revision, which this repo has not
        zoo.resolve(f"HF://{REPO_ID}@v1")


def test_a_hub_id_with_a_trailing_slash_or_surrounding_space_is_the_same_repo(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """``hf://org/repo/`` (a folder's spelling, as HfFileSystem writes its paths) was refused as "not
    'hf://org/repo'", and `` hf://org/repo\\n`` was read as a path; both are the same repo and revision."""
    data, digest, original = weights
    publish(hub, data, digest)
    spec, path = zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert zoo.resolve(f"hf://{REPO_ID}@{COMMIT}/") == (spec, path)
    assert zoo.resolve(f"hf-hub:{REPO_ID}@{COMMIT}/") == (spec, path)
    # surrounding space is no part of it, as of a name (a line read from a file; it was read as a path)
    assert zoo.resolve(f" hf://{REPO_ID}@{COMMIT}\n") == (spec, path)
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}/"), original)


@pytest.mark.parametrize("given_as", ["argument", "variable"])
def test_a_cache_dir_that_is_a_file_is_named_so(given_as: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``$LRFER_CACHE`` (or ``cache_dir``) naming a file: offline, the not-cached error told the user to copy
    the cache to that file; online, huggingface_hub failed with a bare "File exists"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a_file = tmp_path / "lrfer-cache"
    a_file.write_text("not a folder")
    monkeypatch.setenv(zoo.CACHE_ENV, str(a_file) if given_as == "variable" else str(tmp_path / "cache"))
    cache_dir = str(a_file) if given_as == "argument" else None
    with pytest.raises(ValueError, match="cache folder .*lrfer-cache' .* is a file, not a folder"):
        zoo.download(f"hf://{REPO_ID}@{COMMIT}", cache_dir=cache_dir)
    assert zoo.download("gmenet-fer2013-16px", cache_dir=cache_dir).is_file()  # bundled: no cache used


def test_hub_id_without_prefix_points_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``org/repo`` that is not a local path is read as a path (no network), and the error shows the
    Hub spelling; a missing file names itself."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"use 'hf://{REPO_ID}@<40-hex commit>'"):
        zoo.resolve(REPO_ID)
    with pytest.raises(FileNotFoundError, match=f"use 'hf://{REPO_ID}@{COMMIT}' \\(or 'hf://{REPO_ID}' for"):
        zoo.resolve(f"{REPO_ID}@{COMMIT}")
    with pytest.raises(FileNotFoundError, match="nope.safetensors does not exist"):
        zoo.resolve(str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="does not exist .*a folder with lrfer_config.json"):
        zoo.resolve(str(tmp_path / "no" / "such" / "folder"))


def test_a_hub_page_url_or_a_hub_id_with_a_dot_points_to_the_hf_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub page's URL, pasted from the browser, said ``https:/huggingface.co/org/repo does not exist``
    (the path's ``//`` folded), and a Hub id with a dot in its name (timm's ``timm/resnet18.a1_in1k``)
    got no Hub hint, as its dot read as a file suffix."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"'https://huggingface.co/{REPO_ID}' is a URL, not a model spec; .*"
                                                f"use 'hf://{REPO_ID}@<40-hex commit>'"):
        zoo.resolve(f"https://huggingface.co/{REPO_ID}")
    with pytest.raises(FileNotFoundError, match=f"use 'hf://{REPO_ID}@{COMMIT}'"):
        zoo.resolve(f"https://huggingface.co/{REPO_ID}/tree/{COMMIT}")
    with pytest.raises(FileNotFoundError, match="is a URL, and lrfer downloads weights only from the Hugging Face Hub"):
        zoo.resolve("https://example.com/weights.safetensors")
    with pytest.raises(FileNotFoundError, match="use 'hf://timm/resnet18.a1_in1k@<40-hex commit>'"):
        zoo.resolve("timm/resnet18.a1_in1k")
    for file_like in ("models/mine.safetensors", "models/lrfer_config.json"):  # files, not Hub ids
        with pytest.raises(FileNotFoundError) as err:
            zoo.resolve(file_like)
        assert "does not exist" in str(err.value) and "hf://" not in str(err.value)


def test_hf_uri_branch_is_pinned_to_commit(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                           caplog: pytest.LogCaptureFixture) -> None:
    data, digest, _ = weights
    publish(hub, data, digest)
    with caplog.at_level("WARNING", logger="lrfer.zoo"):
        spec, path = zoo.resolve(f"hf://{REPO_ID}")
    assert "not pinned" in caplog.text
    assert spec.source["revision"] == COMMIT and path.parent.name == COMMIT


def test_manifest_hub_entry(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                            hub_manifest: Callable[[str], None], tmp_path: Path) -> None:
    data, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    explicit = tmp_path / "explicit-cache"
    path = zoo.download(NAME, cache_dir=explicit)
    assert path.is_relative_to(explicit) and zoo.sha256_file(path) == digest
    assert not (tmp_path / "cache").exists(), "the argument wins over $LRFER_CACHE"
    model = zoo.load_model(NAME, cache_dir=explicit)
    check_model(model, original)
    assert model.pretrained_cfg == zoo.get_spec(NAME)


def test_tampered_download_is_refused_and_removed(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                  hub_manifest: Callable[[str], None], tmp_path: Path) -> None:
    data, digest, original = weights
    publish(hub, data[:-8] + b"XXXXXXXX", digest)  # the server is consistent (its ETag), the bytes are not ours
    hub_manifest(digest)
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.load_model(NAME)
    message = str(err.value)
    assert f"expected {digest}" in message and WEIGHTS in message
    assert "deleted" in message and "re-run" in message
    cache = tmp_path / "cache"
    assert not list(cache.rglob(f"snapshots/*/{WEIGHTS}")), "the bad snapshot entry must be gone"
    bad_etag = hashlib.sha256(data[:-8] + b"XXXXXXXX").hexdigest()
    assert not list(cache.rglob(f"blobs/{bad_etag}")), "the bad blob must be gone"

    publish(hub, data, digest)  # the server is fixed: re-running fetches again and works
    check_model(zoo.load_model(NAME), original)


def test_tampered_hf_uri_is_refused(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    data, digest, _ = weights
    publish(hub, data, digest)
    hub.files[REPO_ID][WEIGHTS] = data[:-1] + b"!"
    with pytest.raises(zoo.ChecksumError, match=f"expected {digest}"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")


def test_offline_without_cache_gives_clear_error(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                 hub_manifest: Callable[[str], None],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    go_offline(monkeypatch)
    with pytest.raises(zoo.NotCachedError, match=f"lrfer download {NAME}") as err:
        zoo.load_model(NAME)
    assert "HF_HUB_OFFLINE=1" in str(err.value) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(zoo.NotCachedError, match=f"lrfer download hf://{REPO_ID}@{COMMIT}"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert hub.requests == [], "offline mode must not touch the network"


def test_offline_spec_from_a_hub_repo_names_its_hub_id_to_download(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec read from a repo's config (``rec.spec``) loaded again elsewhere: the command offered is one that
    fetches it (its name is no manifest's model: `lrfer download` of it was an unknown model)."""
    data, digest, _ = weights
    publish(hub, data, digest)
    spec, _ = zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    monkeypatch.setenv("LRFER_CACHE", str(tmp_path / "elsewhere"))
    go_offline(monkeypatch)
    with pytest.raises(zoo.NotCachedError, match=f"`lrfer download hf://{REPO_ID}@{COMMIT} --cache-dir"):
        zoo.load_model(spec)


def test_info_of_a_hub_entry_in_any_spelling_fetches_nothing(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Names ignore case and surrounding spaces: info of one spelt otherwise fetched the weights (offline: an error)."""
    publish_in_manifest(hub, weights, hub_manifest)
    go_offline(monkeypatch)
    for typed in (NAME, NAME.upper(), f" {NAME} "):
        assert zoo.info(typed)["name"] == NAME
    assert hub.requests == []


def test_unreachable_hub_without_cache_says_so(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                               hub_manifest: Callable[[str], None],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    data, digest, _ = weights
    hub_manifest(digest)
    with socket.socket() as probe:  # a port nothing listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    monkeypatch.setattr(hf_constants, "ENDPOINT", closed)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    point_file_download_at(monkeypatch, closed)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub's back-off: 23 s of retries
    with pytest.raises(zoo.NotCachedError, match="could not be reached") as err:
        zoo.load_model(NAME)
    assert "connect this machine" in str(err.value) and "HF_HUB_OFFLINE" not in str(err.value)


def point_hub_at_a_name_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The Hub at http://hub.invalid, a name no lookup resolves here; the back-off sleeps it causes."""
    import socket

    real_lookup = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hub.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_lookup(host, *args, **kwargs)

    unknown = "http://hub.invalid"
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setenv("HF_ENDPOINT", unknown)
    monkeypatch.setattr(hf_constants, "ENDPOINT", unknown)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", unknown + "/{repo_id}/resolve/{revision}/{filename}")
    point_file_download_at(monkeypatch, unknown)
    for proxy in zoo.PROXY_VARIABLES:
        monkeypatch.delenv(proxy, raising=False)
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    return sleeps


def test_a_hub_whose_name_does_not_resolve_is_not_retried(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                           hub_manifest: Callable[[str], None],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without network huggingface_hub retried five times with back-off: 25 s before the error."""
    data, digest, _ = weights
    hub_manifest(digest)
    sleeps = point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    with pytest.raises(zoo.NotCachedError, match="host name hub.invalid could not be resolved") as err:
        zoo.load_model(NAME)
    assert "connect this machine" in str(err.value) and sleeps == []


def test_a_cached_model_loads_when_the_hubs_name_does_not_resolve(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    zoo.download(NAME)
    zoo.download(f"hf://{REPO_ID}")  # caches the branch -> commit ref too
    hub.requests.clear()
    sleeps = point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    check_model(zoo.load_model(NAME), original)
    check_model(zoo.load_model(f"hf://{REPO_ID}"), original)
    assert hub.requests == [] and sleeps == []


def test_behind_a_proxy_the_hubs_name_is_not_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy resolves the Hub's name itself: this machine's lookup failing says nothing."""
    point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    assert zoo._unresolved_hub_host() == "hub.invalid"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert zoo._unresolved_hub_host() is None


def test_offline_after_download_uses_cache(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                           hub_manifest: Callable[[str], None],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    online_path = zoo.download(NAME)
    zoo.download(f"hf://{REPO_ID}")  # caches the branch -> commit ref too
    hub.requests.clear()
    go_offline(monkeypatch)
    hub.files.clear()  # the Hub is gone; only the cache remains
    assert zoo.download(NAME) == online_path
    check_model(zoo.load_model(NAME), original)
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)
    check_model(zoo.load_model(f"hf://{REPO_ID}"), original)
    assert hub.requests == []


def test_offline_cached_file_still_verified(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                            hub_manifest: Callable[[str], None],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    path = zoo.download(NAME)
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(data[:-1] + b"?")  # the cache is corrupted on disk
    go_offline(monkeypatch)
    with pytest.raises(zoo.ChecksumError, match="deleted; re-run without HF_HUB_OFFLINE=1 to download it again"):
        zoo.load_model(NAME)
    assert not path.exists() and not blob.exists()
    with pytest.raises(zoo.NotCachedError):
        zoo.load_model(NAME)


def test_a_corrupted_copy_deleted_under_local_files_only_says_to_fetch_it_without(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None]) -> None:
    """The advice "re-run to download it again" cannot work in a call kept to the cache: the re-run under
    ``local_files_only=True`` (or HF_HUB_OFFLINE=1) only met NotCachedError. Online, the advice stays plain."""
    data, _, original = publish_in_manifest(hub, weights, hub_manifest)
    path = zoo.download(NAME)
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(data[:-1] + b"?")
    with pytest.raises(zoo.ChecksumError, match="deleted; re-run without local_files_only=True to download it again"):
        zoo.load_model(NAME, local_files_only=True)
    path = zoo.download(NAME)  # fetched again
    path.resolve().write_bytes(data[:-1] + b"?")
    with pytest.raises(zoo.ChecksumError, match="deleted; re-run to download it again"):
        zoo.load_model(NAME)
    check_model(zoo.load_model(NAME), original)


def test_cli_download_then_offline_predict(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                           hub_manifest: Callable[[str], None], monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The offline workflow of the README: ``lrfer download NAME`` on a connected machine, then
    ``lrfer predict --model NAME`` with ``HF_HUB_OFFLINE=1`` reads only the cache."""
    import cv2
    import numpy as np

    from lrfer.cli import main

    data, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    assert main(["download", NAME]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.name == WEIGHTS and printed.is_relative_to(tmp_path / "cache")
    assert zoo.sha256_file(printed) == digest

    go_offline(monkeypatch)
    hub.files.clear()
    hub.requests.clear()
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(3):
        cv2.imwrite(str(crops / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    out = tmp_path / "faces.csv"
    assert main(["predict", str(crops), "--model", NAME, "--detector", "none", "--quiet", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 3  # header and one face per crop
    assert hub.requests == [], "offline predict must not touch the network"


def test_cache_dir_of_download_is_where_load_and_predict_look(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Weights fetched to a chosen folder (``lrfer.download(name, cache_dir=...)``, ``lrfer download
    --cache-dir``) are found there offline by ``lrfer.load(..., cache_dir=...)`` and ``lrfer predict
    --cache-dir``: ``lrfer.load`` had no such argument, so only ``$LRFER_CACHE`` could point it there."""
    import cv2
    import numpy as np

    import lrfer
    from lrfer.cli import main

    _, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    python_cache, cli_cache = tmp_path / "python-cache", tmp_path / "cli-cache"
    assert lrfer.download(NAME, cache_dir=python_cache).is_relative_to(python_cache)
    hub_id = f"hf://{REPO_ID}@{COMMIT}"
    assert main(["download", NAME, hub_id, "--cache-dir", str(cli_cache)]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    assert printed[0] == printed[1] and printed[0].is_relative_to(cli_cache) and zoo.sha256_file(printed[0]) == digest
    assert not (tmp_path / "cache").exists(), "nothing went to $LRFER_CACHE"

    go_offline(monkeypatch)
    hub.files.clear()
    hub.requests.clear()
    rec = lrfer.load(NAME, device="cpu", detector=None, cache_dir=python_cache)
    check_model(rec.model, original)
    with pytest.raises(zoo.NotCachedError):
        lrfer.load(NAME, device="cpu", detector=None)  # $LRFER_CACHE holds nothing
    crop = tmp_path / "crops" / "0.png"
    crop.parent.mkdir()
    cv2.imwrite(str(crop), np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    out = tmp_path / "faces.csv"
    args = ["predict", str(crop), "--model", NAME, "--detector", "none", "--quiet", "--out", str(out)]
    assert main([*args, "--cache-dir", str(cli_cache)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert main(args) == 1, "without --cache-dir the weights are not in $LRFER_CACHE"
    capsys.readouterr()
    assert main(["info", hub_id, "--json", "--cache-dir", str(cli_cache)]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == digest
    assert main(["info", hub_id, "--config", "--cache-dir", str(cli_cache)]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == digest
    assert main(["info", hub_id, "--json"]) == 1
    data = tmp_path / "faces.npz"
    rng = np.random.default_rng(1)
    np.savez(data, images=rng.integers(0, 256, (14, 48, 48), dtype=np.uint8), labels=np.arange(14) % 7)
    capsys.readouterr()
    assert main(["eval", "--model", hub_id, "--data", str(data), "--resolutions", "16", "--cache-dir", str(cli_cache)]) == 0
    assert NAME in capsys.readouterr().out  # its row of the accuracy table
    assert main(["eval", "--model", hub_id, "--data", str(data), "--resolutions", "16"]) == 1
    assert hub.requests == []


def test_an_empty_cache_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """huggingface_hub reads an empty cache_dir as the working folder; the not-cached message then named
    its default cache instead (an unset variable in ``--cache-dir "$DIR"``, most likely)."""
    from lrfer.cli import main

    for empty in ("", " "):
        with pytest.raises(ValueError, match="cache_dir is empty"):
            zoo.download(f"hf://{REPO_ID}@{COMMIT}", cache_dir=empty)
        with pytest.raises(SystemExit):
            main(["download", f"hf://{REPO_ID}@{COMMIT}", "--cache-dir", empty])
        assert "argument --cache-dir: an empty folder name" in capsys.readouterr().err


def test_cli_download_errors(hub: FakeHub, caplog: pytest.LogCaptureFixture,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer download`` of a name with no weights, or a typo, exits 1 with the zoo's message."""
    from lrfer.cli import main

    assert main(["download", "gmenet-raf-16px"]) == 1
    assert "gmenet-fer2013-16px" in caplog.text and "lrfer train" in caplog.text
    caplog.clear()
    assert main(["download", "gmenet-fer2013-16p"]) == 1
    assert "did you mean 'gmenet-fer2013-16px'" in caplog.text
    assert capsys.readouterr().out == "" and hub.requests == []


def test_cli_download_of_several_hub_ids_goes_on_after_a_failure(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer download a b`` stopped at the first Hub id that failed (a missing repo, a dropped
    connection): the ids after it were never fetched. Each failure is now told with its id, the rest
    fetched and verified, and the exit status is 1."""
    from lrfer.cli import main

    data, digest, _ = weights
    publish(hub, data, digest)
    gone, good = f"hf://lrfer-test/gone@{COMMIT}", f"hf://{REPO_ID}@{COMMIT}"
    assert main(["download", gone, good]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and Path(printed[0]).is_file()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "lrfer-test/gone" in errors[0]
    assert errors[1] == "1 of 2 model(s) could not be downloaded (see the errors above)"
    caplog.clear()
    hub.cut_short.add(WEIGHTS)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub's back-off between retries
    assert main(["download", good, "gmenet-fer2013-16px", "--cache-dir", str(tmp_path / "fresh")]) == 1
    assert capsys.readouterr().out.strip().endswith("gmenet-fer2013-16px.safetensors")  # bundled: verified
    assert REPO_ID in caplog.text and "run the command again" in caplog.text


def test_hub_id_with_a_doubled_slash_after_timm_prefix(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    data, digest, _ = weights
    publish(hub, data, digest)
    assert zoo.resolve(f"hf-hub://{REPO_ID}@{COMMIT}") == zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert zoo.resolve(f"hf_hub:{REPO_ID}@{COMMIT}") == zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")  # timm reads it too


def test_download_cut_off_is_a_clear_error(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                           monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A connection that drops mid-file raises the HTTP client's own error (not an OSError): it becomes a
    HubDownloadError (a ConnectionError), which the CLI reports in one line."""
    from lrfer.cli import main

    data, digest, original = weights
    publish(hub, data, digest)
    hub.cut_short.add(WEIGHTS)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub's back-off between retries
    with pytest.raises(zoo.HubDownloadError, match=f"downloading {WEIGHTS} of hf://{REPO_ID}.*again"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert main(["download", f"hf://{REPO_ID}@{COMMIT}"]) == 1
    assert "run the command again" in caplog.text
    hub.cut_short.clear()
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)


def test_config_with_a_wrong_sha_is_dropped_from_the_cache(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                           tmp_path: Path) -> None:
    """The weights do not match the sha256 of the cached lrfer_config.json: both go, so a fixed config
    is fetched on the next run (before, the bad config stayed and every run deleted good weights)."""
    data, digest, original = weights
    publish(hub, data, "f" * 64)
    with pytest.raises(zoo.ChecksumError, match="f" * 64):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert not list((tmp_path / "cache").rglob(f"snapshots/*/{zoo.CONFIG_FILENAME}"))
    publish(hub, data, digest)
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)


def test_hub_file_that_is_not_safetensors_is_refused(hub: FakeHub) -> None:
    """The config's sha256 matches, but the file is no safetensors (e.g. a pickle renamed): refused at
    download, before anything reads it as weights."""
    from lrfer.cli import main

    blob = b"\x80\x04\x95" + bytes(200)  # the start of a pickle
    publish(hub, blob, hashlib.sha256(blob).hexdigest())
    with pytest.raises(zoo.ChecksumError, match="not a readable safetensors file"):
        zoo.download(f"hf://{REPO_ID}@{COMMIT}")
    assert main(["info", f"hf://{REPO_ID}@{COMMIT}"]) == 1


def test_bad_cached_file_that_cannot_be_deleted_says_so(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                        hub_manifest: Callable[[str], None],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    blob = zoo.download(NAME).resolve()
    blob.chmod(0o644)
    blob.write_bytes(data[:-1] + b"?")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(zoo.ChecksumError, match="could not be deleted .*by hand"):
        zoo.load_model(NAME)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), TypeError("a bug")])
def test_local_errors_during_a_download_are_not_called_connection_errors(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    import huggingface_hub

    def fails(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fails)
    with pytest.raises(type(error)) as raised:
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert not isinstance(raised.value, zoo.HubDownloadError)


def test_cached_config_this_lrfer_refuses_is_kept(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                  tmp_path: Path) -> None:
    """A config that parses but has a key this lrfer does not know (written for a newer one) stays cached, and the
    error says an upgrade reads it (it said only to fix the spelling, of a repo the user may not own)."""
    import lrfer

    data, digest, _ = weights
    hub.files[REPO_ID] = {WEIGHTS: data, zoo.CONFIG_FILENAME: json.dumps(entry(sha256=digest, novel=1)).encode()}
    upgrade = f"newer lrfer.*this is lrfer {re.escape(lrfer.__version__)}, `pip install -U lrfer`"
    with pytest.raises(zoo.ManifestError, match=f"novel.*{upgrade}"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert list((tmp_path / "cache").rglob(f"snapshots/*/{zoo.CONFIG_FILENAME}"))


# ------------------------------------------------------------------ answers of the real Hub (the strict FakeHub)
def test_missing_repo_revision_file_and_gated_repo_are_the_hubs_own_errors(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """What huggingface.co answers an anonymous client (401 RepoNotFound, 404 RevisionNotFound / EntryNotFound,
    401 GatedRepo) reaches the caller as huggingface_hub's own error, which names the URL and what to do."""
    from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    data, digest, _ = weights
    publish(hub, data, digest)
    with pytest.raises(RepositoryNotFoundError, match="authenticated"):
        zoo.resolve(f"hf://lrfer-test/private-or-missing@{COMMIT}")
    with pytest.raises(RevisionNotFoundError):
        zoo.resolve(f"hf://{REPO_ID}@{'b' * 40}")
    with pytest.raises(RevisionNotFoundError):
        zoo.resolve(f"hf://{REPO_ID}@v9")
    hub.files["lrfer-test/timm-model"] = {"model.safetensors": data}
    with pytest.raises(EntryNotFoundError, match=zoo.CONFIG_FILENAME):
        zoo.resolve(f"hf://lrfer-test/timm-model@{COMMIT}")
    hub.refuse = (401, {"X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to model {REPO_ID} is restricted."
                        " You must have access to it and be authenticated to access it. Please log in."})
    with pytest.raises(GatedRepoError):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")


@pytest.mark.parametrize("status, headers, named", [
    (429, {"Retry-After": "1", "X-Error-Message": "You have been rate-limited"}, "429"),
    (503, {}, "503"),
    (403, {"X-Error-Message": "Access to this resource is disabled."}, "403"),
    (200, {}, "HF_ENDPOINT"),  # a proxy or a mirror that is no Hub: no X-Repo-Commit
])
def test_a_hub_that_answers_but_refuses_is_not_called_unreachable(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch, status: int, headers: dict[str, str], named: str) -> None:
    """huggingface_hub turns these answers into LocalEntryNotFoundError (chaining the answer): lrfer's
    message names the answer, not 'could not be reached ... connect this machine'."""
    publish_in_manifest(hub, weights, hub_manifest)
    hub.refuse = (status, headers)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub's back-off on 429 and 5xx
    with pytest.raises(zoo.NotCachedError) as err:
        zoo.load_model(NAME)
    message = str(err.value)
    assert named in message, message
    assert "could not be reached" not in message and "connect this machine" not in message, message


def test_download_error_does_not_promise_a_resume(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub 0.20.3 (resume_download=False) and 2.x (a per-process temporary file, deleted on failure)
    keep no partial download: the next run starts at byte 0."""
    data, digest, _ = weights
    publish(hub, data, digest)
    hub.cut_short.add(WEIGHTS)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    with pytest.raises(zoo.HubDownloadError) as err:
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    assert "again" in str(err.value) and "resume" not in str(err.value)
    hub.headers.clear()
    hub.requests.clear()
    with pytest.raises(zoo.HubDownloadError):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")
    first_cdn_get = next(h for (method, path), h in zip(hub.requests, hub.headers) if path.startswith("/cdn/"))
    assert "Range" not in first_cdn_get, "this huggingface_hub resumes: the message may say so again"


def test_xet_transfer_failure_is_a_download_error(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A Xet-backed file (every new upload to huggingface.co) is fetched by hf_xet when huggingface_hub has it;
    hf_xet reports a failed transfer as a bare RuntimeError, which must become a HubDownloadError like the
    same failure over plain HTTP. Without hf_xet the client takes the CDN redirect and the load works."""
    import socket

    from huggingface_hub import file_download

    data, digest, original = weights
    publish(hub, data, digest)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        hub.xet_cas = f"http://127.0.0.1:{probe.getsockname()[1]}"  # the CAS cannot be reached
    monkeypatch.setenv("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "1")  # hf_xet's own back-off: 217 s by default
    monkeypatch.setenv("HF_XET_CLIENT_RETRY_MAX_DURATION", "1")
    monkeypatch.setenv("HF_XET_CACHE", str(Path(zoo._cache_dir(None) or ".") / "xet"))
    is_xet_available = getattr(file_download, "is_xet_available", lambda: False)
    if not is_xet_available():  # huggingface_hub < 0.32, or no hf_xet
        check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)
        return
    with pytest.raises(zoo.HubDownloadError, match=f"downloading {WEIGHTS} of hf://{REPO_ID}"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}")


def test_bad_xet_blob_in_the_shared_store_is_removed_and_fetched_again(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub 2.x keeps a Xet file in a cache-wide store (snapshot -> blobs/<etag> -> ../../blobs/xx/<hash>):
    a corrupted one is deleted through both links and the next load fetches it again. (The transfer itself is
    replaced: nothing here speaks the CAS protocol.)"""
    from huggingface_hub import file_download

    data, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    hub.xet_cas = "http://127.0.0.1:9"
    fetched: list[str] = []

    def xet_get(*, incomplete_path: Path, xet_file_data: Any, **kwargs: Any) -> None:
        fetched.append(xet_file_data.file_hash)
        Path(incomplete_path).write_bytes(data)

    monkeypatch.setattr(file_download, "xet_get", xet_get, raising=False)
    monkeypatch.setattr(file_download, "refresh_xet_connection_info", lambda **kwargs: None, raising=False)
    blob = zoo.download(NAME).resolve()
    blob.chmod(0o644)
    blob.write_bytes(data[:-1] + b"?")
    with pytest.raises(zoo.ChecksumError, match="deleted"):
        zoo.load_model(NAME)
    assert not blob.exists()
    check_model(zoo.load_model(NAME), original)
    xet = getattr(file_download, "is_xet_available", lambda: False)()
    assert fetched == ([digest, digest] if xet else [])  # no hf_xet (or huggingface_hub < 0.32): the CDN both times


@pytest.mark.parametrize("message, transfer", [
    ("Task error: File reconstruction error: IO Error: No space left on device (os error 28)", False),
    ("Task error: File reconstruction error: IO Error: No such file or directory (os error 2)", False),
    ("Task error: File reconstruction error: CAS Client Error: Request middleware error: error sending request "
     "for url (http://127.0.0.1:9/v2/reconstructions/aa)", True),
])
def test_a_local_file_error_inside_xet_get_is_no_download_error(message: str, transfer: bool) -> None:
    """hf_xet raises a full disk as the same bare RuntimeError as a failed transfer: 'check the connection
    and run it again' would not help, so it stays as it is (like a full disk over plain HTTP)."""
    namespace: dict[str, Any] = {"__name__": "huggingface_hub.file_download"}
    exec("def xet_get(message):\n    raise RuntimeError(message)\n", namespace)  # noqa: S102
    with pytest.raises(RuntimeError) as err:
        namespace["xet_get"](message)
    assert zoo._raised_by_xet_transfer(err.value) is transfer


def test_offline_error_names_the_cache_that_was_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a chosen cache folder the remedy was `lrfer download hf://...` (which fetches into another
    cache) and "point $LRFER_CACHE at the copy"; without one, the folder was named only as HF_HUB_CACHE,
    whatever HF_HOME or HF_HUB_CACHE had made it."""
    go_offline(monkeypatch)
    monkeypatch.delenv("LRFER_CACHE", raising=False)
    chosen = tmp_path / "my cache"
    with pytest.raises(zoo.NotCachedError) as err:
        zoo.download(f"hf://{REPO_ID}@{COMMIT}", cache_dir=chosen)
    message = str(err.value)
    assert f"lrfer download hf://{REPO_ID}@{COMMIT} --cache-dir '{chosen}'" in message
    assert f"copy that folder to {chosen}" in message and "LRFER_CACHE" not in message
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    with pytest.raises(zoo.NotCachedError) as err:
        zoo.download(f"hf://{REPO_ID}@{COMMIT}")
    assert f"the huggingface_hub cache ({tmp_path / 'hf-home' / 'hub'})" in str(err.value)


def test_a_failed_lookup_of_the_hubs_name_is_asked_once_per_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load asks for the config, then the weights: each asked the resolver again, and a resolver
    without network can take seconds to say no. A failure is now believed for a while; a success never."""
    import socket

    point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    monkeypatch.setattr(zoo, "_unresolved_until", {})
    failing_lookup = socket.getaddrinfo
    lookups: list[str] = []

    def counted(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return failing_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counted)
    now = [1000.0]
    monkeypatch.setattr(zoo.time, "monotonic", lambda: now[0])
    assert zoo._unresolved_hub_host() == "hub.invalid"
    assert zoo._unresolved_hub_host() == "hub.invalid"
    assert lookups == ["hub.invalid"]
    now[0] += zoo.UNRESOLVED_HOST_MEMORY_S + 1
    assert zoo._unresolved_hub_host() == "hub.invalid"
    assert lookups == ["hub.invalid"] * 2


def test_a_failed_lookup_of_the_hubs_name_is_believed_for_the_whole_memory_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins down how long a failed lookup is believed: UNRESOLVED_HOST_MEMORY_S from the failure, to its
    last fraction of a second (not a second less), and once past it the name is asked again."""
    import socket

    point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    monkeypatch.setattr(zoo, "_unresolved_until", {})
    failing_lookup = socket.getaddrinfo
    lookups: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: lookups.append(host) or failing_lookup(host, *a, **k))
    now = [1000.0]
    monkeypatch.setattr(zoo.time, "monotonic", lambda: now[0])
    assert zoo._unresolved_hub_host() == "hub.invalid" and len(lookups) == 1
    now[0] += zoo.UNRESOLVED_HOST_MEMORY_S - 0.25
    assert zoo._unresolved_hub_host() == "hub.invalid" and len(lookups) == 1
    now[0] += 0.5  # past it
    assert zoo._unresolved_hub_host() == "hub.invalid" and len(lookups) == 2


def test_a_resolved_hub_name_is_looked_up_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network may go away: a success is not remembered, and it forgets an earlier failure."""
    import socket

    monkeypatch.setattr(zoo, "_unresolved_until", {"hub.example": math.inf})
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://hub.example")
    for proxy in zoo.PROXY_VARIABLES:
        monkeypatch.delenv(proxy, raising=False)
    assert zoo._unresolved_hub_host() == "hub.example"
    expired = {"hub.example": zoo.time.monotonic() - 1}
    monkeypatch.setattr(zoo, "_unresolved_until", expired)
    lookups: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: lookups.append(host) or [])
    assert zoo._unresolved_hub_host() is None and zoo._unresolved_hub_host() is None
    assert lookups == ["hub.example", "hub.example"] and expired == {}


def authorizations(hub: FakeHub) -> list[tuple[str, str | None]]:
    """(path, Authorization header or None) of every request the fake Hub and its CDN were sent."""
    return [(path, {k.lower(): v for k, v in headers.items()}.get("authorization"))
            for (_, path), headers in zip(hub.requests, hub.headers)]


@pytest.fixture
def developers_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer logged in to the real Hub: HF_TOKEN set and a token file where huggingface_hub looks."""
    monkeypatch.setenv("HF_TOKEN", "hf_developers_own")
    token_file = tmp_path / "real_home" / "token"
    token_file.parent.mkdir()
    token_file.write_text("hf_developers_file")
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(token_file), raising=False)


def test_the_fake_hub_is_sent_no_token_of_the_developers(developers_token: None, hub: FakeHub,
                                                         weights: tuple[bytes, str, torch.nn.Module]) -> None:
    """The fixture said "token lookups stay in tmp" by setting HF_HOME, which huggingface_hub reads only at
    import: a developer's HF_TOKEN or saved token was sent to the test server with every request."""
    data, digest, original = weights
    publish(hub, data, digest)
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)
    assert hub.requests and all(sent is None for _, sent in authorizations(hub)), authorizations(hub)


def test_a_private_repo_loads_with_hf_token(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A private (or gated) repo, with no token= given: huggingface_hub sends HF_TOKEN (or the
    token `hf auth login` saved) to the Hub, and not to the CDN it redirects to. Without it the Hub's own
    error says to authenticate."""
    from huggingface_hub.utils import RepositoryNotFoundError

    data, digest, original = weights
    publish(hub, data, digest)
    hub.private[REPO_ID] = "hf_reader"
    with pytest.raises(RepositoryNotFoundError, match="authenticated"):
        zoo.load_model(f"hf://{REPO_ID}@{COMMIT}")
    hub.requests.clear()
    hub.headers.clear()
    monkeypatch.setenv("HF_TOKEN", "hf_reader")
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)
    sent = authorizations(hub)
    assert {token for path, token in sent if not path.startswith("/cdn/")} == {"Bearer hf_reader"}, sent
    assert {token for path, token in sent if path.startswith("/cdn/")} == {None}, sent


# ------------------------------------------------------------- revision=, token=, local_files_only= keywords
COMMIT_V2 = "b" * 40


@pytest.fixture
def second_revision(hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module],
                    tmp_path: Path) -> tuple[str, torch.nn.Module]:
    """The tiny model on ``main`` (COMMIT) and other weights at COMMIT_V2, tagged ``v2``: (their sha256, model)."""
    data, digest, _ = weights
    publish(hub, data, digest)
    torch.manual_seed(1)
    model = build_model("baseline", width=8, input_size=16).eval()
    path = tmp_path / "made-v2" / WEIGHTS
    digest_v2 = zoo.save_weights(model.state_dict(), path, entry())
    hub.files_at[(REPO_ID, COMMIT_V2)] = {WEIGHTS: path.read_bytes(),
                                          zoo.CONFIG_FILENAME: json.dumps(entry(sha256=digest_v2)).encode()}
    hub.revisions.update({"v2": COMMIT_V2, COMMIT_V2: COMMIT_V2})
    return digest_v2, model


def test_the_revision_keyword_fetches_that_revisions_weights(hub: FakeHub, second_revision: tuple[str, torch.nn.Module],
                                                             tmp_path: Path) -> None:
    """lrfer took a revision only inside the id (``hf://org/repo@rev``); ``revision=`` (huggingface_hub's
    keyword) was a TypeError. It now fetches that revision, in resolve, download, load_model and lrfer.load."""
    import lrfer

    digest_v2, model_v2 = second_revision
    spec, path = zoo.resolve(f"hf://{REPO_ID}", revision="v2")
    assert spec.sha256 == digest_v2 and spec.source["revision"] == COMMIT_V2 and path.parent.name == COMMIT_V2
    assert ("GET", f"/{REPO_ID}/resolve/v2/{zoo.CONFIG_FILENAME}") in hub.requests
    assert zoo.download(f"hf-hub:{REPO_ID}", revision="v2") == path
    assert zoo.resolve(f"hf://{REPO_ID}@v2", revision="v2") == (spec, path)  # the same revision twice is fine
    assert zoo.resolve(f"hf://{REPO_ID}@{COMMIT_V2}", revision=COMMIT_V2.upper())[1] == path  # a commit in any case
    check_model(zoo.load_model(f"hf://{REPO_ID}", revision=COMMIT_V2), model_v2)
    rec = lrfer.load(f"hf://{REPO_ID}", device="cpu", detector=None, revision="v2")
    assert rec.spec.sha256 == digest_v2
    assert zoo.resolve(f"hf://{REPO_ID}")[0].source["revision"] == COMMIT  # without it: main, as before


def test_a_revision_keyword_that_contradicts_the_ids_is_refused_naming_both(hub: FakeHub) -> None:
    """Which one wins would be a guess: the error names both, before anything is fetched."""
    with pytest.raises(ValueError, match=f"names the revision '{COMMIT}' and revision='v2' another"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}", revision="v2")
    with pytest.raises(ValueError, match="names the revision 'main' and revision='v2'"):
        zoo.load_model(f"hf://{REPO_ID}@main", revision="v2")
    assert hub.requests == []


def test_a_revision_keyword_is_held_to_the_revision_rules(hub: FakeHub) -> None:
    """``revision="../../x"`` names a place outside the Hub cache, as ``@../../x`` does; a non-str is a TypeError."""
    with pytest.raises(ValueError, match="'../../x' is not a revision"):
        zoo.resolve(f"hf://{REPO_ID}", revision="../../x")
    with pytest.raises(ValueError, match="'' is not a revision"):
        zoo.download(f"hf://{REPO_ID}", revision="")
    with pytest.raises(TypeError, match="revision must be a str"):
        zoo.resolve(f"hf://{REPO_ID}", revision=2)  # type: ignore[arg-type]
    assert hub.requests == []


def test_a_revision_keyword_other_than_a_manifest_entrys_pin_is_refused(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None]) -> None:
    """A manifest entry pins its Hub weights to a commit and their sha256: another revision could only fail the
    hash check after a download, so it is refused at once, pointing to ``hf://org/repo@rev``; the pin is fine."""
    _, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    with pytest.raises(ValueError, match=f"pins its weights to {REPO_ID}@{COMMIT} .*load another revision of that repo "
                                         f"as 'hf://{REPO_ID}@v2'"):
        zoo.load_model(NAME, revision="v2")
    with pytest.raises(ValueError, match="pins its weights"):
        zoo.resolve(zoo.get_spec(NAME), revision="main")  # a ModelSpec pins the same
    assert hub.requests == []
    check_model(zoo.load_model(NAME, revision=COMMIT.upper()), original)
    assert zoo.download(NAME, revision=COMMIT) == zoo.download(NAME)


def test_a_revision_keyword_for_bundled_or_local_weights_is_refused(weights: tuple[bytes, str, torch.nn.Module],
                                                                   tmp_path: Path) -> None:
    """Bundled and local weights have no revisions: the keyword was ignored silently, the weights loaded were
    not the revision asked for."""
    with pytest.raises(ValueError, match="applies only to Hub weights, and the manifest's 'gmenet-fer2013-16px' has "
                                         "bundled weights"):
        zoo.resolve("gmenet-fer2013-16px", revision=COMMIT)
    local = tmp_path / "made" / WEIGHTS
    with pytest.raises(ValueError, match="applies only to Hub weights, and .* is a local file"):
        zoo.download(local, revision="main")
    with pytest.raises(ValueError, match="applies only to Hub weights, and .* is a local folder"):
        zoo.load_model(local.parent, revision="main")
    assert zoo.download(local) == local  # without it, as before


def test_the_token_keyword_reaches_the_hub_as_an_authorization_header(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A token was taken only from HF_TOKEN or the login; ``token=`` now goes to hf_hub_download (to the Hub,
    not the CDN), ahead of HF_TOKEN; ``token=False`` sends none; a wrong one is named in no error or log."""
    from huggingface_hub.utils import RepositoryNotFoundError

    data, digest, original = weights
    publish(hub, data, digest)
    hub.private[REPO_ID] = "hf_reader"
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}", token="hf_reader"), original)
    sent = authorizations(hub)
    assert {token for path, token in sent if not path.startswith("/cdn/")} == {"Bearer hf_reader"}, sent
    assert {token for path, token in sent if path.startswith("/cdn/")} == {None}, sent
    hub.requests.clear()
    hub.headers.clear()
    with caplog.at_level("DEBUG"), pytest.raises(RepositoryNotFoundError) as err:
        zoo.download(f"hf://{REPO_ID}@main", token="hf_wrong_secret")
    assert "hf_wrong_secret" not in str(err.value) and "hf_wrong_secret" not in caplog.text
    assert {token for _, token in authorizations(hub)} == {"Bearer hf_wrong_secret"}
    hub.requests.clear()
    hub.headers.clear()
    with pytest.raises(RepositoryNotFoundError):
        zoo.resolve(f"hf://{REPO_ID}@main", token=False)
    assert {token for _, token in authorizations(hub)} == {None}, "token=False: not even HF_TOKEN is sent"


@pytest.mark.parametrize("token, error, message", [
    (123456, TypeError, "token must be a str, True, False or None"),
    (" ", ValueError, "token is empty"),
    ("hf_secret\n", ValueError, "token holds a newline at position 9 of 10, which an HTTP header cannot carry"),
    ("hf_se cret", ValueError, "token holds a space at position 5"),
    ("hf_s\u00e9cret", ValueError, "token holds a character that is not printable ASCII at position 4"),
])
def test_a_token_keyword_that_cannot_be_sent_is_refused_without_showing_it(token: Any, error: type[Exception],
                                                                          message: str, hub: FakeHub) -> None:
    """A token read from a file with its newline went into the request: httpx's "Illegal header value
    b'Bearer hf_...\\n'" quoted the token in lrfer's error, which called it a broken connection."""
    with pytest.raises(error, match=message) as err:
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}", token=token)
    assert "123456" not in str(err.value) and "cret" not in str(err.value) and hub.requests == []


def test_local_files_only_uses_the_cache_alone_and_names_itself_when_it_misses(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None]) -> None:
    """Only HF_HUB_OFFLINE=1 kept lrfer off the network; ``local_files_only=True`` (huggingface_hub's keyword)
    does it for one call, and the not-cached error says that it is why (not HF_HUB_OFFLINE, which is unset)."""
    _, _, original = publish_in_manifest(hub, weights, hub_manifest)
    with pytest.raises(zoo.NotCachedError, match=f"local_files_only=True was given. Run `lrfer download hf://{REPO_ID}@v1 "
                                             ".*, or leave out local_files_only=True to fetch it") as err:
        zoo.resolve(f"hf://{REPO_ID}", revision="v1", local_files_only=True)
    assert "HF_HUB_OFFLINE" not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(zoo.NotCachedError, match=f"{WEIGHTS} of {NAME} .*local_files_only=True was given"):
        zoo.load_model(NAME, local_files_only=True)
    assert hub.requests == [], "local_files_only must not touch the network"
    path = zoo.download(f"hf://{REPO_ID}")  # main, fetched
    hub.requests.clear()
    assert zoo.download(f"hf://{REPO_ID}", local_files_only=True) == path  # main, from the cache's refs/main
    check_model(zoo.load_model(NAME, local_files_only=True), original)
    assert hub.requests == []
    with pytest.raises(TypeError, match="local_files_only must be True or False"):
        zoo.resolve(NAME, local_files_only="yes")  # type: ignore[arg-type]


def test_local_files_only_and_hf_hub_offline_are_both_named(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    go_offline(monkeypatch)
    with pytest.raises(zoo.NotCachedError, match="local_files_only=True was given \\(and HF_HUB_OFFLINE=1 is set\\)"):
        zoo.resolve(f"hf://{REPO_ID}@{COMMIT}", local_files_only=True)


def test_info_and_config_entry_take_the_hub_keywords(hub: FakeHub, second_revision: tuple[str, torch.nn.Module]) -> None:
    """``lrfer.info`` and ``config_entry`` fetch a Hub id's config and weights too, but took none of the keywords
    that load and download took (a TypeError): another revision, a token of its own or the cache alone could
    not be asked for."""
    import lrfer

    digest_v2, _ = second_revision
    hub.private[REPO_ID] = "hf_reader"
    summary = lrfer.info(f"hf://{REPO_ID}", revision="v2", token="hf_reader")
    assert summary["sha256"] == digest_v2 and summary["source"]["revision"] == COMMIT_V2
    assert {token for path, token in authorizations(hub) if not path.startswith("/cdn/")} == {"Bearer hf_reader"}
    hub.requests.clear()
    assert zoo.config_entry(f"hf://{REPO_ID}", revision="v2", local_files_only=True)["sha256"] == digest_v2
    assert hub.requests == [], "local_files_only must not touch the network"
    with pytest.raises(zoo.NotCachedError, match="local_files_only=True was given"):
        zoo.info(f"hf://{REPO_ID}@main", local_files_only=True)  # main was never fetched
    with pytest.raises(ValueError, match=f"names the revision '{COMMIT}' and revision='v2' another"):
        zoo.config_entry(f"hf://{REPO_ID}@{COMMIT}", revision="v2", token="hf_reader")
    assert hub.requests == []


def test_info_and_config_entry_of_a_manifest_name_or_spec_hold_the_keywords_to_its_pin(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None]) -> None:
    """info of a manifest name (and config_entry of a ModelSpec) fetches nothing: a keyword there must still be
    checked as load checks it, not ignored (the summary of the pinned weights shown for another revision)."""
    publish_in_manifest(hub, weights, hub_manifest)
    with pytest.raises(ValueError, match=f"the manifest's '{NAME}' pins its weights to {REPO_ID}@{COMMIT}"):
        zoo.info(NAME, revision="v2")
    with pytest.raises(ValueError, match=f"the ModelSpec '{NAME}' pins its weights"):
        zoo.config_entry(zoo.get_spec(NAME), revision="main")
    with pytest.raises(TypeError, match="token must be a str"):
        zoo.info(NAME, token=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="local_files_only must be True or False"):
        zoo.config_entry(zoo.get_spec(NAME), local_files_only="yes")  # type: ignore[arg-type]
    assert zoo.info(f" {NAME.upper()} ", revision=COMMIT.upper(), token="hf_any", local_files_only=True)["name"] == NAME
    assert zoo.config_entry(zoo.get_spec(NAME), revision=COMMIT)["name"] == NAME
    assert hub.requests == []


def test_info_and_config_entry_of_bundled_or_local_weights_refuse_a_revision_keyword(
        weights: tuple[bytes, str, torch.nn.Module], tmp_path: Path) -> None:
    """As load does: bundled and local weights have no revisions, and the summary is of the weights there."""
    with pytest.raises(ValueError, match="applies only to Hub weights, and the manifest's 'gmenet-fer2013-16px' has "
                                         "bundled weights"):
        zoo.info("gmenet-fer2013-16px", revision=COMMIT)
    with pytest.raises(ValueError, match="applies only to Hub weights, and the ModelSpec 'gmenet-fer2013-16px' has "
                                         "bundled weights"):
        zoo.config_entry(zoo.get_spec("gmenet-fer2013-16px"), revision=COMMIT)
    local = tmp_path / "made" / WEIGHTS  # written by the weights fixture
    with pytest.raises(ValueError, match="applies only to Hub weights, and .* is a local file"):
        zoo.info(local, revision="main")
    with pytest.raises(ValueError, match="applies only to Hub weights, and .* is a local folder"):
        zoo.config_entry(local.parent, revision="main")
    assert zoo.config_entry(local)["name"] == NAME  # without it, as before


@pytest.mark.parametrize("status, headers", [
    (403, {"X-Error-Message": "Access to this resource is disabled."}),
    (429, {"Retry-After": "1", "X-Error-Message": "You have been rate-limited"}),
])
def test_lrfers_advice_on_a_refusal_names_the_token_keyword(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch,
        status: int, headers: dict[str, str]) -> None:
    """A 403 (or 429) reaches the caller as lrfer's NotCachedError, whose advice named only HF_TOKEN and `hf auth
    login`: a Python caller was not told that load, download and info take ``token=``. (401, RepositoryNotFoundError
    and GatedRepoError stay huggingface_hub's own errors, with its own advice.)"""
    data, digest, _ = weights
    publish(hub, data, digest)
    hub.refuse = (status, headers)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub's back-off on 429
    with pytest.raises(zoo.NotCachedError, match=f"HTTP {status}.*HF_TOKEN, `hf auth login` .* or, in Python, "
                                                 "the token= keyword"):
        zoo.download(f"hf://{REPO_ID}@{COMMIT}")


def test_download_of_a_hub_manifest_name_caches_its_repos_config_for_the_hf_spelling(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`lrfer download NAME` of a manifest entry on the Hub cached its weights alone: offline, the same repo by the
    spelling the errors and `lrfer info` give, ``hf://org/repo@<commit>``, raised NotCachedError for its
    lrfer_config.json. A second download asks the Hub nothing."""
    from lrfer.cli import main

    _, digest, original = publish_in_manifest(hub, weights, hub_manifest)
    assert main(["download", NAME]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert zoo.sha256_file(printed) == digest
    assert ("GET", f"/{REPO_ID}/resolve/{COMMIT}/{zoo.CONFIG_FILENAME}") in hub.requests
    hub.requests.clear()
    assert zoo.download(NAME) == printed and zoo.download(f"hf://{REPO_ID}@{COMMIT}") == printed
    assert hub.requests == [], "a second download must not ask the Hub again"

    go_offline(monkeypatch)
    hub.files.clear()
    check_model(zoo.load_model(f"hf://{REPO_ID}@{COMMIT}"), original)
    assert main(["info", f"hf-hub:{REPO_ID}@{COMMIT}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == digest
    assert hub.requests == []


def test_download_of_a_hub_manifest_name_whose_repo_has_no_config_is_no_error(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest entry is its own config: a repo holding the weights alone downloads as before, and the Hub's
    "no such file", remembered in the cache, is not asked again by a second download."""
    data, digest, original = weights
    hub.files[REPO_ID] = {WEIGHTS: data}
    hub_manifest(digest)
    path = zoo.download(NAME)
    assert zoo.sha256_file(path) == digest
    hub.requests.clear()
    assert zoo.download(NAME) == path and hub.requests == []
    go_offline(monkeypatch)
    check_model(zoo.load_model(NAME), original)
    assert zoo.download(NAME) == path and hub.requests == []


def test_config_entry_of_a_hub_manifest_name_fetches_nothing(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The entry is the manifest's: config_entry (`lrfer info NAME --config`) downloaded the weights for it, and
    offline without them raised NotCachedError, where `lrfer info NAME` fetched nothing."""
    from lrfer.cli import main

    _, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    expected = {k: v for k, v in entry(sha256=digest).items() if k != "source"}
    assert zoo.config_entry(NAME) == expected
    assert zoo.config_entry(f" {NAME.upper()} ", revision=COMMIT, local_files_only=True) == expected
    assert hub.requests == []
    go_offline(monkeypatch)
    assert main(["info", NAME, "--config"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    with pytest.raises(ValueError, match="pins its weights"):
        zoo.config_entry(NAME, revision="v2")
    assert hub.requests == []


def test_download_of_cached_hub_weights_whose_config_cannot_be_fetched_warns_and_succeeds(
        hub: FakeHub, weights: tuple[bytes, str, torch.nn.Module], hub_manifest: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """Weights cached by a load (which fetches no config) and a Hub out of reach: `lrfer download NAME` verifies
    them and exits 0 as before; the config it could not add is a warning naming the spelling that needs it."""
    from lrfer.cli import main

    _, digest, _ = publish_in_manifest(hub, weights, hub_manifest)
    path = zoo.resolve(NAME)[1]
    point_hub_at_a_name_that_does_not_resolve(monkeypatch)
    with caplog.at_level("WARNING", logger="lrfer.zoo"):
        assert main(["download", NAME]) == 0
    assert Path(capsys.readouterr().out.strip()) == path.absolute()
    assert f"{zoo.CONFIG_FILENAME} is not, so hf://{REPO_ID}@{COMMIT} still needs the network" in caplog.text


def test_cli_download_of_a_bundled_name_says_it_is_bundled_and_asks_the_hub_nothing(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    """`lrfer download gmenet-fer2013-16px` printed a path inside the package and nothing else, which left open
    whether anything was fetched or cached for offline use; stdout stays that path alone (for scripts)."""
    from lrfer.cli import main

    assert main(["download", "gmenet-fer2013-16px"]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == zoo.WEIGHTS_DIR / "gmenet-fer2013-16px.safetensors"
    assert "gmenet-fer2013-16px is bundled with lrfer: its file was verified, nothing was downloaded" in err
    assert hub.requests == []
