"""The ``lrfer`` command line, in-process and as a subprocess, on synthetic images and a tiny model."""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pytest
import torch

from lrfer.cli import build_parser, main, publictest_accuracy
from lrfer.constants import CLASSES
from lrfer.results import row_columns

ROOT = Path(__file__).resolve().parents[1]
IMAGE_NAMES = ["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.bmp"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, rel in enumerate(IMAGE_NAMES):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(p.suffix, rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8))
        assert ok
        buf.tofile(str(p))
    (root / "readme.txt").write_text("not an image, ignored in folders")
    return root


def predict_args(photos: Path, tiny_path: Path, *extra: str) -> list[str]:
    return ["predict", str(photos), "--model", str(tiny_path), "--detector", "none", "--quiet", *extra]


def copies(folder: Path) -> list[Path]:
    """The files in an ``--annotate`` folder but its marker (``.lrfer-annotated``, where lrfer made it)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lrfer-annotated"]


def check_rows(rows: list[dict], photos: Path) -> None:
    assert [Path(r["file"]).relative_to(photos).as_posix() for r in rows] == sorted(IMAGE_NAMES)
    for r in rows:
        assert list(r) == row_columns(CLASSES)
        assert int(r["face"]) == 0
        height = 30 + IMAGE_NAMES.index(Path(r["file"]).relative_to(photos).as_posix())  # 40 px wide: its centre square
        box = [float(r[k]) for k in ("x1", "y1", "x2", "y2")]
        assert box == [(40 - height) // 2, 0, (40 - height) // 2 + height, height] and float(r["face_px"]) == height
        probs = [float(r[c]) for c in CLASSES]
        assert math.isclose(sum(probs), 1, abs_tol=1e-4)
        assert r["label"] == CLASSES[int(np.argmax(probs))]


def test_predict_csv(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "res" / "faces.csv"
    assert main(predict_args(photos, tiny_path, "--out", str(out), "--workers", "0")) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    check_rows(rows, photos)


def test_predict_with_no_detector_writes_the_box_of_the_centre_square_it_scores(tiny_path: Path, tmp_path: Path) -> None:
    """``--detector none`` stretched a non-square image to the model's square input and wrote the whole
    image as the face's box; ``lrfer eval`` centre-crops such a face. Now the centred square of the
    shorter side is scored, as ``predict_crops`` scores it, and it is the box written."""
    import lrfer

    image = np.random.default_rng(7).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    assert cv2.imwrite(str(path), image[..., ::-1])
    out = tmp_path / "faces.jsonl"
    assert main(["predict", str(path), "--model", str(tiny_path), "--detector", "none", "--quiet", "--workers", "0",
                 "--out", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert [row[k] for k in ("x1", "y1", "x2", "y2", "face_px")] == [10.0, 0.0, 40.0, 30.0, 30.0]
    expected = lrfer.load(tiny_path, device="cpu", detector=None).predict_crops([image[:, 10:40]])[0]
    assert np.allclose([row[c] for c in CLASSES], expected, atol=1e-4)


def test_predict_in_bf16_matches_fp32_rows(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    from lrfer.recognizer import PRECISIONS

    for precision in PRECISIONS:  # the CLI's own (torch-free) choices accept every precision of lrfer.load
        assert build_parser().parse_args(["predict", "x.jpg", "--precision", precision]).precision == precision
        assert build_parser().parse_args(["predict", "x.jpg", "--precision", precision.upper()]).precision == precision
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "x.jpg", "--precision", "int4"])
    rows = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.csv"
        assert main(predict_args(photos, tiny_path, "--out", str(out), "--workers", "0", "--precision", precision)) == 0
        with open(out, newline="") as fh:
            rows[precision] = list(csv.DictReader(fh))
    check_rows(rows["bf16"], photos)
    for a, b in zip(rows["fp32"], rows["bf16"]):
        assert max(abs(float(a[c]) - float(b[c])) for c in CLASSES) < 3e-2


@pytest.mark.parametrize("extra", [["--workers", "0"], ["--workers", "2", "--image-batch", "1", "--streams", "2"]],
                         ids=["in-process", "two-streams"])
def test_predict_jsonl_and_annotate(photos: Path, tiny_path: Path, tmp_path: Path, extra: list[str]) -> None:
    out, ann = tmp_path / "faces.jsonl", tmp_path / "annotated"
    assert main(predict_args(photos, tiny_path, "--out", str(out), "--annotate", str(ann), *extra)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows(rows, photos)
    written = sorted(p.relative_to(ann).as_posix() for p in copies(ann))
    assert written == sorted(IMAGE_NAMES)
    for i, rel in enumerate(IMAGE_NAMES):  # each drawn on its own photo (their heights differ)
        assert cv2.imread(str(ann / rel)).shape == (30 + i, 40, 3)


def test_predict_table_on_stdout(photos: Path, tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(predict_args(photos, tiny_path, "--workers", "0")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == row_columns(CLASSES)
    assert len(lines) == 1 + len(IMAGE_NAMES)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_batches_scored_on_several_streams_give_the_rows_of_one(photos: Path, tiny_path: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    import threading

    import lrfer.cli as cli

    scorers: set[int] = set()
    score = cli.score_batch

    def recorded(*args: Any) -> Any:
        scorers.add(threading.get_ident())
        return score(*args)

    monkeypatch.setattr(cli, "score_batch", recorded)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    texts = {}
    threads = torch.get_num_threads()
    for streams in ("1", "3"):
        scorers.clear()
        out = tmp_path / f"{streams}.csv"
        status = main(["predict", str(photos), str(broken), *predict_args(photos, tiny_path)[2:], "--out", str(out),
                       "--workers", workers, "--image-batch", "1", "--streams", streams])
        assert status == 1  # the unreadable file, counted on either path
        texts[streams] = out.read_text()
        assert (threading.get_ident() in scorers) == (streams == "1")
        assert torch.get_num_threads() == threads  # the caller's torch threads, as they were
    assert texts["3"] == texts["1"]
    rows = list(csv.DictReader(texts["3"].splitlines()))
    check_rows(rows, photos)


def test_a_single_image_batch_is_scored_in_the_calling_thread_on_every_core(photos: Path, tiny_path: Path,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import lrfer.cli as cli
    from lrfer.recognizer import cpu_threads, threads_chosen_by_user

    seen: list[tuple[int, int]] = []
    score = cli.score_batch

    def recorded(*args: Any) -> Any:
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return score(*args)

    monkeypatch.setattr(cli, "score_batch", recorded)
    for streams in ([], ["--streams", "2"]):  # the default, and more streams than the 4 photos' one batch
        seen.clear()
        assert main(predict_args(photos, tiny_path, "--out", str(tmp_path / "o.csv"), *streams)) == 0
        threads = torch.get_num_threads() if threads_chosen_by_user() else cpu_threads()
        assert seen == [(threading.get_ident(), threads)]


def test_streams_must_be_positive() -> None:
    assert build_parser().parse_args(["predict", "x.jpg"]).streams is None  # the device's default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "x.jpg", "--streams", "0"])


def test_predict_subprocess_with_workers(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.jsonl"
    cmd = [sys.executable, "-m", "lrfer.cli", *predict_args(photos, tiny_path, "--out", str(out), "--workers", "2",
                                                            "--image-batch", "3")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check_rows([json.loads(line) for line in out.read_text().splitlines()], photos)


@pytest.mark.parametrize("out", [[], ["--out", "-"], ["--out", "-", "--format", "jsonl"]], ids=["table", "csv", "jsonl"])
def test_reader_closing_stdout_stops_quietly(tiny_path: Path, tmp_path: Path, out: list[str]) -> None:
    """``lrfer predict ... | head``: when the reader closes the pipe, the command stops with the
    status a shell reports for a closed pipe (141), without a traceback; also with ``--out -``, which
    was refused ("use a .csv or .jsonl file name")."""
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(600):  # about 100 kB of table rows: more than a pipe holds
        cv2.imwrite(str(crops / f"{i:04d}.png"), np.full((16, 16), i % 256, np.uint8))
    cmd = [sys.executable, "-m", "lrfer.cli", "predict", str(crops), "--model", str(tiny_path), "--detector", "none",
           "--quiet", "--workers", "0", *out]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if "jsonl" in out:
        assert json.loads(first)["face"] == 0
    else:
        assert first.replace(b",", b" ").split()[:2] == [b"file", b"face"]
    proc.stdout.close()  # as head does after its lines
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 141, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_out_dash_writes_the_rows_alone_to_stdout(fmt: str, photos: Path, tiny_path: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--out -`` was refused ("use a .csv or .jsonl file name"): now the rows go to stdout as CSV, or
    JSONL with ``--format jsonl``, the bytes of the ``--out`` file's rows but lines ending in "\\n", and
    no table, progress bar or summary among them (those stay on stderr)."""
    args = ["predict", str(photos), "--model", str(tiny_path), "--detector", "none", "--workers", "0", "--out"]
    assert main([*args, "-", *(["--format", "jsonl"] if fmt == "jsonl" else [])]) == 0
    out, err = capsys.readouterr()
    assert "lrfer: 4 image(s), 0 video frame(s): 4 face(s)" in err and "face(s)" not in out
    assert "\r" not in out
    if fmt == "csv":
        rows = list(csv.DictReader(out.splitlines()))
    else:
        rows = [json.loads(line) for line in out.splitlines()]
    check_rows(rows, photos)
    file = tmp_path / f"rows.{fmt}"
    assert main([*args, str(file), "--quiet"]) == 0
    assert file.read_text().replace("\r\n", "\n") == out


