"""lrfer ships ``py.typed``: its annotations are what its users' type checkers read. mypy with the
repository's settings (pyproject.toml's ``[tool.mypy]``, what a plain ``mypy`` runs) finds no error in them."""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: The first safetensors whose stubs (``__init__.pyi``) type-check lrfer's use of it: before 0.5.1 they
#: lack ``SafetensorError`` and ``safe_open.__enter__``, and 0.5.1's ``safe_open.__init__`` has no
#: ``self``. Older releases work at run time (``setup.cfg``: ``safetensors>=0.4``), and the ``test`` extra
#: asks for no newer one, so that it installs with the lower bounds as constraints: the check skips there.
SAFETENSORS_TYPED = Version("0.5.2")


def safetensors_stubs_too_old() -> str | None:
    """Why mypy cannot pass on lrfer with the installed safetensors' stubs, or None when it can."""
    installed = Version(metadata.version("safetensors"))
    if installed < SAFETENSORS_TYPED:
        return (f"safetensors {installed}'s stubs cannot type-check lrfer (run time is fine); "
                f"install safetensors>={SAFETENSORS_TYPED} for this check")
    return None


def test_mypy_finds_no_error_in_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """With safetensors 0.4.0 (setup.cfg's lower bound, installed to test the lower bounds) this failed on
    four errors in safetensors' own stubs ("Module "safetensors" has no attribute "SafetensorError"",
    ""safe_open" has no attribute "__enter__""), not in lrfer: it skips, saying so, below 0.5.2."""
    api = pytest.importorskip("mypy.api", reason="mypy not installed (pip install -e '.[test]')")
    too_old = safetensors_stubs_too_old()
    if too_old is not None:
        pytest.skip(too_old)
    monkeypatch.chdir(ROOT)  # the files to check are the config's
    # No cache (os.devnull: mypy writes none): a run checks the package and the installed stubs as they are now.
    report, errors, status = api.run(["--config-file", "pyproject.toml", "--cache-dir", os.devnull])
    assert status == 0, f"mypy exited with {status}:\n{report}{errors}"


# What a user's type checker reads: README's and the public docstrings' code, as a user writes it,
# checked with ``mypy --strict`` against lrfer as an installed package (py.typed, errors inside lrfer
# silenced). ``# R: T`` -- mypy reveals exactly T on that line (``builtins.`` dropped: mypy 1.x
# writes it, 2.x does not); ``# E: code`` -- mypy reports an error with that code there (what fails
# at run time too); any other error fails the test. <DataFrame> is pandas-stubs' DataFrame where
# those stubs are installed (without them pandas is untyped and every checker reads Any).
USER_CODE = '''\
from pathlib import Path

import numpy as np
import torch

import lrfer
import lrfer.zoo
from lrfer import UnknownModelError, UnknownModelErr  # E: attr-defined
from lrfer.faces import align_faces, make_detector

reveal_type(lrfer.list_models())  # R: list[str]
rec = lrfer.load("gmenet-fer2013-16px", device="cpu", detector="auto", min_face=20)
rec = lrfer.load(Path("mine.safetensors"), precision="bf16")
reveal_type(rec)  # R: lrfer.recognizer.Recognizer
faces = rec.predict("examples/group1.jpg")
reveal_type(faces)  # R: list[lrfer.results.Face]
reveal_type(faces[0].probs["happy"])  # R: float
reveal_type(faces[0].box)  # R: tuple[float, float, float, float]
reveal_type(rec.predict(Path("a.jpg")))  # R: list[lrfer.results.Face]
reveal_type(rec.predict(np.zeros((8, 8, 3), np.uint8)))  # R: list[lrfer.results.Face]
reveal_type(rec.predict(torch.zeros(3, 8, 8, dtype=torch.uint8)))  # R: list[lrfer.results.Face]
reveal_type(rec.predict(["a.jpg", "b.png"]))  # R: list[list[lrfer.results.Face]]
reveal_type(rec.predict(("a.jpg", Path("b.png"))))  # R: list[list[lrfer.results.Face]]
reveal_type(rec.predict(p for p in ["a.jpg", "b.png"]))  # R: list[list[lrfer.results.Face]]
reveal_type(rec.predict(map(Path, ["a.jpg"])))  # R: list[list[lrfer.results.Face]]
reveal_type(rec.classes)  # R: tuple[str, ...]
reveal_type(rec.resolution)  # R: int
reveal_type(rec.spec)  # R: lrfer.zoo.ModelSpec

crops = np.zeros((5, 48, 48), np.uint8)
probs = rec.predict_crops(crops)
probs = rec.predict_crops([crops[0], np.zeros((30, 20, 3), np.uint8)])
probs = rec.predict_crops(torch.from_numpy(crops))  # tests/test_api.py: predict_crops takes tensors
reveal_type(rec.predict_tensor(torch.rand(4, 1, 48, 48)))  # R: torch._tensor.Tensor

# README's "Each stage on its own": a named detector is never None (only make_detector(None) is)
detector = make_detector("auto", device="cpu", min_face=20)
reveal_type(detector)  # R: lrfer.faces.detect.Detector
found = detector.detect([torch.zeros(3, 64, 64, dtype=torch.uint8)])[0]
reveal_type(found)  # R: lrfer.faces.detect.Detections
reveal_type(align_faces([torch.zeros(3, 64, 64, dtype=torch.uint8)], [found]))  # R: torch._tensor.Tensor
reveal_type(make_detector(None))  # R: None

frames = rec.predict_video("classroom.mp4", every=5)  # "a generator of lrfer.VideoFrame"
for frame in frames:
    reveal_type(frame)  # R: lrfer.results.VideoFrame
    reveal_type(frame.faces)  # R: list[lrfer.results.Face]
    break
frames.close()  # stop decoding early
reveal_type(lrfer.faces_to_pandas(faces))  # R: <DataFrame>
reveal_type(faces[0].to_pandas())  # R: <DataFrame>
reveal_type(lrfer.frames_to_pandas(rec.predict_video("classroom.mp4"), "classroom.mp4"))  # R: <DataFrame>
reveal_type(lrfer.download("gmenet-fer2013-16px"))  # R: pathlib.Path
reveal_type(lrfer.get_spec("gmenet-fer2013-16px").license)  # R: typing.Mapping[str, str]

try:
    lrfer.lod("gmenet-fer2013-16px")  # E: attr-defined
except lrfer.UnknownModelError as error:
    reveal_type(error)  # R: lrfer.zoo.UnknownModelError
except (lrfer.ChecksumError, lrfer.zoo.ManifestError) as error:
    reveal_type(error)  # R: lrfer.zoo.ChecksumError | lrfer.zoo.ManifestError
assert UnknownModelError is lrfer.zoo.UnknownModelError

# Path parameters typed in full (a bare os.PathLike is PathLike[Unknown] to pyright --strict).
reveal_type(lrfer.load)  # R~
reveal_type(rec.predict_video)  # R~
reveal_type(lrfer.load_image)  # R~
'''


