"""``lrfer train`` / ``lrfer eval`` end to end on tiny synthetic data (one epoch, width-8 models, CPU)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from lrfer.cli import main
from lrfer.constants import CLASSES
from lrfer.train.cli import _dataset_name, _default_val
from lrfer.train.datasets import load_faces
from lrfer.models import build_model
from lrfer.train.recipes import predict_logits
from lrfer.zoo import load_model, save_weights


pytestmark = pytest.mark.usefixtures("one_thread")


def write_npz(path: Path, n: int, seed: int) -> Path:
    """Faces whose brightness codes the class, in the zoo's class order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 7).astype(np.int64)
    images = np.clip(rng.integers(0, 40, (n, 48, 48)) + 28 * labels[:, None, None], 0, 255).astype(np.uint8)
    np.savez(path, images=images, labels=labels, classes=np.array(CLASSES))
    return path


def write_rafdb(root: Path, n_train: int = 64, n_test: int = 21) -> Path:
    """Miniature RAF-DB 'basic' layout: 100x100 RGB aligned images and the label list."""
    import cv2

    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n_train + n_test):
        stem = f"train_{i + 1:05d}" if i < n_train else f"test_{i - n_train + 1:04d}"
        raf_label = i % 7 + 1
        image = rng.integers(0, 60, (100, 100, 3)) + 25 * raf_label
        cv2.imwrite(str(root / "Image" / "aligned" / f"{stem}_aligned.jpg"), image.astype(np.uint8))
        lines.append(f"{stem}.jpg {raf_label}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_npz(folder / "tiny-publictest.npz", 70, seed=1)
    return write_npz(folder / "tiny-train.npz", 224, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> tuple[Path, str]:
    """``lrfer train`` on the tiny npz (publictest sibling found automatically); returns (weights, stdout)."""
    out = tmp_path_factory.mktemp("out") / "baseline-tiny-16px.safetensors"
    argv = ["train", "--arch", "baseline", "--data", str(tiny_npz), "--resolution", "16", "--out", str(out),
            "--epochs", "1", "--batch-size", "32", "--dataset-name", "tiny", "--license", "CC-BY-NC-4.0",
            "--data-license", "Tiny faces: CC0", "--device", "cpu"]
    buffer = io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["lrfer", *argv]  # what the console script sees; the entry records the command
    try:
        with contextlib.redirect_stdout(buffer):
            status = main(argv)
    finally:
        sys.argv = saved_argv
    assert status == 0, buffer.getvalue()
    return out, buffer.getvalue()


def test_train_writes_loadable_weights_with_entry(trained: tuple[Path, str], tiny_npz: Path) -> None:
    out, stdout = trained
    assert out.is_file()
    assert f"wrote {out}" in stdout and "baseline-tiny-16px" in stdout
    assert "val_accuracy=" in stdout
    assert out.with_suffix(".run").joinpath("checkpoint.json").is_file()  # resumable work dir
    model = load_model(out)
    spec = model.pretrained_cfg
    assert spec.name == "baseline-tiny-16px"
    assert spec.arch == "baseline" and spec.resolution == 16 and spec.dataset == "tiny"
    assert dict(spec.config) == {"width": 32, "input_size": 16}
    assert spec.classes == CLASSES
    assert spec.temperature > 0 and spec.temperature != 1.0
    assert set(spec.metrics) == {"val_accuracy", "val_macro_f1", "val_ece"}
    assert all(0 <= v <= 1 for v in spec.metrics.values())
    assert spec.recipe.startswith("lrfer train --arch baseline")
    assert shlex.split(spec.recipe)[1:] == ["train", "--arch", "baseline", "--data", str(tiny_npz), "--resolution", "16",
                                            "--out", str(out), "--epochs", "1", "--batch-size", "32",
                                            "--dataset-name", "tiny", "--license", "CC-BY-NC-4.0",
                                            "--data-license", "Tiny faces: CC0", "--device", "cpu"]
    assert spec.license == {"code": "MIT", "weights": "CC-BY-NC-4.0", "data": "Tiny faces: CC0"}
    assert spec.seed == 0
    # the recorded validation accuracy is the accuracy of the saved (fp16) weights on the publictest sibling
    val = load_faces(tiny_npz.with_name("tiny-publictest.npz"))
    accuracy = float((predict_logits(model, val.images, 16).argmax(1).numpy() == val.labels).mean())
    assert accuracy == pytest.approx(spec.metrics["val_accuracy"], abs=0.03)


def test_eval_prints_table_for_each_resolution(trained: tuple[Path, str], tiny_npz: Path,
                                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out, _ = trained
    plot = tmp_path / "acc.png"
    argv = ["eval", "--model", str(out), "--data", str(tiny_npz.with_name("tiny-publictest.npz")),
            "--resolutions", "8,16", "--details", "--calibrate-on", str(tiny_npz)]
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    if has_mpl:
        argv += ["--plot", str(plot)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "70 faces" in printed
    lines = printed.splitlines()
    assert "| model | 8 px | 16 px |" in lines
    row = next(line for line in lines if line.startswith("| baseline-tiny-16px |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 3 and all(0 <= float(c) <= 100 for c in cells[1:])
    assert any(line.startswith("| px | accuracy | macro-F1 | ECE |") for line in lines)
    if has_mpl:
        assert plot.read_bytes()[:4] == b"\x89PNG"


def test_train_on_rafdb_names_raf_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raf = write_rafdb(tmp_path / "basic")
    out = tmp_path / "mine.safetensors"
    argv = ["train", "--data", str(raf), "--arch", "baseline", "--resolution", "16", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "baseline-raf-16px" in printed
    spec = load_model(out).pretrained_cfg
    assert spec.name == "baseline-raf-16px"
    assert spec.dataset == "raf" and spec.resolution == 16
    assert "val_accuracy" in spec.metrics  # validated on RAF-DB's test split by default

    assert main(["eval", "--model", str(out), "--data", str(raf), "--resolutions", "16,48"]) == 0
    printed = capsys.readouterr().out
    assert "21 faces" in printed  # the test split
    assert "| model | 16 px | 48 px |" in printed.splitlines()


def test_dataset_name_and_default_val(tmp_path: Path) -> None:
    assert _dataset_name(tmp_path / "fer2013-train.npz") == "fer2013"
    assert _dataset_name(tmp_path / "my_faces.npz") == "myfaces"
    assert _dataset_name(tmp_path / "My Faces") == "myfaces"  # folders of class folders: letters and digits only
    assert _dataset_name(tmp_path / "CK+") == "ckplus"
    with pytest.raises(ValueError, match="--dataset-name"):
        _dataset_name(tmp_path / "+-.npz".replace("+", ""))
    raf = write_rafdb(tmp_path / "basic", 7, 7)
    assert _dataset_name(raf) == "raf"
    assert _default_val(raf) == raf
    train = write_npz(tmp_path / "fer2013-train.npz", 7, 0)
    assert _default_val(train) is None  # no sibling yet
    sibling = write_npz(tmp_path / "fer2013-publictest.npz", 7, 1)
    assert _default_val(train) == sibling


def test_a_folder_with_a_dot_in_its_name_keeps_what_follows_the_dot(tmp_path: Path) -> None:
    """The name was taken from the data's stem, as for a file: the folder of class folders `faces.2024`
    named its model `...-faces-16px`, as `faces.2023` did."""
    for folder in ("faces.2024", "faces.2023"):
        (tmp_path / folder).mkdir()
    assert _dataset_name(tmp_path / "faces.2024") == "faces2024"
    assert _dataset_name(tmp_path / "faces.2023") == "faces2023"
    (tmp_path / "faces.v2.npz").write_bytes(b"")
    assert _dataset_name(tmp_path / "faces.v2.npz") == "facesv2"  # a file: its suffix goes


def test_dataset_name_leaves_out_a_trailing_split_word(tmp_path: Path) -> None:
    """Only fer2013-* files lost their split: raf-train.npz made a model named gmenet-raftrain-16px, although
    the default validation set is looked for as any <name>-train.npz's <name>-publictest.npz sibling."""
    assert _dataset_name(tmp_path / "raf-train.npz") == "raf"
    assert _dataset_name(tmp_path / "raf_publictest.npz") == "raf"
    assert _dataset_name(tmp_path / "ck+-test.npz") == "ckplus"
    assert _dataset_name(tmp_path / "my faces-val") == "myfaces"  # a folder of class folders
    assert _dataset_name(tmp_path / "fer2013-privatetest.npz") == "fer2013"  # the zoo's names stay
    assert _dataset_name(tmp_path / "fer2013plus-train.npz") == "fer2013plus"
    assert _dataset_name(tmp_path / "train") == "train"  # nothing but a split word: kept
    assert _dataset_name(tmp_path / "trainset.npz") == "trainset"  # not a split word
    train = write_npz(tmp_path / "raf_train.npz", 7, 0)
    sibling = write_npz(tmp_path / "raf_publictest.npz", 7, 1)
    assert _default_val(train) == sibling
    write_npz(tmp_path / "strain.npz", 7, 2)
    write_npz(tmp_path / "spublictest.npz", 7, 3)
    assert _default_val(tmp_path / "strain.npz") is None  # "train" inside a word is not the split


def test_the_default_validation_file_is_found_in_any_case(tmp_path: Path) -> None:
    """``--data FER2013-Train.npz`` looked for ``FER2013-publictest.npz`` only: ``FER2013-PublicTest.npz``
    beside it (the split word in the case of the dataset's own files) was not found, and the model was
    exported uncalibrated. The file is taken from the folder's listing, in the case of ``train`` first."""
    for train_name, val_name in (("FER2013-Train.npz", "FER2013-PublicTest.npz"), ("FER2013-Train.npz", "FER2013-PUBLICTEST.npz"),
                                 ("faces_TRAIN.npz", "faces_PublicTest.npz"), ("faces-train.npz", "faces-PublicTest.npz")):
        folder = tmp_path / f"{train_name}-{val_name}"
        folder.mkdir()
        train = write_npz(folder / train_name, 7, 0)
        assert _default_val(train) is None
        sibling = write_npz(folder / val_name, 7, 1)
        assert _default_val(train) == sibling, (train_name, val_name)
    folder = tmp_path / "several"
    folder.mkdir()
    train = write_npz(folder / "FER2013-Train.npz", 7, 0)
    for name in ("FER2013-publictest.npz", "FER2013-PUBLICTEST.npz", "FER2013-PublicTest.npz", "fer2013-PublicTest.npz"):
        write_npz(folder / name, 7, 1)
    assert _default_val(train) == folder / "FER2013-PublicTest.npz"  # the case of --data's "Train" first
    (folder / "FER2013-PublicTest.npz").unlink()
    assert _default_val(train) == folder / "FER2013-publictest.npz"  # then lower case
    (folder / "FER2013-publictest.npz").unlink()
    assert _default_val(train) == folder / "FER2013-PUBLICTEST.npz"  # then any other; the name's own case is kept
    (folder / "FER2013-PUBLICTEST.npz").unlink()
    (folder / "FER2013-PublicTest.npz").mkdir()  # a folder of that name is not the file
    assert _default_val(train) is None
    from lrfer.train.cli import expected_val

    assert expected_val(tmp_path / "FER2013-Train.npz") == tmp_path / "FER2013-PublicTest.npz"
    assert expected_val(tmp_path / "fer2013_TRAIN.npz") == tmp_path / "fer2013_PUBLICTEST.npz"
    assert expected_val(tmp_path / "myfaces") is None and expected_val(tmp_path / "fer2013-test.npz") is None


def test_the_default_validation_file_is_found_in_a_folder_that_cannot_be_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins down _default_val's fallback where the folder's listing fails (a folder with execute but not read
    permission): the name in --data's case, then in lower case, are tried one by one."""
    import lrfer.train.cli as train_cli

    def unlistable(path: object) -> list[str]:
        raise PermissionError(13, "Permission denied", str(path))

    train = write_npz(tmp_path / "FER2013-Train.npz", 7, 0)
    lower = write_npz(tmp_path / "FER2013-publictest.npz", 7, 1)
    monkeypatch.setattr(train_cli.os, "listdir", unlistable)
    assert _default_val(train) == lower
    titled = write_npz(tmp_path / "FER2013-PublicTest.npz", 7, 2)
    assert _default_val(train) == titled  # the case of --data's "Train" first


def write_class_folders(root: Path, per_class: int = 2) -> Path:
    """``root/<class>/<i>.png``: 48x48 gray faces whose brightness codes the class."""
    import cv2

    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i}.png"), np.full((48, 48), 20 + 30 * k + i, np.uint8))
    return root


def test_train_and_eval_on_the_current_folder_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`lrfer train --data .` inside a folder of class folders failed: "cannot make a dataset name from ''",
    and with --dataset-name "PosixPath('.') has an empty name" (the default validation set's sibling);
    `lrfer eval --data .` printed "Accuracy (%) on , 14 faces"."""
    monkeypatch.chdir(write_class_folders(tmp_path / "myfaces"))
    out = tmp_path / "out" / "x.safetensors"
    assert run_train(["--arch", "baseline", "--config", "width=8", "--data", ".", "--resolution", "16",
                      "--out", str(out)]) == 0
    assert load_model(out).pretrained_cfg.name == "baseline-myfaces-16px"
    assert run_train(["--arch", "baseline", "--config", "width=8", "--data", ".", "--resolution", "16",
                      "--dataset-name", "mine", "--out", str(tmp_path / "out" / "y.safetensors")]) == 0
    assert load_faces(".").name == "myfaces"
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", ".", "--resolutions", "16"]) == 0
    assert "Accuracy (%) on myfaces, 14 faces" in capsys.readouterr().out  # was "on , 14 faces"


def test_train_rejects_bad_resolution_for_hr_arch(tmp_path: Path, tiny_npz: Path) -> None:
    out = tmp_path / "x.safetensors"
    status = main(["train", "--arch", "resnet18", "--data", str(tiny_npz), "--resolution", "16", "--out", str(out),
                   "--epochs", "1", "--device", "cpu"])
    assert status == 1
    assert not out.exists()


def run_train(argv: list[str]) -> int:
    return main(["train", *argv, "--epochs", "1", "--device", "cpu"])


def test_eval_gives_models_with_one_name_a_row_each(trained: tuple[Path, str], tiny_npz: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = trained
    copy = tmp_path / out.name
    copy.write_bytes(out.read_bytes())
    assert main(["eval", "--model", str(out), "--model", str(copy), "--data", str(tiny_npz),
                 "--resolutions", "16", "--details"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| baseline-tiny-16px")]
    assert [row.split(" | ")[0] for row in rows] == [f"| baseline-tiny-16px ({out})", f"| baseline-tiny-16px ({copy})"]
    assert f"baseline-tiny-16px ({out})" in lines and f"baseline-tiny-16px ({copy})" in lines  # --details


def test_eval_same_model_twice_gets_numbered_rows() -> None:
    from lrfer.train.cli import _row_labels

    assert _row_labels([("a", "a"), ("b", "x/b.safetensors"), ("b", "b"), ("a", "a")]) == [
        "a (a) #1", "b (x/b.safetensors)", "b (b)", "a (a) #2"]


@pytest.mark.parametrize("resolutions, message", [
    ("0", "0 px is not a face size 1..48"), ("-8", "-8 px is not a face size 1..48"),
    ("16,64", "64 px is not a face size 1..48"), ("16,x", "'x' is not a whole number"),
])
def test_eval_refuses_bad_resolutions(tmp_path: Path, caplog: pytest.LogCaptureFixture, resolutions: str,
                                      message: str) -> None:
    status = main(["eval", "--model", "gmenet-fer2013-16px", "--data", str(tmp_path / "missing.npz"),
                   "--resolutions", resolutions])
    assert status == 1
    assert message in caplog.text


def test_eval_names_a_missing_path_or_model_before_reading_the_data(tiny_npz: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt model or --calibrate-on path was reported after --data was read (minutes for class folders)."""
    from lrfer.train import datasets

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read")

    monkeypatch.setattr(datasets, "load_faces", no_reading)
    assert main(["eval", "--model", "gmenet-fer2013-16pxx", "--data", str(tiny_npz)]) == 1
    assert "gmenet-fer2013-16px" in caplog.text
    assert main(["eval", "--model", "gmenet-fer2013-16px", "--data", str(tiny_npz),
                 "--calibrate-on", str(tmp_path / "missing.npz")]) == 1
    assert "--calibrate-on" in caplog.text and "missing.npz: no such file or folder" in caplog.text


def test_train_refuses_to_resume_another_run(trained: tuple[Path, str], tiny_npz: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Same --out (so the same default work dir <out>.run) but another seed or other data."""
    out, _ = trained
    written = out.read_bytes()
    common = ["--arch", "baseline", "--resolution", "16", "--out", str(out), "--batch-size", "32",
              "--dataset-name", "tiny"]
    assert run_train([*common, "--data", str(tiny_npz), "--seed", "1"]) == 1
    assert "seed: 0 in the checkpoint, 1 now" in caplog.text and "--work-dir" in caplog.text
    other = write_npz(tmp_path / "other.npz", 224, seed=5)
    assert run_train([*common, "--data", str(other)]) == 1
    assert "training data: " in caplog.text
    assert out.read_bytes() == written


def test_train_with_recipe_keeps_the_variant_in_the_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raf = write_rafdb(tmp_path / "basic", n_train=32, n_test=7)
    out = tmp_path / "mine.safetensors"
    assert run_train(["--recipe", "gmenet-small-fer2013-16px", "--arch", "gmenet", "--data", str(raf),
                      "--out", str(out), "--batch-size", "16"]) == 0
    assert "gmenet-small-raf-16px" in capsys.readouterr().out
    spec = load_model(out).pretrained_cfg
    assert spec.name == "gmenet-small-raf-16px" and dict(spec.config)["width"] == 16


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "gmenet-small-fer2013-16px", "--resolution", "12"],
     "--resolution 12 differs from recipe 'gmenet-small-fer2013-16px', which trains 16"),
    (["--recipe", "gmenet-small-fer2013-16px", "--arch", "baseline"], "--arch baseline differs from recipe"),
    (["--recipe", "gmenet-smal-fer2013-16px"], "unknown recipe 'gmenet-smal-fer2013-16px'; did you mean "
                                               "gmenet-small-fer2013-16px"),
    (["--arch", "gmenet"], "needs --arch and --resolution, or --recipe"),
    (["--arch", "gmenet", "--resolution", "16", "--batch-size", "0"], "batch size must be a positive whole number"),
    (["--arch", "gmenet", "--resolution", "0"], "resolution must be 1..48 px"),
    (["--arch", "gmenet", "--resolution", "64"], "resolution must be 1..48 px"),
    (["--arch", "gmenet", "--resolution", "16", "--dataset-name", "My Set"], "--dataset-name 'My Set': use lowercase"),
    (["--arch", "gmenet", "--resolution", "16", "--out-pt"], "the name must end in '.safetensors'"),
    (["--arch", "gmenet", "--resolution", "12", "--config", "width=abc"], "config width='abc': gmenet takes a whole number"),
    (["--arch", "baseline", "--resolution", "12", "--teacher", "resnet18-fer2013-48px"], "would ignore it"),
    # torch cannot seed with it: "Overflow when unpacking long long", after the data was read
    (["--arch", "baseline", "--resolution", "12", "--seed", str(2**64)], "seed must be a whole number"),
    # "Expected more than 1 value per channel when training", at the first step, after the data was read
    (["--arch", "gmenet", "--resolution", "8", "--config", "stem_stride=2", "--batch-size", "1"],
     "batch size 1 cannot train gmenet"),
    # said after the training data was read (minutes for a large folder of class folders)
    (["--arch", "baseline", "--resolution", "16", "--val", "no-such-val.npz"], "--val no-such-val.npz: no such file"),
], ids=["resolution", "arch", "unknown", "no-arch", "batch0", "res0", "res64", "dataset-name", "out-pt", "config",
        "teacher", "seed-2**64", "batch1-1x1-batchnorm", "val-missing"])
def test_train_refuses_bad_arguments_before_loading_data(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         argv: list[str], message: str) -> None:
    out = tmp_path / ("mine.pt" if "--out-pt" in argv else "mine.safetensors")
    argv = [a for a in argv if a != "--out-pt"]
    assert run_train([*argv, "--data", str(tmp_path / "missing.npz"), "--out", str(out)]) == 1
    assert message in caplog.text
    assert "missing.npz" not in caplog.text  # refused before the data was read
    assert not out.exists() and not out.with_suffix(".run").exists()


def test_train_refuses_an_empty_licence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_train(["--arch", "gmenet", "--resolution", "16", "--license", " ", "--data", str(tmp_path / "x.npz"),
                   "--out", str(tmp_path / "x.safetensors")])
    assert exit_info.value.code == 2
    assert "--license: a licence cannot be empty" in capsys.readouterr().err


def save_tiny(path: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """A random 16 px baseline saved like a zoo model, with the given classes (no training)."""
    model = build_model("baseline", width=8, input_size=16, num_classes=len(classes))
    entry = {"name": f"baseline-{path.stem}-16px", "arch": "baseline", "config": {"width": 8}, "dataset": path.stem,
             "resolution": 16, "in_chans": 1, "classes": list(classes), "mean": [0.5], "std": [0.25],
             "license": {"code": "MIT", "weights": "test only", "data": "synthetic"}}
    save_weights(model.state_dict(), path, entry)
    return path


def test_eval_refuses_a_model_with_other_classes(tiny_npz: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything is evaluated (the zoo model first in line is not scored either), and with
    --calibrate-on, where the labels used to index past the model's 3 logits."""
    other = save_tiny(tmp_path / "mine.safetensors", ("neg", "neu", "pos"))
    status = main(["eval", "--model", str(save_tiny(tmp_path / "same.safetensors")), "--model", str(other),
                   "--data", str(tiny_npz), "--resolutions", "16", "--calibrate-on", str(tiny_npz), "--device", "cpu"])
    assert status == 1
    assert ("model 'baseline-mine-16px' predicts the classes ['neg', 'neu', 'pos'] but the data is labelled with "
            f"{list(CLASSES)}") in caplog.text
    assert "| model |" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "train"])
def test_device_cuda_without_cuda_is_a_clean_error(command: str, tiny_npz: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of lrfer predict (lrfer.recognizer.resolve_device), before any data is read."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = tmp_path / "missing.npz"
    out = tmp_path / "mine.safetensors"
    argv = (["eval", "--model", str(save_tiny(tmp_path / "same.safetensors")), "--data", str(missing)]
            if command == "eval" else ["train", "--arch", "baseline", "--resolution", "16", "--data", str(missing),
                                       "--out", str(out), "--epochs", "1"])
    assert main([*argv, "--device", "cuda"]) == 1
    # in the option's terms, as lrfer predict says it (it said "use device='cpu' or 'auto'", Python's argument)
    assert "--device cuda: device 'cuda' requested but CUDA is not available; use --device cpu or auto" in caplog.text
    assert "missing.npz" not in caplog.text and not out.exists()


def test_eval_plot_into_a_new_folder_names_the_data(tiny_npz: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--plot DIR/x.png with DIR missing: the folder is made (as predict --out does), and the y-axis names
    the evaluated data, not FER2013 PublicTest."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    labels: list[str] = []
    set_ylabel = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel", lambda ax, text, *a, **k: labels.append(text) or set_ylabel(ax, text, *a, **k))
    plot = tmp_path / "new" / "folder" / "acc.png"
    data = tiny_npz.with_name("tiny-publictest.npz")
    assert main(["eval", "--model", str(save_tiny(tmp_path / "same.safetensors")), "--data", str(data),
                 "--resolutions", "8,16", "--plot", str(plot), "--device", "cpu"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert labels == ["tiny-publictest accuracy (%)"]


def test_eval_calibrates_on_rafdbs_train_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--calibrate-on a RAF-DB folder fitted the temperature on the test split it then scored."""
    import lrfer.train.evaluate as evaluate_module

    raf = write_rafdb(tmp_path / "basic", n_train=40, n_test=21)
    model = save_tiny(tmp_path / "tiny.safetensors")
    fitted_on: list[int] = []
    fit = evaluate_module.fit_temperature
    monkeypatch.setattr(evaluate_module, "fit_temperature", lambda logits, labels: fitted_on.append(len(labels)) or fit(logits, labels))
    argv = ["eval", "--model", str(model), "--data", str(raf), "--resolutions", "16", "--calibrate-on", str(raf),
            "--device", "cpu"]
    assert main(argv) == 0
    assert fitted_on == [40] and "21 faces" in capsys.readouterr().out
    assert main(argv + ["--calibrate-split", "test"]) == 0
    assert fitted_on == [40, 21]


def test_eval_on_rafdb_says_which_split_it_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lrfer eval --data RAF-DB/basic` printed "Accuracy (%) on basic, 21 faces" for either --split: the table
    did not say whether the train or the test faces were scored."""
    raf = write_rafdb(tmp_path / "basic", n_train=14, n_test=7)
    model = save_tiny(tmp_path / "tiny.safetensors")
    for split, count in (("test", 7), ("train", 14)):
        argv = ["eval", "--model", str(model), "--data", str(raf), "--resolutions", "16", "--device", "cpu"]
        assert main(argv + ["--split", split]) == 0
        assert f"Accuracy (%) on basic (RAF-DB's {split} split), {count} faces" in capsys.readouterr().out


def test_train_on_a_rafdb_copy_without_aligned_faces_fails_before_training(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A RAF-DB copy with only Image/original/ failed with "cannot read image: no such file
    .../train_00001_aligned.jpg", not saying that lrfer reads the aligned faces alone, nor where they come from."""
    raf = write_rafdb(tmp_path / "basic", n_train=7, n_test=7)
    (raf / "Image" / "aligned").rename(raf / "Image" / "original")
    out = tmp_path / "m.safetensors"
    assert main(["train", "--recipe", "gmenet-fer2013-16px", "--data", str(raf), "--out", str(out), "--epochs", "1",
                 "--device", "cpu"]) != 0
    assert "no Image/aligned/ folder" in caplog.text and "unzip RAF-DB's Image/aligned.zip" in caplog.text
    assert not out.exists()


def test_a_rafdb_copy_without_test_faces_is_told_to_choose_validation_data(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Training validates on RAF-DB's test split by default: a label list without test lines failed with
    "no 'test' entries in EmoLabel/...", saying neither that this was the validation data nor how to choose other."""
    raf = write_rafdb(tmp_path / "basic", n_train=14, n_test=0)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(raf), "--arch", "baseline", "--resolution", "16", "--out", str(out),
                 "--epochs", "1", "--device", "cpu"]) != 0
    assert "the default validation data" in caplog.text and "no 'test' entries" in caplog.text, caplog.text
    assert "choose other data with --val" in caplog.text and not out.exists()


def test_train_without_validation_data_warns_that_it_is_uncalibrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_npz(tmp_path / "faces.npz", 32, seed=1)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(data), "--arch", "baseline", "--resolution", "16", "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--dataset-name", "mine"]) == 0
    assert "no validation data" in caplog.text and "uncalibrated" in caplog.text
    assert load_model(out).pretrained_cfg.temperature == 1.0
    caplog.clear()  # a <name>-train.npz without its sibling: the warning names the file looked for
    data = write_npz(tmp_path / "Faces-Train.npz", 32, seed=1)
    assert main(["train", "--data", str(data), "--arch", "baseline", "--resolution", "16", "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--dataset-name", "mine"]) == 0
    assert "no validation data (pass --val, or put Faces-PublicTest.npz beside Faces-Train.npz)" in caplog.text


def test_train_warns_about_missing_classes_a_zoo_name_and_validating_on_its_own_data(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # --val spells the file relative to here, --data absolute
    data = tmp_path / "fer2013-mine.npz"
    rng = np.random.default_rng(2)
    np.savez(data, images=rng.integers(0, 256, (32, 48, 48), dtype=np.uint8), labels=np.array([3, 4] * 16))
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(data), "--val", data.name, "--arch", "baseline", "--resolution", "16",
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "--device", "cpu"]) == 0
    assert "no training faces of angry, disgust, fear, surprise, neutral" in caplog.text
    assert "baseline-fer2013-16px is also the name of a zoo model" in caplog.text
    assert "validating on the training data itself" in caplog.text and "RAF-DB" not in caplog.text


def test_train_takes_the_weights_suffix_in_any_case(tmp_path: Path) -> None:
    """``save_weights`` and ``lrfer.load`` take '.SAFETENSORS'; ``lrfer train`` refused it before training."""
    from lrfer.train.cli import _check_out

    _check_out(tmp_path / "mine.SAFETENSORS")
    with pytest.raises(ValueError, match=r"must end in '\.safetensors' \(e\.g\. mine\.safetensors\)"):
        _check_out(tmp_path / "mine.pt")


def test_train_refuses_a_folder_as_out_before_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An --out that is a folder trained the whole run, then failed at export with a bare IsADirectoryError
    naming a temporary file."""
    out = tmp_path / "mine.safetensors"
    out.mkdir()
    assert run_train(["--arch", "baseline", "--resolution", "16", "--data", str(tmp_path / "x.npz"),
                      "--out", str(out)]) == 1
    assert f"--out {out} is a folder" in caplog.text and not out.with_suffix(".run").exists()


@pytest.mark.parametrize("work_dir", ["faces.npz", "mine.safetensors"])
def test_train_refuses_a_file_or_out_itself_as_work_dir(work_dir: str, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """--work-dir naming a file failed with a bare "[Errno 17] File exists"; naming --out, it trained the
    whole run and failed at export."""
    data = write_npz(tmp_path / "faces.npz", 14, 0)
    out = tmp_path / "mine.safetensors"
    assert run_train(["--arch", "baseline", "--resolution", "16", "--data", str(data), "--out", str(out),
                      "--work-dir", str(tmp_path / work_dir)]) == 1
    assert ("is a file, not a folder" in caplog.text) == (work_dir == "faces.npz")
    assert ("is --out itself" in caplog.text) == (work_dir == "mine.safetensors")
    assert not out.exists()


@pytest.mark.parametrize("extra, kd_teacher", [
    ([], "gmenet-fer2013-16px"),
    (["--kd-teacher", "none"], None),
    (["--kd-teacher", "mine.safetensors"], "mine.safetensors"),
])
def test_train_kd_teacher_of_a_recipe_can_be_replaced(extra: list[str], kd_teacher: str | None,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """--teacher replaced only the 48 px teacher: the speed recipes kept gmenet-fer2013-16px's soft
    targets at full weight, on RAF-DB too, without a word."""
    from lrfer.cli import build_parser
    from lrfer.train.cli import _train_recipe

    args = build_parser().parse_args(["train", "--recipe", "gmenet-fast-fer2013-16px", "--data", "x.npz", "--out",
                                      "x.safetensors", "--teacher", "raf-teacher.safetensors", *extra])
    recipe = _train_recipe(args)
    assert recipe.teacher == "raf-teacher.safetensors" and recipe.kd_teacher == kd_teacher
    assert ("takes its soft targets from gmenet-fer2013-16px" in caplog.text) == (not extra)


def test_train_refuses_a_kd_teacher_for_a_recipe_without_distillation(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    assert run_train(["--arch", "baseline", "--resolution", "16", "--kd-teacher", "gmenet-fer2013-16px",
                      "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "would ignore it" in caplog.text


@pytest.mark.parametrize("option", ["--teacher", "--kd-teacher"])
def test_train_names_an_unreadable_teacher_file_before_reading_the_data(tmp_path: Path, option: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_text("not safetensors")
    assert run_train(["--arch", "gmenet", "--resolution", "16", option, str(teacher),
                      "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert f"{teacher} is not a readable safetensors file" in caplog.text
    assert "absent.npz" not in caplog.text
    caplog.clear()
    assert run_train(["--arch", "gmenet", "--resolution", "16", option, "gmenet-fer2013-16pz",
                      "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "gmenet-fer2013-16pz" in caplog.text and "gmenet-fer2013-16px" in caplog.text  # a close match
    assert "absent.npz" not in caplog.text


@pytest.mark.parametrize("option", ["--teacher", "--kd-teacher"])
def test_train_names_the_option_of_a_teacher_it_refuses(tmp_path: Path, option: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer train --kd-teacher nope`` said only "unknown model 'nope'", though two options (and the
    recipe itself) name teachers; the error now starts with the option and its value."""
    for given in ("nope", str(tmp_path / "missing.safetensors")):
        caplog.clear()
        assert run_train(["--arch", "gmenet", "--resolution", "16", option, given,
                          "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "x.safetensors")]) == 1
        assert f"{option} {given}: " in caplog.text


def test_train_attention_distillation_option_sets_the_recipe() -> None:
    from lrfer.cli import build_parser
    from lrfer.train.cli import _train_recipe

    def recipe(*extra: str) -> object:
        return _train_recipe(build_parser().parse_args(["train", "--arch", "gmenet", "--resolution", "16", "--data",
                                                        "x.npz", "--out", "x.safetensors", *extra]))

    assert recipe().attention_distillation == "activation"  # type: ignore[attr-defined]
    chosen = recipe("--attention-distillation", "askd", "--teacher", "gmenet-hr-48px.safetensors")
    assert chosen.attention_distillation == "askd" and chosen.teacher == "gmenet-hr-48px.safetensors"  # type: ignore[attr-defined]


def test_eval_checks_its_plot_before_evaluating(tiny_npz: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A --plot that could not be written (no matplotlib, a .txt name) failed only after the whole
    evaluation, and a name without a suffix was reported without the '.png' matplotlib added."""
    pytest.importorskip("matplotlib")
    model, data = save_tiny(tmp_path / "m.safetensors"), tiny_npz.with_name("tiny-publictest.npz")
    argv = ["eval", "--model", str(model), "--data", str(data), "--resolutions", "16", "--device", "cpu", "--plot"]
    assert main([*argv, str(tmp_path / "acc")]) == 0
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG" and f"wrote {tmp_path / 'acc.png'}" in capsys.readouterr().out
    assert main([*argv, str(tmp_path / "acc.txt")]) == 1
    assert "matplotlib cannot write '.txt' files; use one of" in caplog.text
    assert "Accuracy (%)" not in capsys.readouterr().out  # refused before any evaluation
    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)  # as if matplotlib were not installed
    assert main([*argv, str(tmp_path / "acc2.png")]) == 1
    assert "--plot needs matplotlib" in caplog.text and "Accuracy (%)" not in capsys.readouterr().out


def test_eval_splits_are_rafdbs_two_and_calibrating_on_the_scored_faces_warns(
        tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """--split t took every name starting with 't' (train and test), and calibrating on the evaluated
    .npz itself said nothing."""
    from lrfer.train.datasets import load_rafdb

    raf = write_rafdb(tmp_path / "basic", n_train=40, n_test=21)
    with pytest.raises(ValueError, match=r"RAF-DB split 't': use one of \['train', 'test'\]"):
        load_rafdb(raf, "t")
    assert len(load_rafdb(raf, "test")) == 21
    model = save_tiny(tmp_path / "tiny.safetensors")
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(model), "--data", str(raf), "--split", "t"])
    data = tiny_npz.with_name("tiny-publictest.npz")
    assert main(["eval", "--model", str(model), "--data", str(data), "--resolutions", "16", "--calibrate-on",
                 str(data), "--device", "cpu"]) == 0
    assert "calibrating on the faces it evaluates" in caplog.text
    caplog.clear()
    assert main(["eval", "--model", str(model), "--data", str(raf), "--resolutions", "16", "--calibrate-on",
                 str(raf), "--device", "cpu"]) == 0
    assert "calibrating on the faces it evaluates" not in caplog.text  # RAF-DB: train split against test


def test_train_config_options_change_the_architecture(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """A 48 px teacher of gmenet-tiny's layout for attention similarity could not be made from the command line."""
    from lrfer.cli import build_parser
    from lrfer.train.cli import _train_recipe

    args = build_parser().parse_args(["train", "--arch", "gmenet", "--resolution", "48", "--data", "x.npz", "--out",
                                      "t.safetensors", "--config", "width=12", "--config", "stem_stride=2"])
    assert _train_recipe(args).config == {"width": 12, "input_size": 48, "stem_stride": 2}
    assert run_train(["--arch", "gmenet", "--resolution", "16", "--config", "widht=12", "--data",
                      str(tmp_path / "x.npz"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "config key(s) ['widht'] are not options of architecture 'gmenet'" in caplog.text
    with pytest.raises(SystemExit):
        run_train(["--arch", "gmenet", "--resolution", "16", "--config", "width", "--data", "x.npz", "--out", "x.safetensors"])


def test_train_zoo_refuses_an_unknown_variant(tmp_path: Path) -> None:
    """`--only` with a misspelt name trained nothing and exited 0."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_zoo.py"
    proc = subprocess.run([sys.executable, str(script), "--data", str(tmp_path), "--work-dir", str(tmp_path / "runs"),
                           "--only", "gmenet-fer2013-17px"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown recipe 'gmenet-fer2013-17px'; did you mean gmenet-fer2013-16px" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_train_options_reach_the_recipe() -> None:
    """--epochs, --batch-size and --seed override the recipe's (the runs above give the defaults' values
    or too few faces for the batch size to show)."""
    from lrfer.cli import build_parser
    from lrfer.train.cli import _train_recipe

    args = build_parser().parse_args(["train", "--arch", "baseline", "--resolution", "16", "--data", "x.npz", "--out",
                                      "x.safetensors", "--epochs", "3", "--batch-size", "7", "--seed", "5"])
    recipe = _train_recipe(args)
    assert (recipe.epochs, recipe.batch_size, recipe.seed) == (3, 7, 5)


def test_train_reads_rafdbs_splits_and_checkpoints_in_the_work_dir(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Trains on RAF-DB's train split, validates on its test split, and checkpoints in --work-dir
    (not in <out>.run)."""
    import lrfer.train.datasets as datasets

    raf = write_rafdb(tmp_path / "basic", n_train=32, n_test=7)
    read: list[tuple[str, int]] = []
    load_faces = datasets.load_faces
    monkeypatch.setattr(datasets, "load_faces", lambda path, split="train": read.append((split, len(
        faces := load_faces(path, split)))) or faces)
    out, work_dir = tmp_path / "mine.safetensors", tmp_path / "work"
    assert run_train(["--arch", "baseline", "--resolution", "16", "--data", str(raf), "--out", str(out),
                      "--batch-size", "16", "--work-dir", str(work_dir)]) == 0
    assert read == [("train", 32), ("test", 7)]
    assert (work_dir / "checkpoint.json").is_file() and not out.with_suffix(".run").exists()


def test_eval_scores_the_rafdb_split_it_is_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards --split: `lrfer eval --split train` scores RAF-DB's train faces, not its test faces."""
    raf = write_rafdb(tmp_path / "basic", n_train=30, n_test=9)
    model = save_tiny(tmp_path / "tiny.safetensors")
    argv = ["eval", "--model", str(model), "--data", str(raf), "--resolutions", "16", "--device", "cpu"]
    assert main([*argv, "--split", "train"]) == 0
    assert "30 faces" in capsys.readouterr().out
    assert main(argv) == 0
    assert "9 faces" in capsys.readouterr().out


def test_eval_resolutions_keep_their_order_without_repeats() -> None:
    """Guards --resolutions: a size given twice is evaluated (and tabled) once, in the order given."""
    from lrfer.train.cli import _parse_resolutions

    assert _parse_resolutions("16,8,16,48,8") == [16, 8, 48]


def test_eval_scores_at_the_models_own_temperature(tiny_path: Path, tiny_npz: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the calibration `lrfer eval` reports without --calibrate-on: the model's manifest
    temperature (1.5 for tiny_path), not 1.0."""
    import lrfer.train.evaluate as evaluate_module

    temperatures: list[float] = []
    evaluate = evaluate_module.evaluate
    monkeypatch.setattr(evaluate_module, "evaluate", lambda model, native, faces, resolutions, temperature, device, **kw:
                        temperatures.append(temperature) or evaluate(model, native, faces, resolutions, temperature, device, **kw))
    assert main(["eval", "--model", str(tiny_path), "--data", str(tiny_npz), "--resolutions", "16", "--device", "cpu"]) == 0
    assert temperatures == [1.5]


def test_train_trains_on_the_device_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards --device reaching the Trainer (checked on the CPU with its own name cpu:0)."""
    import lrfer.train.cli as train_cli
    from lrfer.train.recipes import Trainer

    class Stop(Exception):
        pass

    devices: list[object] = []

    def fit(self: Trainer, progress: bool = True) -> None:
        devices.append(self.device)
        raise Stop

    monkeypatch.setattr(train_cli, "_device", lambda name: "cpu:0")
    monkeypatch.setattr(Trainer, "fit", fit)
    data = write_npz(tmp_path / "faces.npz", 32, seed=1)
    with pytest.raises(Stop):
        run_train(["--arch", "baseline", "--resolution", "16", "--data", str(data), "--out", str(tmp_path / "m.safetensors")])
    assert [str(d) for d in devices] == ["cpu:0"]


def test_train_help_gives_the_defaults_of_epochs_batch_size_seed_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    """``lrfer train --help`` listed --epochs, --batch-size, --seed and --device with no word on what
    they default to (the recipe's 60 epochs of --arch gmenet, 128 faces, seed 0, auto); the figures it
    now gives are the recipes'."""
    import re

    from lrfer.train.cli import EPOCHS_HELP
    from lrfer.train.recipes import ARCH_DEFAULTS, ZOO_RECIPES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--epochs N passes over the training data (default: the recipe's;",
                   "--batch-size N faces per training step (default: the recipe's, 128",
                   "--seed N random seed of the run (default: the recipe's, 0)", "--device DEVICE auto | cpu | cuda"):
        assert option in text
    for part in EPOCHS_HELP.removeprefix("--arch ").split(";")[0].split(", "):
        archs, epochs = part.rsplit(" ", 1)
        for arch in archs.split(" or "):
            assert ZOO_RECIPES[ARCH_DEFAULTS[arch]].epochs == int(epochs), arch
    assert sorted(re.findall(r"\b[a-z0-9]+(?= or | \d)", EPOCHS_HELP)) == sorted(ARCH_DEFAULTS)
    assert {(r.batch_size, r.seed) for r in ZOO_RECIPES.values()} == {(128, 0)}


def test_eval_warns_of_a_split_option_that_chooses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """``lrfer eval --data fer2013-publictest.npz --split train`` scored the whole file without a word
    (only a RAF-DB folder has splits), and ``--calibrate-split`` without ``--calibrate-on`` did nothing."""
    data = write_npz(tmp_path / "faces-publictest.npz", 14, 0)
    model = save_tiny(tmp_path / "tiny.safetensors")
    argv = ["eval", "--model", str(model), "--data", str(data), "--resolutions", "16", "--device", "cpu"]
    assert main([*argv, "--split", "train", "--calibrate-split", "test"]) == 0
    assert "14 faces" in capsys.readouterr().out
    assert (f"--split train chooses a RAF-DB split; --data {data} is not a RAF-DB folder, so all its faces are read"
            in caplog.text)
    assert "--calibrate-split test does nothing without --calibrate-on" in caplog.text
    caplog.clear()
    assert main(argv) == 0  # the defaults say nothing
    assert "split" not in caplog.text