def test_format_is_checked_against_the_out_file_name(photos: Path, tiny_path: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """--format says which of CSV and JSONL; a file's suffix that says otherwise, or --format without
    --out (the table), is refused before any work; a name with another suffix is written as --format says."""
    for extra, problem in [(["--out", str(tmp_path / "x.csv"), "--format", "jsonl"], "--format jsonl and --out"),
                           (["--format", "csv"], "--format csv: it is the format of --out"),
                           (["--out", str(tmp_path / "x.txt")], "or say which with --format csv|jsonl")]:
        caplog.clear()
        assert main(predict_args(photos, tiny_path, "--workers", "0", *extra)) == 1
        assert problem in caplog.text
    assert not (tmp_path / "x.csv").exists()
    assert main(predict_args(photos, tiny_path, "--workers", "0", "--out", str(tmp_path / "x.txt"), "--format", "CSV")) == 0
    check_rows(list(csv.DictReader((tmp_path / "x.txt").read_text().splitlines())), photos)
    assert main(predict_args(photos, tiny_path, "--workers", "0", "--out", str(tmp_path / "y.JSONL"),
                             "--format", "jsonl")) == 0
    assert build_parser().parse_args(["predict", "x.jpg", "--out", "./-"]).out == Path("-")  # a file named -


@pytest.mark.parametrize("out", [["--out", "faces.jsonl"], ["--out", "x.txt", "--format", "csv"], ["--out", "-"], []],
                         ids=["by-suffix", "by-format", "stdout", "table"])
def test_predict_works_out_the_output_format_once(photos: Path, tiny_path: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, out: list[str]) -> None:
    """cmd_predict checked --out/--format with out_format before any work, then open_writer worked the
    format out again from the same options: two calls per run where the first one's answer would do."""
    import lrfer.cli as cli

    calls: list[tuple[Any, Any]] = []
    real = cli.out_format

    def counted(path: Any, fmt: Any) -> Any:
        calls.append((path, fmt))
        return real(path, fmt)

    monkeypatch.setattr(cli, "out_format", counted)
    monkeypatch.chdir(tmp_path)
    assert main(predict_args(photos, tiny_path, "--workers", "0", *out)) == 0
    assert len(calls) == 1, calls


def test_broken_pipe_without_a_file_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["models"]) == 141