def _pep604(revealed: str) -> str:
    """``A | B`` for ``Union[A, B]``: mypy writes unions so from 1.17 on, as README's comments do (1.15 and 1.16
    write Union[...])."""
    import re

    # Greedy: the last Union[ first, so its members hold none left to rewrite.
    while last := re.search(r".*(?<![\w.])Union\[", revealed):
        start, begin = last.end() - len("Union["), last.end()
        depth, members, end = 0, [], begin
        for end in range(begin, len(revealed)):
            char = revealed[end]
            if char in "[(":
                depth += 1
            elif char in "])" and depth:
                depth -= 1
            elif char == "]":
                break
            elif char == "," and not depth:
                members.append(revealed[begin:end].strip())
                begin = end + 1
        members.append(revealed[begin:end].strip())
        revealed = revealed[:start] + " | ".join(members) + revealed[end + 1:]
    return revealed


def test_pep604_rewrites_old_mypy_unions() -> None:
    assert _pep604("Union[a.B, a.C]") == "a.B | a.C"
    assert _pep604("list[Union[dict[str, int], tuple[int, Union[str, None]]]]") == (
        "list[dict[str, int] | tuple[int, str | None]]")
    assert _pep604("def (x: Union[int, str]) -> mod.MyUnion[int]") == "def (x: int | str) -> mod.MyUnion[int]"
    assert _pep604("tuple[float, float]") == "tuple[float, float]"


def _pandas_stubs_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("pandas-stubs")
    except metadata.PackageNotFoundError:
        return False
    return True


def test_users_code_type_checks_as_documented(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    dataframe = "pandas.core.frame.DataFrame" if _pandas_stubs_installed() else "Any"
    code = USER_CODE.replace("<DataFrame>", dataframe)
    (tmp_path / "user.py").write_text(code)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # a user's settings, not the repository's
    # lrfer from PYTHONPATH: read as an installed package (an editable install's finder hides it from mypy).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini", "--cache-dir", os.devnull,
         "--show-error-codes", "--no-pretty", "--no-error-summary", "user.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    revealed: dict[int, str] = {}
    errors: dict[int, list[str]] = {}
    for line in run.stdout.splitlines():
        m = re.match(r'user\.py:(\d+): note: Revealed type is "(.*)"$', line)
        if m:
            revealed[int(m[1])] = _pep604(m[2].replace("builtins.", ""))
        m = re.match(r"user\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            errors.setdefault(int(m[1]), []).append(m[2])
    problems = []
    for number, text in enumerate(code.splitlines(), 1):
        want_type = re.search(r"# R: (.*)$", text)
        if want_type and revealed.get(number) != want_type[1]:
            problems.append(f"line {number}: revealed {revealed.get(number)!r}, documented {want_type[1]!r}: {text}")
        if "# R~" in text and "PathLike[Any]" in revealed.get(number, "PathLike[Any]"):
            problems.append(f"line {number}: a bare os.PathLike in {revealed.get(number)!r}: {text}")
        want_error = re.search(r"# E: ([\w-]+)", text)
        got = errors.pop(number, [])
        if want_error and want_error[1] not in got:
            problems.append(f"line {number}: no [{want_error[1]}] error (it fails at run time): {text}")
        elif not want_error and got:
            problems.append(f"line {number}: error {got} in documented usage: {text}")
    assert not problems, "\n".join(problems) + f"\n\nmypy's report:\n{report}"