def test_workers_start_after_opencv_ran_its_thread_pool(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    """Forked decoding workers must not touch OpenCV's thread settings: after the calling process has
    run OpenCV's thread pool, ``cv2.setNumThreads`` in a forked child waits forever (seen with
    opencv-python-headless 4.x). Run in a subprocess so that a hang fails by timeout."""
    out = tmp_path / "faces.csv"
    script = (
        "import sys, cv2, numpy as np\n"
        "from lrfer.cli import main\n"
        "big = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)\n"
        "cv2.resize(big, (500, 500), interpolation=cv2.INTER_AREA)  # starts OpenCV's thread pool\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", script, *predict_args(photos, tiny_path, "--out", str(out), "--workers", "2")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="") as fh:
        check_rows(list(csv.DictReader(fh)), photos)


def test_unreadable_file_is_skipped_with_exit_1(photos: Path, tiny_path: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_text("not a jpeg")
    out = tmp_path / "faces.csv"
    args = ["predict", str(photos / "a.png"), str(bad), "--model", str(tiny_path), "--detector", "none",
            "--quiet", "--workers", "0", "--out", str(out)]
    assert main(args) == 1
    with open(out, newline="") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [str(photos / "a.png")]
    assert "broken.jpg" in caplog.text


@pytest.mark.parametrize("workers", ["0", "1"])
def test_file_over_opencvs_pixel_limit_is_skipped_with_exit_1(photos: Path, tiny_path: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture, workers: str) -> None:
    """A 74-byte PNG claiming 40000x40000 pixels made OpenCV raise cv2.error, which stopped the run with
    no row written; it is skipped like any unreadable file, in the main thread and in a worker."""
    from test_io import png_claiming

    bad = tmp_path / "huge.png"
    bad.write_bytes(png_claiming(40000, 40000))
    out = tmp_path / "faces.csv"
    args = ["predict", str(photos / "a.png"), str(bad), "--model", str(tiny_path), "--detector", "none",
            "--quiet", "--workers", workers, "--out", str(out)]
    assert main(args) == 1
    with open(out, newline="") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [str(photos / "a.png")]
    assert "huge.png" in caplog.text


def test_file_that_cannot_be_opened_is_skipped_with_exit_1(photos: Path, tiny_path: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A file the user may not read (PermissionError, an OSError, not a ValueError): the others are scored."""
    real_fromfile = np.fromfile

    def denied(path: str, *args: Any, **kwargs: Any) -> np.ndarray:
        if path.endswith("b.jpg"):
            raise PermissionError(13, "Permission denied", path)
        return real_fromfile(path, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", denied)
    out = tmp_path / "faces.csv"
    assert main(predict_args(photos, tiny_path, "--out", str(out), "--workers", "0")) == 1
    with open(out, newline="") as fh:
        scored = [Path(r["file"]).relative_to(photos).as_posix() for r in csv.DictReader(fh)]
    assert scored == sorted(set(IMAGE_NAMES) - {"b.jpg"})
    assert "b.jpg" in caplog.text and "Permission denied" in caplog.text


def test_annotating_into_the_input_folder_is_refused(photos: Path, tiny_path: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    before = (folder / "a.png").read_bytes()
    assert main(predict_args(folder, tiny_path, "--annotate", str(folder), "--workers", "0")) == 1
    assert "would overwrite the inputs" in caplog.text
    assert main(["predict", str(folder / "a.png"), "--model", str(tiny_path), "--detector", "none", "--quiet",
                 "--annotate", str(folder)]) == 1
    assert (folder / "a.png").read_bytes() == before


def test_annotated_copies_that_cannot_be_written_are_counted_apart_from_unreadable_files(
        photos: Path, tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A copy that could not be written (here a file ``sub`` in the --annotate folder where the copies of
    sub/ go) ended the whole run with the OSError, the later images unscored; a copy of a video that
    could not be written was counted among the files that "could not be read"."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    ann = tmp_path / "annotated"
    ann.mkdir()
    (ann / "sub").write_text("a file of the user's where the copies' folder would go")
    out = tmp_path / "faces.csv"
    assert main(predict_args(folder, tiny_path, "--out", str(out), "--annotate", str(ann), "--workers", "0")) == 1
    with open(out, newline="") as fh:
        check_rows(list(csv.DictReader(fh)), folder)  # every readable image scored, its copy or not
    assert sorted(p.relative_to(ann).as_posix() for p in copies(ann)) == ["a.png", "b.jpg", "sub"]
    assert f"annotated copy of {folder / 'sub' / 'c.png'} not written" in caplog.text
    assert "1 file(s) or folder(s) could not be read" in caplog.text
    assert "2 annotated file(s) could not be written" in caplog.text


def test_annotated_copies_of_files_with_one_name_do_not_overwrite_each_other(
        photos: Path, tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second = tmp_path / "x" / "a.png", tmp_path / "y" / "a.png"
    for path, size in ((first, 20), (second, 26)):
        path.parent.mkdir()
        cv2.imwrite(str(path), np.full((size, size, 3), 90, np.uint8))
    ann = tmp_path / "annotated"
    args = ["predict", str(first), str(second), "--model", str(tiny_path), "--detector", "none", "--quiet",
            "--annotate", str(ann)]
    assert main(args) == 0
    assert cv2.imread(str(ann / "a.png")).shape[0] == 20 and cv2.imread(str(ann / "a-2.png")).shape[0] == 26
    assert "a-2.png" in caplog.text


def test_annotating_a_file_whose_suffix_opencv_cannot_write_falls_back_to_png(
        photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    odd, bare = tmp_path / "photo.dat", tmp_path / "nosuffix"
    shutil.copy(photos / "b.jpg", odd)
    shutil.copy(photos / "b.jpg", bare)
    ann = tmp_path / "annotated"
    args = ["predict", str(odd), str(bare), str(photos / "a.png"), "--model", str(tiny_path), "--detector", "none",
            "--quiet", "--annotate", str(ann)]
    assert main(args) == 0
    assert sorted(p.name for p in copies(ann)) == ["a.png", "nosuffix.png", "photo.png"]
    assert all(cv2.imread(str(p)) is not None for p in copies(ann))


def test_an_annotated_copy_renamed_to_png_does_not_replace_another(photos: Path, tiny_path: Path, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """photo.pgm's copy became photo.png after the name check: it replaced photo.png's, with exit 0."""
    folder = tmp_path / "coll"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.png"), np.full((20, 20, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "photo.pgm"), np.full((26, 26), 90, np.uint8))
    ann = tmp_path / "annotated"
    assert main(predict_args(folder, tiny_path, "--annotate", str(ann), "--workers", "0")) == 0
    assert sorted(p.name for p in copies(ann)) == ["photo-2.png", "photo.png"]
    assert sorted(cv2.imread(str(p)).shape[0] for p in copies(ann)) == [20, 26]
    assert "was written earlier in this run" in caplog.text


def test_annotating_never_replaces_a_file_already_there_unless_told(photos: Path, tiny_path: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """--annotate into a parent of the input folder replaced the user's own photos of the same name."""
    parent = tmp_path / "photos"
    shutil.copytree(photos, parent / "events")
    own = parent / "a.png"
    own.write_bytes((photos / "b.jpg").read_bytes())
    before = own.read_bytes()
    assert main(predict_args(parent / "events", tiny_path, "--annotate", str(parent), "--workers", "0")) == 0
    assert own.read_bytes() == before and (parent / "a-2.png").is_file()
    assert "a.png exists (--overwrite replaces files in the --annotate folder)" in caplog.text
    caplog.clear()
    assert main(predict_args(parent / "events", tiny_path, "--annotate", str(parent), "--workers", "0")) == 0
    assert f"written to {parent / 'a-3.png'}" in caplog.text  # the name it took, not the first one tried
    assert main(predict_args(parent / "events", tiny_path, "--annotate", str(parent), "--workers", "0",
                             "--overwrite")) == 0
    assert own.read_bytes() != before and cv2.imread(str(own)) is not None
    assert not (parent / "a-4.png").exists()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(before)
    (parent / "b.jpg").unlink()
    (parent / "b.jpg").symlink_to(outside)  # --overwrite never writes through a link out of the folder
    assert main(predict_args(parent / "events", tiny_path, "--annotate", str(parent), "--workers", "0",
                             "--overwrite")) == 0
    assert outside.read_bytes() == before and (parent / "b-2.jpg").is_file()


def test_broken_links_in_a_folder_are_reported_not_left_out(photos: Path, tiny_path: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "linked"
    shutil.copytree(photos, folder)
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    out = tmp_path / "faces.csv"
    assert main(predict_args(folder, tiny_path, "--out", str(out), "--workers", "0")) == 1
    assert "broken symbolic link" in caplog.text and "gone.jpg" in caplog.text
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(IMAGE_NAMES)


def test_folders_that_cannot_be_listed_are_reported(photos: Path, tiny_path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A folder without read permission was left out without a word, exit status 0 (os.walk drops its error)."""
    folder = tmp_path / "closed"
    shutil.copytree(photos, folder)
    scandir = os.scandir

    def denying_scandir(path: Any = ".") -> Any:  # chmod 000 does not stop root
        if os.fsdecode(path) == str(folder / "sub"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denying_scandir)
    out = tmp_path / "faces.csv"
    assert main(predict_args(folder, tiny_path, "--out", str(out), "--workers", "0")) == 1
    assert f"cannot list folder {str(folder / 'sub')!r}: Permission denied" in caplog.text
    with open(out, newline="") as fh:
        assert [Path(r["file"]).name for r in csv.DictReader(fh)] == ["a.png", "b.jpg"]


def test_file_names_that_are_not_utf8_are_written_and_shown(photos: Path, tiny_path: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/caf\xe9.png"
    shutil.copy(photos / "a.png", odd)
    shutil.copy(photos / "a.png", folder / "zz.png")
    out = tmp_path / "faces.csv"
    assert main(predict_args(folder, tiny_path, "--out", str(out), "--workers", "0")) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 3 and lines[1].startswith(odd) and lines[2].startswith(os.fsencode(folder / "zz.png"))
    assert main(predict_args(folder, tiny_path, "--workers", "0")) == 0
    assert "caf\ufffd.png" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_name_that_is_not_utf8_reads_back_as_its_bytes(suffix: str, photos: Path, tiny_path: Path,
                                                                tmp_path: Path) -> None:
    """Such a name (``caf\\xe9.png`` made by a Latin-1 system) can stop writing rows with UnicodeEncodeError
    ('surrogates not allowed'; open_writer writes with errors="surrogateescape" since 33f50c6, and only the
    CSV's bytes were tested). Read back in Python with the same error handler (CSV) or by ``json`` (JSONL:
    ``\\udce9``), ``os.fsencode`` of the name gives the file's bytes, and opens the file."""
    folder = tmp_path / "names"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/caf\xe9.png"
    try:
        shutil.copy(photos / "a.png", odd)
    except OSError as err:  # a file system that takes UTF-8 names only
        pytest.skip(f"this file system refuses a name that is not UTF-8: {err}")
    out = tmp_path / f"faces{suffix}"
    assert main(predict_args(folder, tiny_path, "--out", str(out), "--workers", "0")) == 0
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = list(csv.DictReader(fh)) if suffix == ".csv" else [json.loads(line) for line in fh]
    assert [os.fsencode(row["file"]) for row in rows] == [odd]
    assert os.path.isfile(rows[0]["file"])


@pytest.mark.parametrize("option", ["--out", "--annotate"])
def test_output_paths_the_system_refuses_are_one_line_errors(option: str, photos: Path, tiny_path: Path,
                                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder is needed")
    target = blocker / ("faces.csv" if option == "--out" else "annotated")
    assert main(predict_args(photos, tiny_path, option, str(target), "--workers", "0")) == 1
    assert str(blocker) in caplog.text and "Traceback" not in caplog.text


def test_annotate_naming_a_file_stops_before_any_row(photos: Path, tiny_path: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """It failed on the first annotated copy, "File exists", after that batch's rows were written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder is needed")
    out = tmp_path / "faces.csv"
    assert main(predict_args(photos, tiny_path, "--annotate", str(blocker), "--out", str(out), "--workers", "0")) == 1
    assert f"--annotate: cannot make the folder {str(blocker)!r}" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("name, fmt", [("results", None), ("results.csv", None), ("results", "jsonl")])
def test_out_naming_a_folder_says_it_is_a_folder(name: str, fmt: str | None, photos: Path, tiny_path: Path,
                                                  tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--out DIR`` was told "use a .csv or .jsonl file name" (and a folder named ``x.csv`` a bare
    "[Errno 21] Is a directory" once the model was loaded): now that it is a folder, and a file to name."""
    folder = tmp_path / name
    folder.mkdir()
    extra = ["--format", fmt] if fmt else []
    assert main(predict_args(photos, tiny_path, "--workers", "0", "--out", str(folder), *extra)) == 1
    suggested = folder / f"faces.{fmt or 'csv'}"
    assert f"--out {str(folder)!r} is a folder: name a file, e.g. --out {str(suggested)!r}" in caplog.text
    assert list(folder.iterdir()) == []


def out_paths_refused(tmp_path: Path, case: str) -> Path:
    """An ``--out`` file the system will not create, for :func:`test_out_file_that_cannot_be_created_names_the_option`."""
    if case == "long-name":
        return tmp_path / ("x" * 300 + ".csv")  # ENAMETOOLONG, as root too
    if case.startswith("proc"):
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc file system")
        return Path("/proc/lrfer-faces.csv") if case == "proc" else Path("/proc/lrfer-sub/faces.csv")
    if case == "file-sub-folder":  # a file where the folder should be, refused as root too
        (tmp_path / "faces").write_text("a file\n", encoding="utf-8")
        return tmp_path / "faces" / "faces.csv"
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    if os.access(read_only, os.W_OK):  # root
        read_only.chmod(0o700)
        pytest.skip("a read-only folder is writable by this user (root)")
    return read_only / ("faces.csv" if case == "read-only" else "sub/faces.csv")


@pytest.mark.parametrize("case", ["long-name", "proc", "proc-sub-folder", "file-sub-folder", "read-only",
                                  "read-only-sub-folder"])
def test_out_file_that_cannot_be_created_names_the_option(case: str, photos: Path, tiny_path: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """An ``--out`` file that cannot be created (permission denied, a parent that cannot be made, a name
    too long) failed with the bare "[Errno 13] Permission denied: 'x.csv'", naming no option."""
    out = out_paths_refused(tmp_path, case)
    try:
        assert main(predict_args(photos, tiny_path, "--workers", "0", "--out", str(out))) == 1
    finally:
        if (tmp_path / "read-only").exists():  # for pytest to remove it
            (tmp_path / "read-only").chmod(0o700)
    made = "cannot make the folder" if "sub" in case else "cannot write the file"
    assert "--out" in caplog.text and made in caplog.text, caplog.text
    assert str(out if made == "cannot write the file" else out.parent) in caplog.text
    assert "[Errno" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("case", ["long-name", "proc", "proc-sub-folder", "file-sub-folder", "read-only",
                                  "read-only-sub-folder"])
def test_an_out_file_that_cannot_be_written_is_told_before_the_model_loads(
        case: str, photos: Path, tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwritable ``--out`` was reported only after the model had loaded (seconds; minutes for a Hub model
    fetched on first use); in a folder that did not exist yet, it still was."""
    import lrfer.cli as cli

    out = out_paths_refused(tmp_path, case)
    monkeypatch.setattr(cli, "load_recognizer", lambda args: pytest.fail("the model loaded before --out was checked"))
    try:
        assert main(predict_args(photos, tiny_path, "--workers", "0", "--out", str(out))) == 1
    finally:
        if (tmp_path / "read-only").exists():
            (tmp_path / "read-only").chmod(0o700)
    told = (f"--out: cannot make the folder {str(out.parent)!r}" if "sub" in case
            else f"--out {str(out)!r}: cannot write the file")
    assert told in caplog.text and not os.path.exists(out), caplog.text


def test_checking_the_out_file_early_leaves_an_existing_file_and_makes_none(photos: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The early check opens --out for appending: a run that then fails (here: an unknown model) keeps an
    existing file's rows and leaves no new file behind, nor the folders it made for one."""
    kept, new, nested = tmp_path / "kept.csv", tmp_path / "new.csv", tmp_path / "a" / "b" / "new.csv"
    kept.write_text("rows of an earlier run\n", encoding="utf-8")
    for out in (kept, new, nested):
        assert main(["predict", str(photos), "--model", "no-such-model", "--workers", "0", "--out", str(out)]) == 1
    assert "no-such-model" in caplog.text
    assert kept.read_text(encoding="utf-8") == "rows of an earlier run\n"
    assert sorted(os.listdir(tmp_path)) == ["kept.csv"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc file system")
def test_annotate_folder_that_cannot_be_made_names_the_option(photos: Path, tiny_path: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """mkdir's bare "[Errno 2] No such file or directory: '/proc/x'" (or Permission denied) named no option."""
    target = Path("/proc/lrfer-annotated")
    assert main(predict_args(photos, tiny_path, "--workers", "0", "--annotate", str(target),
                             "--out", str(tmp_path / "faces.csv"))) == 1
    assert f"--annotate: cannot make the folder {str(target)!r}: " in caplog.text
    assert "[Errno" not in caplog.text and not (tmp_path / "faces.csv").exists()


def test_download_of_several_names_tries_every_one(tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer download a b c`` stopped at the first name that failed: the names after it were neither
    fetched nor verified. Now each failure is told, naming the model, the others are done, and it exits 1."""
    missing = tmp_path / "missing.safetensors"
    names = ["gmenet-fer2013-16p", str(tiny_path), str(missing)]
    assert main(["download", *names]) == 1
    assert capsys.readouterr().out.splitlines() == [str(tiny_path)]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3, errors
    assert errors[0].startswith("unknown model 'gmenet-fer2013-16p'") and "did you mean 'gmenet-fer2013-16px'" in errors[0]
    assert f"{missing} does not exist" in errors[1]
    assert errors[2] == "2 of 3 model(s) could not be downloaded (see the errors above)"
    caplog.clear()
    assert main(["download", "gmenet-fer2013-16p"]) == 1  # one name: its error alone, as before
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][0].startswith("unknown model")
    assert main(["download", str(tiny_path), str(tiny_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tiny_path)] * 2


def test_download_prints_a_local_file_and_a_local_folder_absolute(tiny_path: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`lrfer download file.safetensors` (and a folder holding one such file) printed the path as given,
    relative, while `lrfer download folder/` of a folder with lrfer_config.json printed it absolute."""
    from lrfer import zoo

    lone, configured = tmp_path / "lone", tmp_path / "configured"
    for folder in (lone, configured):
        folder.mkdir()
        shutil.copy(tiny_path, folder / "tiny.safetensors")
    shutil.copy(tiny_path, tmp_path / "file.safetensors")
    (configured / zoo.CONFIG_FILENAME).write_text(json.dumps(zoo.resolve(tiny_path)[0].to_dict()))
    monkeypatch.chdir(tmp_path)
    assert main(["download", "file.safetensors", "lone/", "configured/"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(tmp_path / "file.safetensors"), str(lone / "tiny.safetensors"), str(configured / "tiny.safetensors")]
    assert main(["download", "file.safetensors"]) == 0  # one name: the same
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "file.safetensors")]

def test_predict_errors(photos: Path, tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(predict_args(photos, tiny_path, "--out", str(tmp_path / "x.txt"))) == 1
    assert ".csv or .jsonl" in caplog.text
    assert main(["predict", str(tmp_path / "missing"), "--model", str(tiny_path)]) == 1
    assert "no such file" in caplog.text
    with pytest.raises(SystemExit):
        main(predict_args(photos, tiny_path, "--batch-size", "0"))


def test_errors_of_the_library_name_the_options_not_python_arguments(photos: Path, tiny_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """``--device cuda`` without a GPU said "use device='cpu' or 'auto'", ``--precision fp16`` on CPU and
    ``--detector facenet`` without facenet-pytorch spoke of Python's arguments too; the CLI now names the
    option first, while ``lrfer.load``'s messages stay in Python's terms for Python users."""
    import lrfer
    import lrfer.recognizer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails: not installed
    cases = [(["--device", "cuda"], "--device cuda: ", "use --device cpu or auto"),
             (["--device", "cpu", "--precision", "fp16"], "--precision fp16: ", "needs a CUDA device"),
             (["--device", "cpu", "--detector", "facenet"], "--detector facenet needs facenet-pytorch",
              "or use --detector mtcnn")]
    for extra, start, fix in cases:
        caplog.clear()
        args = ["predict", str(photos), "--model", str(tiny_path), "--workers", "0", "--quiet", *extra]
        assert main(args) == 1
        (message,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert message.startswith(start) and fix in message and "='" not in message, message
    for options, python in [({"device": "cuda"}, "device='cpu'"), ({"precision": "fp16"}, "precision 'fp16'"),
                            ({"detector": "facenet"}, "detector='facenet'")]:
        with pytest.raises((ValueError, ImportError), match=python):
            lrfer.load(tiny_path, **{"device": "cpu", **options})
    monkeypatch.setattr(lrfer.recognizer, "cpu_has_fast_bf16", lambda unknown=True: False)
    caplog.clear()
    assert main(predict_args(photos, tiny_path, "--workers", "0", "--device", "cpu", "--precision", "bf16",
                             "--out", str(photos.parent / "bf16.csv"))) == 0
    assert "--precision bf16 on a CPU without native bf16" in caplog.text and "precision='bf16'" not in caplog.text
    caplog.clear()
    lrfer.load(tiny_path, device="cpu", detector=None, precision="bf16")
    assert "precision='bf16' on a CPU" in caplog.text


def test_a_count_that_is_not_a_number_is_named_as_such(photos: Path, tiny_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """argparse named the parsing function: "invalid _positive_int value: 'abc'"."""
    for option, text, expected in (("--batch-size", "abc", "expected a whole number >= 1, got 'abc'"),
                                   ("--workers", "1.5", "expected a whole number >= 0, got '1.5'"),
                                   ("--min-face", "0", "must be >= 8, got 0")):
        with pytest.raises(SystemExit):
            main(predict_args(photos, tiny_path, option, text))
        err = capsys.readouterr().err
        assert f"argument {option}: {expected}" in err and "_int" not in err


def test_a_min_face_below_the_smallest_is_refused_by_the_parser(photos: Path, tiny_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` says >= 8, but 1-7 were accepted, the files listed and the model loaded, and the run
    then stopped with the library's "min_face must be ..." (a keyword, not the option)."""
    with pytest.raises(SystemExit) as stopped:
        main(["predict", str(photos), "--model", str(tiny_path), "--min-face", "7"])
    assert stopped.value.code == 2
    assert "argument --min-face: must be >= 8, got 7" in capsys.readouterr().err
    assert build_parser().parse_args(["predict", "x.jpg", "--min-face", "8"]).min_face == 8


def test_a_file_reached_through_several_arguments_is_scored_once(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    """A folder given twice (``photos photos/``), a file or sub-folder of a folder given too
    (``photos photos/a.png``, a shell glob beside its folder) gave each such file's rows twice, and
    with ``--annotate`` a second copy ``-2``: counts of faces and labels came out wrong in silence."""
    out = tmp_path / "faces.csv"
    paths = [str(photos), f"{photos}/", str(photos / "sub"), str(photos / "a.png"), str(photos / "sub" / ".." / "b.jpg")]
    assert main(["predict", *paths, *predict_args(photos, tiny_path)[2:], "--out", str(out), "--workers", "0"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    check_rows(rows, photos)
    out2 = tmp_path / "two.csv"  # the first name a file is reached by is kept, a file first
    assert main(["predict", str(photos / "a.png"), *predict_args(photos, tiny_path, "--out", str(out2))[1:]]) == 0
    with open(out2, newline="") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [str(photos / "a.png")] + [
            str(photos / n) for n in sorted(IMAGE_NAMES) if n != "a.png"]


def test_a_video_reached_through_several_arguments_is_scored_once(tiny_path: Path, tmp_path: Path) -> None:
    """As for images: ``clips clips/v.avi`` scored the video twice."""
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "v.avi", frames=2)
    out = tmp_path / "faces.csv"
    assert main(["predict", str(folder), str(folder / "v.avi"), "--model", str(tiny_path), "--detector", "none",
                 "--quiet", "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        assert [r["frame"] for r in csv.DictReader(fh)] == ["0", "1"]


def write_video(path: Path, frames: int, size: tuple[int, int] = (32, 24)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()


def test_annotated_copies_inside_an_input_folder_are_not_read_as_inputs(tiny_path: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer predict . --annotate annotated`` run twice scored the first run's annotated copies (and
    videos) as photos of the user: rows for ``annotated/a.png``, and copies of copies in
    ``annotated/annotated/``."""
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((30, 40, 3), 128, np.uint8))
    write_video(folder / "v.avi", frames=1)
    monkeypatch.chdir(folder)
    args = ["predict", ".", "--model", str(tiny_path), "--detector", "none", "--quiet", "--annotate", "annotated",
            "--workers", "0", "--overwrite"]
    for run in ("1", "2"):
        assert main([*args, "--out", f"../run{run}.csv"]) == 0
        with open(tmp_path / f"run{run}.csv", newline="") as fh:
            assert [r["file"] for r in csv.DictReader(fh)] == ["a.png", "v.avi"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "a.png", "annotated", "annotated/.lrfer-annotated", "annotated/a.png", "annotated/v.mp4", "v.avi"]
    assert main(["predict", "annotated", "--model", str(tiny_path), "--detector", "none", "--quiet",
                 "--out", "../copies.csv", "--workers", "0"]) == 0  # read as inputs when given
    assert main(["predict", "annotated", *args[2:]]) == 1  # and --annotate into them is still refused
    assert "is the folder of the input 'annotated'" in caplog.text


def test_hidden_files_and_folders_are_not_searched_but_read_when_given(photos: Path, tiny_path: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A folder from a Mac (a shared drive, a zip) holds a ``._name.jpg`` resource fork beside each photo:
    every one was reported unreadable and the run ended with status 1; ``.Trash-1000/`` (deleted photos)
    and ``.thumbnails/`` (small copies) were scored as photos."""
    folder = tmp_path / "from_a_mac"
    shutil.copytree(photos, folder)
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".Trash-1000" / "files").mkdir(parents=True)
    shutil.copy(folder / "a.png", folder / ".Trash-1000" / "files" / "deleted.png")
    shutil.copy(folder / "a.png", folder / "sub" / ".hidden.png")
    out = tmp_path / "faces.csv"
    assert main(["predict", str(folder), str(folder / "sub" / ".hidden.png"),
                 *predict_args(folder, tiny_path, "--out", str(out), "--workers", "0")[2:]]) == 0
    assert "skipped" not in caplog.text
    with open(out, newline="") as fh:
        names = [Path(r["file"]).relative_to(folder).as_posix() for r in csv.DictReader(fh)]
    assert names == sorted(IMAGE_NAMES) + ["sub/.hidden.png"]


def test_verbose_after_the_command_is_accepted(photos: Path, tiny_path: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer predict photos/ -v`` stopped with "unrecognized arguments: -v": only ``lrfer -v predict``
    was accepted."""
    import logging

    caplog.set_level(logging.INFO, logger="lrfer")
    assert main(predict_args(photos, tiny_path, "--out", str(tmp_path / "f.csv"), "-v", "--workers", "0")) == 0
    assert "4 image(s), 0 video frame(s): 4 face(s)" in caplog.text
    assert main(["models", "gmenet-*", "--verbose"]) == 0
    assert build_parser().parse_args(["-v", "models"]).verbose  # the option before the command still counts


def test_a_pipe_given_as_input_is_named_as_such(tiny_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer predict /dev/stdin < photo.jpg`` said "no such file or folder: '/dev/stdin'"."""
    read_end, write_end = os.pipe()
    try:
        assert main(["predict", f"/dev/fd/{read_end}", "--model", str(tiny_path), "--quiet"]) == 1
    finally:
        os.close(read_end)
        os.close(write_end)
    assert f"'/dev/fd/{read_end}' is not a file or folder (a pipe or a device)" in caplog.text


def test_a_url_given_as_input_is_named_as_such(tiny_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer predict https://example.com/a.jpg`` said "no such file or folder: 'https:/example.com/a.jpg'"
    (the path's ``//`` folded), where ``Recognizer.predict`` says that lrfer downloads nothing."""
    for url in ("https://example.com/a.jpg", "rtsp://camera/stream"):
        caplog.clear()
        assert main(["predict", url, "--model", str(tiny_path), "--quiet"]) == 1
        assert f"'{url}' is a URL; lrfer reads image and video files, it downloads nothing" in caplog.text
        assert "cv2.VideoCapture" in caplog.text and "no such file" not in caplog.text


def test_models_lists_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    from lrfer.zoo import list_models

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    names = list_models()
    for name in names:
        assert name in out
    if not names:
        assert "no models" in out
    assert main(["models", "no-such-arch-*"]) == 0
    assert "no models match" in capsys.readouterr().out
    # an unset shell variable ("$PATTERN"): the whole zoo, not "the weights manifest lists no models yet"
    assert main(["models", ""]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)


def test_list_is_an_alias_of_models(capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer list`` (pip's, conda's word) stopped with argparse's "invalid choice: 'list'"."""
    assert main(["models", "gmenet-*"]) == 0
    listed = capsys.readouterr().out
    assert main(["list", "gmenet-*", "-v"]) == 0
    assert capsys.readouterr().out == listed and "gmenet-fer2013-16px" in listed
    assert build_parser().parse_args(["list"]).func is build_parser().parse_args(["models"]).func

def test_models_with_a_pattern_without_wildcards_suggests_one(capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer models gmenet`` (a timm user's filter, which fnmatch matches against whole names only)
    said just "no models match", though seven gmenet models are listed with ``gmenet*``."""
    assert main(["models", "gmenet"]) == 0
    out = capsys.readouterr().out
    assert "no models match 'gmenet' (an fnmatch pattern, matched against whole names: try 'gmenet*' or '*gmenet*')" in out
    assert main(["models", "*fer2013*"]) == 0  # the suggestion works as written
    listed = capsys.readouterr().out
    assert "gmenet-fer2013-16px" in listed
    assert main(["models", "no-such-*"]) == 0  # a pattern with wildcards is shown as it is
    assert capsys.readouterr().out.strip() == "no models match 'no-such-*'"


def test_models_exclude_leaves_out_the_matching_names(capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer models gmenet-* --exclude '*-8px'`` (list_models' exclude_filters, timm's keyword) was an
    unrecognised argument."""
    assert main(["models", "gmenet-fer2013-*", "--exclude", "*-8px", "--exclude", "*-12px"]) == 0
    out = capsys.readouterr().out
    assert "gmenet-fer2013-16px" in out and "gmenet-fer2013-8px" not in out and "gmenet-fer2013-12px" not in out
    assert main(["models", "gmenet-fer2013-8px", "--exclude", "*-8px"]) == 0
    assert capsys.readouterr().out.strip() == "no models left once --exclude '*-8px' removed the matching names"


def test_info(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from lrfer.zoo import list_models

    assert main(["info", "nothing-fer2013-16px"]) == 1
    names = list_models()
    if not names:
        pytest.skip("the manifest lists no models yet")
    assert main(["info", names[0], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == names[0] and set(data["license"]) == {"code", "weights", "data"}
    assert main(["info", names[0]]) == 0
    assert "license" in capsys.readouterr().out


def test_info_prints_the_config_and_the_alignment(capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer info NAME`` showed neither the architecture's config nor the framing, crop and degradation the
    model's faces get."""
    from lrfer.zoo import info, list_models

    name = list_models()[0]
    assert main(["info", name]) == 0
    printed = capsys.readouterr().out.splitlines()
    data = info(name)
    config = printed.index("config:")
    assert printed[config + 1:config + 1 + len(data["config"])] == [f"  {k}: {v}" for k, v in data["config"].items()]
    alignment = printed.index("alignment:")
    assert printed[alignment + 1] == "  name: fer2013"
    assert "  template_px:" in printed and "    left_eye: 15.26, 18.52" in printed
    assert "  face_box_px: 4.22, -0.5, 42.66, 48.25" in printed
    res = data["resolution"]
    degradation = f"area down-sampling of the 48x48 face to {res}x{res} px" if res != 48 else "none"
    assert any(line.startswith(f"  degradation: {degradation}") for line in printed)
    assert main(["info", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alignment"] == data["alignment"]


def test_info_prints_nested_values_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """``publictest_accuracy_by_px`` came out as a Python dict repr ({'8': 0.3547, ...}); ``--config``
    stays JSON."""
    from lrfer.cli import info_lines
    from lrfer.zoo import config_entry, info, load_manifest

    data = {"metrics": {"acc": 0.6, "acc_by_px": {"8": 0.35, "12": 0.52}}, "tags": ["a", {"b": 1}], "paper": ""}
    assert list(info_lines(data)) == ["metrics:", "  acc: 0.6", "  acc_by_px:", "    8 px: 0.35", "    12 px: 0.52",
                                      'tags: a, {"b": 1}']
    name = load_manifest().default
    if name is None:
        pytest.skip("the manifest has no default model")
    assert main(["info", name]) == 0
    printed = capsys.readouterr().out
    assert "{" not in printed
    by_px = info(name)["metrics"].get("publictest_accuracy_by_px")
    if by_px:
        assert "\n".join(f"    {px} px: {acc}" for px, acc in by_px.items()) in printed
    assert main(["info", name, "--config"]) == 0
    assert json.loads(capsys.readouterr().out) == config_entry(name)


@pytest.mark.parametrize("folder, encoding", [
    ("caf\u00e9 \u6a21\u578b", "cp1252"),  # a Chinese folder name on a Windows console
    pytest.param("caf\udce9", "utf-8", marks=pytest.mark.skipif(sys.platform != "linux", reason="a byte that is not "
                                                                 "UTF-8 in a file name: Linux file systems only")),
])
def test_download_and_info_print_paths_stdout_cannot_encode(folder: str, encoding: str, tiny_path: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path stdout's encoding cannot show (strict, as under en_US.UTF-8 or cp1252) is shown as predict's table
    shows names; it made the command fail once its work was done."""
    import io

    copy = tmp_path / folder / "tiny.safetensors"
    copy.parent.mkdir()
    shutil.copy(tiny_path, copy)
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["download", str(copy)]) == 0
    assert main(["info", str(copy)]) == 0
    out.flush()
    printed = out.buffer.getvalue().decode(encoding)  # type: ignore[attr-defined]
    assert printed.count("tiny.safetensors") == 3 and "license:" in printed  # download's path, info's file and path


def test_publictest_accuracy_keys() -> None:
    assert publictest_accuracy({"publictest_acc": 0.61}) == 0.61
    assert publictest_accuracy({"fer2013_publictest_acc": 61.0}) == pytest.approx(0.61)
    assert publictest_accuracy({"publictest": {"acc": 0.5}}) == 0.5
    assert publictest_accuracy({"train_loss": 0.3}) is None


def test_help_is_fast_and_lists_commands() -> None:
    code = ("import sys; from lrfer.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("models", "info", "download", "predict", "train", "eval"):
        assert command in proc.stdout


def test_train_and_eval_are_delegated(capsys: pytest.CaptureFixture[str]) -> None:
    from lrfer.cli import train_cli_error

    for command in ("train", "eval"):
        if train_cli_error() is not None:
            assert main([command]) == 2
            continue
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert command in capsys.readouterr().out


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["predict", "x.jpg"])
    assert (args.detector, args.device, args.batch_size, args.min_face) == ("auto", "auto", 256, 20)
    assert args.model is None and args.out is None and args.precision == "auto"


def console_script() -> str | None:
    """The ``lrfer`` command pip installed for this interpreter (beside it, as in a virtual environment run
    as ``venv/bin/python -m pytest`` without activating it), else the one on PATH; None without either."""
    return shutil.which("lrfer", path=sysconfig.get_path("scripts")) or shutil.which("lrfer")


@pytest.mark.skipif(console_script() is None, reason="lrfer is not pip-installed here (no console script)")
def test_console_script_installed() -> None:
    """Skipped in a virtual environment run without activating it (its bin/ is not on PATH), although pip
    had installed the command there."""
    from lrfer import __version__

    script = console_script()
    assert script is not None
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"lrfer {__version__}"


def test_host_threads_follow_the_device_and_streams_unless_the_environment_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    from lrfer import cli, recognizer

    before = torch.get_num_threads()
    monkeypatch.setattr(recognizer, "cpu_threads", lambda: 4)
    try:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS"):
            monkeypatch.delenv(var, raising=False)
        cpu, cuda = torch.device("cpu"), torch.device("cuda")
        assert cli.default_streams(cpu) == cli.DEFAULT_CPU_STREAMS == 2 and cli.default_streams(cuda) == 1
        torch.set_num_threads(2)
        for streams, threads in [(1, 4), (2, 2), (3, 1), (8, 1)]:  # CPU: the cores shared among the streams
            with cli.host_threads(cpu, streams):
                assert torch.get_num_threads() == threads
            assert torch.get_num_threads() == 2  # restored
        with cli.host_threads(cuda, 1):
            assert torch.get_num_threads() == cli.GPU_HOST_THREADS
        monkeypatch.setattr(recognizer, "cpu_threads", lambda: 1)
        assert cli.default_streams(cpu) == 1  # one core: one batch at a time
        monkeypatch.setattr(recognizer, "cpu_threads", lambda: 4)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(3)
        assert cli.default_streams(cpu) == 1  # the environment's threads, all for one batch at a time
        for device in (cpu, cuda):
            with cli.host_threads(device, 2):
                assert torch.get_num_threads() == 3  # the user's choice stands
    finally:
        torch.set_num_threads(before)


def test_cpu_threads_are_the_configured_count_whatever_this_thread_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from lrfer import recognizer

    before = torch.get_num_threads()
    monkeypatch.setattr(recognizer, "_threads_configured", True)
    monkeypatch.setattr(recognizer, "_configured_threads", 6)
    try:
        torch.set_num_threads(1)
        assert recognizer.cpu_threads() == 6
        monkeypatch.setattr(recognizer, "_configured_threads", None)  # the environment chose: torch's count stands
        assert recognizer.cpu_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_workers_decode_small_batches_that_come_back_as_image_batches_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image batch is decoded by all workers (DECODE_BATCH files each) and regrouped in file order;
    unreadable files travel as messages in their place."""
    import lrfer.cli as cli
    from lrfer.io import iter_image_files, pack_images

    names = [f"{i:02d}.png" for i in range(13)]
    for i, name in enumerate(names):
        cv2.imwrite(str(tmp_path / name), np.full((4 + i, 5, 3), i, dtype=np.uint8))
    (tmp_path / "07.png").write_text("broken")
    sizes: list[int] = []
    real_loader = torch.utils.data.DataLoader

    def recording_loader(*args: object, **kwargs: object) -> object:
        collate = kwargs["collate_fn"]  # one tensor or slot per worker batch, not one per image
        assert getattr(collate, "func", collate) is pack_images
        sizes.append(int(kwargs["batch_size"]))  # type: ignore[call-overload]
        return real_loader(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "DECODE_BATCH", 3)
    monkeypatch.setattr(torch.utils.data, "DataLoader", recording_loader)
    files = iter_image_files([tmp_path])
    batches = list(cli.iter_decoded(files, workers=2, image_batch=5))
    assert sizes == [3]
    assert [len(b) for b in batches] == [5, 5, 3]
    items = [item for batch in batches for item in batch]
    assert [index for index, _ in items] == list(range(13))
    for index, item in items:
        if index == 7:
            assert isinstance(item, str) and "07.png" in item
        else:
            assert item.shape == (4 + index, 5, 3) and int(item[0, 0, 0]) == index


def test_decoding_workers_make_no_temp_folders_of_their_own(photos: Path, tmp_path: Path) -> None:
    """A decoding worker hands its batches over through a socket in a ``multiprocessing`` temporary
    folder (``pymp-*``). One the worker made itself was left in /tmp when the worker was stopped while
    still handing over a prefetched batch (a loop left early); the workers use the calling process's
    folder, removed when it exits. In a subprocess: a fresh process, its temporary folder in tmp_path."""
    script = (
        "import glob, os, sys\n"
        "import multiprocessing.process\n"
        "from lrfer import cli\n"
        "from lrfer.io import iter_image_files\n"
        "batches = cli.iter_decoded(iter_image_files([sys.argv[1]]), workers=2, image_batch=1)\n"
        "next(batches)  # a worker has handed a batch over: its folder, if it made one, exists while it runs\n"
        "made = glob.glob(os.path.join(sys.argv[2], 'pymp-*'))\n"
        "batches.close()\n"
        "own = multiprocessing.process.current_process()._config.get('tempdir')\n"
        "assert made == ([own] if own else []), (made, own)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script, str(photos), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob("pymp-*"))


def failing_iterator(message: str) -> Iterator[Any]:
    raise RuntimeError(message)
    yield  # a generator: the error comes at its first next()


@pytest.mark.parametrize("fails_at", ["start", "first batch"])
def test_decoding_falls_back_in_process_when_workers_cannot_start(
        fails_at: str, photos: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Where worker processes cannot start (fork refused, no /dev/shm in a sandbox), ``lrfer predict``
    says so once and decodes in its own process: the same images, in the same order. Workers start
    in ``iter(loader)`` and first use shared memory at the first ``next()``: both are covered."""
    import lrfer.cli as cli
    from lrfer.io import iter_image_files

    real_loader = torch.utils.data.DataLoader
    started: list[int] = []

    class NoWorkerProcesses(real_loader):  # type: ignore[misc, valid-type]
        def __iter__(self):  # noqa: ANN204
            started.append(self.num_workers)
            if self.num_workers and fails_at == "start":
                raise RuntimeError("unable to open shared memory object")
            if self.num_workers:
                return failing_iterator("unable to open shared memory object")
            return super().__iter__()

    monkeypatch.setattr(torch.utils.data, "DataLoader", NoWorkerProcesses)
    files = iter_image_files([photos])
    batches = list(cli.iter_decoded(files, workers=2, image_batch=3))
    assert started == [2, 0]
    assert ("decoding workers failed before delivering a file (unable to open shared memory object); decoding "
            "in-process") in caplog.text
    items = [item for batch in batches for item in batch]
    assert [index for index, _ in items] == list(range(len(IMAGE_NAMES)))
    assert [item.shape[0] for _, item in items] == [30 + i for i in range(len(IMAGE_NAMES))]


#: The file index from which :func:`packing_that_breaks_in_workers` breaks, and how.
BREAK_FROM, BREAK_HOW = 6, "fails"
UNPATCHED_PACK_IMAGES = __import__("lrfer.io", fromlist=["pack_images"]).pack_images


def packing_that_breaks_in_workers(batch: list[tuple[int, Any]], slots: Any = None) -> Any:
    """``pack_images`` whose workers, from file :data:`BREAK_FROM` on, find shared memory full or hang."""
    import time

    from torch.utils.data import get_worker_info

    if get_worker_info() is not None and batch[0][0] >= BREAK_FROM:
        if BREAK_HOW == "hangs":
            time.sleep(60)
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1>: No space left on device (28)")
    return UNPATCHED_PACK_IMAGES(batch, slots)


@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="the workers must inherit the patched packing (fork)")
@pytest.mark.parametrize("how, reason", [
    ("fails", "RuntimeError: unable to allocate shared memory(shm) for file </torch_1>: No space left on device (28)"),
    ("hangs", "DataLoader timed out after 2 seconds"),
])
def test_decoding_goes_on_in_process_when_workers_fail_part_way(
        how: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Shared memory full part-way through a folder (Docker's /dev/shm is 64 MB): the worker's error
    was swallowed, its batch never came, and ``lrfer predict`` waited forever. Now the files not yet
    delivered are decoded in-process, with a warning; a worker that hangs gives way after
    DECODE_TIMEOUT_S."""
    import lrfer.cli as cli
    import lrfer.io
    from lrfer.io import iter_image_files

    for i in range(13):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((4 + i, 5, 3), i, dtype=np.uint8))
    monkeypatch.setattr(lrfer.io, "pack_images", packing_that_breaks_in_workers)
    monkeypatch.setattr(sys.modules[__name__], "BREAK_HOW", how)
    monkeypatch.setattr(cli, "DECODE_BATCH", 3)
    monkeypatch.setattr(cli, "DECODE_TIMEOUT_S", 2)
    batches = list(cli.iter_decoded(iter_image_files([tmp_path]), workers=2, image_batch=3))
    items = [item for batch in batches for item in batch]
    assert [index for index, _ in items] == list(range(13))
    assert all(item.shape == (4 + index, 5, 3) and int(item[0, 0, 0]) == index for index, item in items)
    assert f"image-decoding workers failed after {BREAK_FROM} files ({reason}); decoding in-process" in caplog.text


def write_numbered_pngs(folder: Path, count: int) -> None:
    """PNGs 00.png.. whose pixels say their number (lossless): file i is (4 + i % 5, 5, 3), value i."""
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((4 + i % 5, 5, 3), i, dtype=np.uint8))


needs_memfd = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="DecodeSlots need memfd_create (Linux)")


@needs_memfd
def test_decoding_workers_refill_a_slot_only_once_nothing_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slot_backed: Callable[[np.ndarray], bool]) -> None:
    """Workers reuse 3 slots for 30 batches; photos still held (every third image batch, kept to the
    end) keep their slot, so their pixels stay theirs while the slots around them are written again."""
    import lrfer.cli as cli
    import lrfer.io
    from lrfer.io import iter_image_files

    write_numbered_pngs(tmp_path, 60)
    made: list[Any] = []
    real_decode_slots = lrfer.io.decode_slots

    def three_slots(count: int, slot_bytes: int) -> Any:
        made.append(real_decode_slots(3, slot_bytes))
        return made[-1]

    monkeypatch.setattr(lrfer.io, "decode_slots", three_slots)
    monkeypatch.setattr(cli, "DECODE_BATCH", 2)
    held, seen = [], []
    for number, batch in enumerate(cli.iter_decoded(iter_image_files([tmp_path]), workers=2, image_batch=2)):
        seen.extend((index, item.copy(), slot_backed(item)) for index, item in batch)
        if number % 3 == 0:
            held.extend(batch)
    assert len(made) == 1 and len(made[0]) == 3
    assert [index for index, _, _ in seen] == list(range(60))
    assert all(item.shape == (4 + i % 5, 5, 3) and (item == i).all() for i, item, _ in seen)
    assert sum(backed for _, _, backed in seen) > 3 * 2  # the slots were written again
    assert any(slot_backed(item) for _, item in held)
    assert all((item == index).all() for index, item in held)  # untouched while held


@needs_memfd
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_decoding_workers_started_without_fork_fill_the_slots(method: str, tmp_path: Path) -> None:
    """Spawned workers (and forkserver's, Python 3.14's default) receive the slots' file descriptor
    and write into the same memory as the main process reads. In a subprocess: its own start method."""
    write_numbered_pngs(tmp_path, 12)
    script = (
        "import multiprocessing, sys\n"
        "from lrfer import cli\n"
        "from lrfer.io import iter_image_files\n"
        "cli.DECODE_BATCH = 2\n"
        "if __name__ == '__main__':  # the workers import this file too\n"
        f"    multiprocessing.set_start_method({method!r})\n"
        "    items = [item for batch in cli.iter_decoded(iter_image_files([sys.argv[1]]), workers=2, image_batch=4)\n"
        "             for item in batch]\n"
        "    assert [i for i, _ in items] == list(range(12)), items\n"
        "    assert all((a == i).all() and a.shape == (4 + i % 5, 5, 3) for i, a in items)\n"
        "    print(sum(type(a.base.base).__name__ == '_SlotLease' for _, a in items))\n"
    )
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) == 12


@needs_memfd
@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="the workers must inherit the patched allocator (fork)")
def test_decoding_workers_need_no_dev_shm_for_photos_that_fit_the_slots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        slot_backed: Callable[[np.ndarray], bool]) -> None:
    """/dev/shm full from the start (Docker's 64 MB held about 4 batches of 32 photos of 480 px: with
    8 workers and 256 photos per step they failed after 64-128 files, and decoding went on in-process,
    17x slower). The slots are a memfd, outside /dev/shm: the workers decode the whole folder."""
    import lrfer.cli as cli
    import lrfer.io

    def dev_shm_full(like: torch.Tensor, numel: int) -> torch.Tensor:
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1>: No space left on device (28)")

    write_numbered_pngs(tmp_path, 30)
    monkeypatch.setattr(lrfer.io, "_shared_buffer", dev_shm_full)
    monkeypatch.setattr(cli, "DECODE_BATCH", 2)
    seen = [(index, bool((item == index).all()), slot_backed(item))  # the arrays let go, as predict does
            for batch in cli.iter_decoded(lrfer.io.iter_image_files([tmp_path]), workers=2, image_batch=4)
            for index, item in batch]
    assert seen == [(index, True, True) for index in range(30)]
    assert "decoding in-process" not in caplog.text
    monkeypatch.setattr(cli, "DECODE_SLOT_BYTES", 0)  # the loader before the slots
    list(cli.iter_decoded(lrfer.io.iter_image_files([tmp_path]), workers=2, image_batch=4))
    assert "No space left on device (28)); decoding in-process" in caplog.text


def test_worker_slots_cover_every_batch_in_flight() -> None:
    import lrfer.cli as cli

    assert cli.worker_slots(0, 0, 64, 32) is None
    if hasattr(os, "memfd_create"):
        slots = cli.worker_slots(4, 1, 64, 32)
        assert slots is not None and len(slots) == 4 * 1 + 3 * (2 + 1) and slots.slot_bytes == 32 * cli.DECODE_SLOT_BYTES
        scored_two_at_once = cli.worker_slots(4, 1, 64, 32, scoring=2)
        assert scored_two_at_once is not None and len(scored_two_at_once) == 4 * 1 + 4 * (2 + 1)


def test_full_shared_memory_is_an_error_in_a_decoding_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """It was taken for a torch without the private method, and the batch was left to a copy that
    failed out of sight."""
    from lrfer.io import _shared_buffer

    def full(self: object, size: int) -> object:
        raise RuntimeError("unable to allocate shared memory(shm): No space left on device (28)")

    monkeypatch.setattr(torch.UntypedStorage, "_new_shared", full, raising=False)
    with pytest.raises(RuntimeError, match="No space left on device"):
        _shared_buffer(torch.zeros(4, dtype=torch.uint8), 1000)


def test_predict_on_a_folder_without_images_exits_1(tiny_path: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    assert main(["predict", str(tmp_path), "--model", str(tiny_path), "--detector", "none", "--quiet"]) == 1
    assert f"no image or video files found in {tmp_path}" in caplog.text


@pytest.mark.parametrize("scoring", [1, 2, 3])
@pytest.mark.parametrize("image_batch,workers,decode_batch", [(64, 4, 32), (256, 8, 32), (16, 1, 16), (3, 2, 3), (5, 16, 5)])
def test_decode_prefetch_keeps_an_image_batch_ahead_of_those_scored(image_batch: int, workers: int, decode_batch: int,
                                                                    scoring: int) -> None:
    from lrfer.cli import decode_prefetch

    prefetch = decode_prefetch(image_batch, workers, decode_batch, scoring)
    queued = prefetch * workers * decode_batch
    ahead = (scoring + 1) * image_batch
    assert prefetch >= 1
    assert queued >= ahead
    assert prefetch == 1 or (prefetch - 1) * workers * decode_batch < ahead


def test_models_reads_the_validation_accuracy_lrfer_train_writes() -> None:
    from lrfer.cli import publictest_accuracy

    assert publictest_accuracy({"val_accuracy": 0.5, "val_macro_f1": 0.4}) == 0.5
    assert publictest_accuracy({"publictest_accuracy": 0.6, "publictest_accuracy_by_px": {"8": 0.3}}) == 0.6


def test_a_hub_warning_is_printed_once() -> None:
    """huggingface_hub prints through a handler of its own: through the root handler of `lrfer` too,
    each of its warnings came out twice (23 lines for one failed download)."""
    code = ("import logging, huggingface_hub.utils.logging; from lrfer.cli import main; main(['models', 'none*']); "
            "logging.getLogger('huggingface_hub.file_download').warning('Hub says so')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stderr.count("Hub says so") == 1, run.stderr


def test_python_dash_m_lrfer_runs_the_command_line() -> None:
    """Where the console script's folder is not on PATH, ``python -m lrfer`` is the same command."""
    listed = subprocess.run([sys.executable, "-m", "lrfer", "models"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "gmenet-fer2013-16px" in listed.stdout
    unknown = subprocess.run([sys.executable, "-m", "lrfer", "info", "gmenet-raf-16px"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode != 0 and "gmenet-fer2013-16px" in unknown.stderr


def test_the_table_shows_names_the_terminal_cannot_encode() -> None:
    """On an ASCII or cp1252 stdout (LANG=C, a Windows console) a name such as 'fäce 日.jpg' stopped the
    run with a UnicodeEncodeError."""
    import io

    from lrfer.cli import TableWriter

    for encoding, shown in (("ascii", "f?ce ?.jpg"), ("cp1252", "f\xe4ce ?.jpg"), ("utf-8", "f\xe4ce \u65e5.jpg")):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding=encoding)
        TableWriter(["file", "face", "label"], stream)({"file": "f\xe4ce \u65e5.jpg", "face": 0, "label": "happy"})
        stream.flush()
        assert raw.getvalue().decode(encoding).splitlines()[1].startswith(shown)


def test_predict_hands_its_options_to_the_recognizer(photos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--model, --device, --detector, --min-face, --precision, --no-close-ups and --tta reach lrfer.load, --batch-size
    and --image-batch every predict call, and an image's second face is its row 'face' 1: with one face per
    crop and options that leave the rows alike, the other tests passed with any of them ignored. A detector
    name ignores case, as in Python (--detector MTCNN was an invalid choice)."""
    import lrfer
    from lrfer.results import Face

    loaded: list[dict[str, Any]] = []
    calls: list[tuple[int, int]] = []

    class TwoFacesEach:
        """A recognizer that finds two faces in every image."""

        device, classes = torch.device("cpu"), CLASSES

        def predict(self, images: list[np.ndarray], batch_size: int, streams: int) -> list[list[Face]]:
            assert streams == 1  # the batches are overlapped by --streams, not the images within one
            calls.append((len(images), batch_size))
            probs = {c: 1.0 if c == "happy" else 0.0 for c in CLASSES}
            return [[Face((x, 0.0, x + 10, 10.0), ((math.nan, math.nan),) * 5, 0.9, 10.0, "happy", probs)
                     for x in (0.0, 20.0)] for _ in images]

    monkeypatch.setattr(lrfer, "load", lambda model, **options: loaded.append({"model": model, **options}) or TwoFacesEach())
    out = tmp_path / "rows.csv"
    assert main(["predict", str(photos), "--model", "mine.safetensors", "--device", "cpu", "--detector", "HAAR",
                 "--min-face", "30", "--precision", "bf16", "--no-close-ups", "--batch-size", "7", "--image-batch", "3",
                 "--workers", "0", "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "weights"), "--tta"]) == 0
    assert loaded == [{"model": "mine.safetensors", "device": "cpu", "detector": "haar", "min_face": 30,
                       "precision": "bf16", "close_ups": False, "cache_dir": tmp_path / "weights", "tta": True}]
    assert calls == [(3, 7), (1, 7)]
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["face"]), float(r["x1"])) for r in rows] == [(0, 0.0), (1, 20.0)] * len(IMAGE_NAMES)
    assert main(["predict", str(photos), "--detector", "none", "--workers", "0", "--quiet", "--out", str(out)]) == 0
    assert loaded[1]["detector"] is None and loaded[1]["model"] is None


class FakeTerminal:
    """A text stream that says it is a terminal, so tqdm draws its bar into it."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def console_and_a_warning_per_batch(stream: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The root handler that logging.basicConfig sets up outside pytest, on ``stream``, and a warning
    logged before the rows of each batch of images are written."""
    import logging

    import lrfer.cli as cli

    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("lrfer: %(levelname)s: %(message)s"))
    write_batch = cli._write_batch

    def warn_then_write(*args: Any) -> None:
        cli.logger.warning("something to say")
        write_batch(*args)

    monkeypatch.setattr(cli, "_write_batch", warn_then_write)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def test_warnings_are_written_above_the_progress_bar(photos: Path, tiny_path: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning logged while the bar is drawn starts a line of its own: it was written after the bar's
    text, on the bar's line ("  25%|##5  | 1/4 [00:00<00:00]lrfer: WARNING: ...")."""
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with console_and_a_warning_per_batch(terminal, monkeypatch):
        args = [a for a in predict_args(photos, tiny_path, "--out", str(tmp_path / "rows.csv"), "--workers", "0",
                                        "--image-batch", "1") if a != "--quiet"]
        assert main(args) == 0
    assert "4/4" in terminal.text  # the bar was drawn
    warnings = [line for line in terminal.text.split("\n") if "something to say" in line]
    assert len(warnings) == len(IMAGE_NAMES)
    for line in warnings:
        assert line.rsplit("\r", 1)[-1] == "lrfer: WARNING: something to say", repr(line)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGCHLD"), reason="POSIX signals")
def test_a_child_exit_not_yet_handled_when_sigterm_stops_the_run_is_no_error() -> None:
    """The workers die of the group's SIGTERM too: a SIGCHLD that had arrived but that Python had not
    handled yet, when the SIGTERM handler set SIGCHLD aside, raised "OSError: Signal 17 ignored due to
    race condition" during the shutdown (a traceback before "stopped by SIGTERM", now and then).
    Both signals are made to arrive at once, in a process of one thread: Python then runs SIGTERM's
    handler first (the lower number)."""
    script = ("import os, signal\n"
              "from lrfer.cli import Terminated, sigterm_as_interrupt\n"
              "signal.signal(signal.SIGCHLD, lambda *args: None)  # as torch's DataLoader sets one\n"
              "both = {signal.SIGTERM, signal.SIGCHLD}\n"
              "try:\n"
              "    with sigterm_as_interrupt():\n"
              "        signal.pthread_sigmask(signal.SIG_BLOCK, both)\n"
              "        os.kill(os.getpid(), signal.SIGCHLD)\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        signal.pthread_sigmask(signal.SIG_UNBLOCK, both)\n"
              "        sum(range(1000))\n"
              "except Terminated:\n"
              "    sum(range(1000))  # where the SIGCHLD is handled\n"
              "    print('stopped')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "stopped\n", "")


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP") or not hasattr(os, "waitid"), reason="POSIX signals")
def test_workers_dying_late_of_the_groups_sigterm_are_no_error(photos: Path, tiny_path: Path, tmp_path: Path) -> None:
    """A group's SIGTERM that came while the run waited for the decoding workers' next batch left the
    DataLoader's iterator in frames of the exception's traceback: its workers were shut down only once
    ``main`` had handled the exception, after ``sigterm_as_interrupt`` had put torch's SIGCHLD handler
    back. A worker slow to die of the signal (a busy machine) then made that handler raise
    "RuntimeError: DataLoader worker (pid N) is killed by signal: Terminated": exit status 1 and a
    traceback, now and then. Here the workers are stopped when the SIGTERM comes, and go on (to die of
    it) a second later; the command's warning waits until they are dead and their SIGCHLD handled."""
    script = (
        "import logging, multiprocessing, multiprocessing.queues, os, signal, sys, threading, time\n"
        "import lrfer.cli as cli, lrfer.io as io\n"
        "unpack, workers = io.unpack_images, []\n"
        "def go_on():\n"
        "    for pid in workers:\n"
        "        os.kill(pid, signal.SIGCONT)\n"
        "def wait_for_sigterm(queue, *args, **kwargs):  # in the iterator, for the workers' next batch\n"
        "    try:\n"
        "        workers.extend(p.pid for p in multiprocessing.active_children())\n"
        "        for pid in workers:\n"
        "            os.kill(pid, signal.SIGSTOP)\n"
        "            os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOWAIT)\n"
        "        print('stopped', *workers, file=sys.stderr, flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        threading.Timer(1.0, go_on).start()\n"
        "def unpack_once(*args):  # the workers have started; the iterator's queue is the only one read here\n"
        "    io.unpack_images = unpack\n"
        "    multiprocessing.queues.Queue.get = wait_for_sigterm\n"
        "    return unpack(*args)\n"
        "class WorkersDead(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        if 'stopped by' not in record.getMessage():\n"
        "            return\n"
        "        for pid in workers:\n"
        "            try:\n"
        "                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)\n"
        "            except ChildProcessError:  # joined already\n"
        "                pass\n"
        "        for _ in range(20):\n"
        "            time.sleep(0.01)  # where a SIGCHLD is handled\n"
        "io.unpack_images = unpack_once\n"
        "logging.getLogger('lrfer').addHandler(WorkersDead())\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    args = predict_args(photos, tiny_path, "--out", str(tmp_path / "rows.csv"), "--workers", "2", "--image-batch", "1",
                        "--streams", "1")
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    try:
        stopped = proc.stderr.readline()
        assert stopped.startswith("stopped "), stopped + proc.stderr.read()
        # from another process, as `timeout` sends it: torch's workers take their parent's SIGTERM
        # for a request to exit, with status 0
        os.killpg(proc.pid, signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:  # stopped workers left behind would hold the pipe open
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert (proc.returncode, rest) == (143, "lrfer: WARNING: stopped by SIGTERM\n"), rest


@pytest.mark.parametrize("streams", ["1", "2"])
@pytest.mark.parametrize("to_group", [False, True], ids=["process", "process-group"])
def test_sigterm_stops_a_run_with_whole_rows_and_no_workers_left(photos: Path, tiny_path: Path, tmp_path: Path,
                                                                   to_group: bool, streams: str) -> None:
    """SIGTERM (``docker stop``: the process; ``timeout``, systemd: its whole group) killed ``lrfer
    predict`` on the spot: rows in the output's buffer were lost (the last one could be cut) and
    decoding workers outlived it. Now it stops as on Ctrl-C: exit status 143, a message, whole rows,
    its workers gone with it, and no error of workers killed by the same signal ("Exception ignored in
    ... DataLoader worker (pid N) is killed by signal: Terminated"). Each batch of one image is slowed
    down so that the signal comes while the run is on its way; with ``--streams 2`` too (the process
    exits once the batches being scored have ended on their threads)."""
    folder = tmp_path / "many"
    for i in range(40):
        shutil.copytree(photos, folder / str(i))
    out = tmp_path / "rows.csv"
    script = (
        "import multiprocessing, sys, time\n"
        "import lrfer.cli as cli\n"
        "write = cli._write_batch\n"
        "def slowly(*args):\n"
        "    write(*args)\n"
        "    print('scored', *[p.pid for p in multiprocessing.active_children()], file=sys.stderr, flush=True)\n"
        "    time.sleep(0.2)\n"
        "cli._write_batch = slowly\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    args = predict_args(folder, tiny_path, "--out", str(out), "--workers", "2", "--image-batch", "1", "--streams", streams)
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    scored: list[list[str]] = []
    for line in iter(proc.stderr.readline, ""):
        if line.startswith("scored"):
            scored.append(line.split())
            if len(scored) == 3:
                break
    workers = {int(pid) for line in scored for pid in line[1:]}
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, rest
    assert rest.strip().splitlines() == ["lrfer: WARNING: stopped by SIGTERM"], rest
    assert workers, "the run decoded in worker processes"
    for pid in workers:  # joined before the command returned, not orphans left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = out.read_text()
    assert text.endswith("\n")
    rows = list(csv.DictReader(text.splitlines()))
    assert 3 <= len(rows) < 40 * len(IMAGE_NAMES)
    assert all(None not in row and None not in row.values() for row in rows)


def test_ctrl_c_is_exit_status_130_with_a_message(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C ended a command silently; it now says so."""
    import lrfer.cli as cli

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    import signal

    monkeypatch.setattr(cli, "cmd_models", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level("WARNING", logger="lrfer"):
        assert main(["models"]) == 130
    assert "stopped by Ctrl-C" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before  # the command's SIGTERM handler is gone with it


def test_warnings_stay_off_stdout_with_the_oldest_tqdm(photos: Path, tiny_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """tqdm 4.60 (the oldest lrfer supports) redirects logging with ``tqdm.write(message)``, no file:
    stdout, where the table of rows is written."""
    import logging

    from tqdm.contrib import logging as tqdm_logging

    def emit_as_tqdm_4_60(self: Any, record: logging.LogRecord) -> None:
        self.tqdm_class.write(self.format(record))

    monkeypatch.setattr(tqdm_logging._TqdmLoggingHandler, "emit", emit_as_tqdm_4_60)
    with console_and_a_warning_per_batch(sys.stderr, monkeypatch):
        assert main(predict_args(photos, tiny_path, "--workers", "0")) == 0
    out, err = capsys.readouterr()
    assert "something to say" not in out
    assert "something to say" in err


def test_out_files_have_every_column_in_order_and_null_for_nan(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """With a video among the inputs, image rows leave frame/time_s empty (null in JSONL), columns in
    row_columns order, a NaN (det_score without a detector) null in JSONL; suffixes in any case; no
    faces: a header alone (CSV), an empty file (JSONL), nothing on stdout."""
    from lrfer.cli import open_writer

    classes = ["happy", "sad"]
    columns = row_columns(classes, video=True)
    row = {"file": "a.jpg", "face": 0, "x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0, "face_px": 2.0,
           "det_score": float("nan"), "label": "sad", "happy": 0.25, "sad": 0.75}
    with open_writer(tmp_path / "rows.JSONL", classes, video=True) as write:
        write(row)
    (line,) = (tmp_path / "rows.JSONL").read_text().splitlines()
    data = json.loads(line)
    assert list(data) == columns
    assert data["frame"] is None and data["time_s"] is None and data["det_score"] is None and data["sad"] == 0.75
    with open_writer(tmp_path / "rows.Csv", classes, video=True) as write:
        write(row)
    with open(tmp_path / "rows.Csv", newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == columns and dict(zip(columns, lines[1]))["frame"] == "" and lines[1][-1] == "0.75"
    for name in ("empty.csv", "empty.jsonl"):
        with open_writer(tmp_path / name, classes):
            pass
    assert (tmp_path / "empty.csv").read_text().splitlines() == [",".join(row_columns(classes))]
    assert (tmp_path / "empty.jsonl").read_text() == ""
    with open_writer(None, classes):
        pass
    assert capsys.readouterr().out == ""


def test_the_table_rounds_numbers_and_prints_its_header_once() -> None:
    import io

    from lrfer.cli import TableWriter

    stream = io.StringIO()
    write = TableWriter(row_columns(["happy"]), stream)
    row = {"file": "a.jpg", "face": 0, "x1": 12.345, "y1": 0.0, "x2": 40.0, "y2": 30.06, "face_px": 40.0,
           "det_score": 0.98765, "label": "happy", "happy": 0.12345}
    write(row)
    write({**row, "face": 1})
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == row_columns(["happy"]) and len(lines) == 3
    assert lines[1].split() == ["a.jpg", "0", "12.3", "0.0", "40.0", "30.1", "40.0", "0.988", "happy", "0.123"]
    assert lines[2].split()[1] == "1"


def test_a_newline_in_a_file_name_keeps_a_table_row_on_one_line() -> None:
    """A file name with a newline (or a tab) split its row of the stdout table: the rest of the row
    started a line of its own, under the next row's file column."""
    import io

    from lrfer.cli import TableWriter

    stream = io.StringIO()
    TableWriter(row_columns(["happy"]), stream)({"file": "new\nline\t.jpg", "face": 0, "label": "happy", "happy": 0.5})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == ["new?line?.jpg", "0"]


def test_an_annotated_copy_never_replaces_an_input_not_read_yet(tmp_path: Path) -> None:
    """--annotate into a subfolder of an input folder, with --overwrite: the copy of top/a.png (read
    first) must not replace top/sub/a.png, an input read later."""
    from lrfer.cli import AnnotatedPaths

    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    files = [top / "a.png", top / "sub" / "a.png"]
    for path in files:
        path.write_bytes(b"x")
    paths = AnnotatedPaths(top / "sub", [str(top)], files, overwrite=True)
    assert paths.target(files[0], Path("a.png")) == top / "sub" / "a-2.png"
    assert paths.target(files[1], Path("sub/a.png")) == top / "sub" / "sub" / "a.png"


def test_an_image_batch_goes_on_as_soon_as_it_is_whole_and_small_ones_are_decoded_as_such(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """regroup hands a full image batch on before it reads the next decoded batch (inference overlaps
    decoding); image batches smaller than DECODE_BATCH are decoded in batches of their own size, not
    after DECODE_BATCH files."""
    import lrfer.cli as cli
    from lrfer.io import iter_image_files

    read: list[list[int]] = []

    def decoded() -> Iterator[list[int]]:
        for batch in ([1, 2], [3, 4], [5]):
            read.append(batch)
            yield batch

    batches = cli.regroup(decoded(), 2)
    assert next(batches) == [1, 2] and len(read) == 1
    assert list(batches) == [[3, 4], [5]]
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 5, 3), i, dtype=np.uint8))
    sizes: list[int] = []
    real_loader = torch.utils.data.DataLoader

    def recording_loader(*args: object, **kwargs: object) -> object:
        sizes.append(int(kwargs["batch_size"]))  # type: ignore[call-overload]
        return real_loader(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.utils.data, "DataLoader", recording_loader)
    batches_of_2 = list(cli.iter_decoded(iter_image_files([tmp_path]), workers=0, image_batch=2))
    assert sizes == [2] and [[i for i, _ in b] for b in batches_of_2] == [[0, 1], [2, 3], [4]]


def test_annotated_copies_never_replace_an_input_video_either(tiny_path: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The videos of a run are inputs too: with --overwrite into a subfolder of the input folder, the
    copy of top/v.mp4 must not replace top/sub/v.mp4, scored after it."""
    import lrfer.cli as cli

    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    for rel in ("v.mp4", "sub/v.mp4"):
        (top / rel).write_bytes(b"not decoded: the run stops before")
    cv2.imwrite(str(top / "a.png"), np.full((20, 20, 3), 90, np.uint8))
    made: list[cli.AnnotatedPaths] = []

    class Stopping(cli.AnnotatedPaths):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)
            raise ValueError("stopped by the test")

    monkeypatch.setattr(cli, "AnnotatedPaths", Stopping)
    assert main(predict_args(top, tiny_path, "--annotate", str(top / "sub"), "--overwrite", "--workers", "0")) == 1
    assert made[0].target(top / "v.mp4", Path("v.mp4")) == top / "sub" / "v-2.mp4"


def test_an_error_of_in_process_decoding_is_raised_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only workers fall back to in-process decoding; an error there stops the run (retried, the same
    error would repeat for ever)."""
    import lrfer.cli as cli
    import lrfer.io as io_mod
    from lrfer.io import iter_image_files

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 5, 3), i, dtype=np.uint8))
    real, calls = io_mod.pack_images, []

    def failing_once(batch: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("no memory left")
        return real(batch)

    monkeypatch.setattr(io_mod, "pack_images", failing_once)
    with pytest.raises(RuntimeError, match="no memory left"):
        list(cli.iter_decoded(iter_image_files([tmp_path]), workers=0, image_batch=2))


def test_predict_ends_with_a_summary_unless_quiet(tmp_path: Path, tiny_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """With no face found, stdout's table stayed empty and nothing said what had been scored."""
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((64, 48, 3), 128, np.uint8))
    args = ["predict", str(photo), "--model", str(tiny_path), "--detector", "blazeface", "--workers", "0"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out == "" and "lrfer: 1 image(s), 0 video frame(s): 0 face(s)" in err
    assert main([*args, "--quiet"]) == 0
    assert "face(s)" not in capsys.readouterr().err
