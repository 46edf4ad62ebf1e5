"""``lrfer train`` / ``lrfer eval`` end to end on tiny synthetic data (one epoch, width-8 models, CPU)."""
from __future__ import annotations

import contextlib
import io
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lrfer.cli import main
from lrfer.constants import CLASSES
from lrfer.train.cli import _dataset_name, _default_val
from lrfer.train.datasets import load_faces
from lrfer.train.recipes import predict_logits
from lrfer.zoo import load_model


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
            "--epochs", "1", "--batch-size", "32", "--dataset-name", "tiny", "--device", "cpu"]
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
    assert out.with_suffix(".run").joinpath("checkpoint.safetensors").is_file()  # resumable work dir
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
                                            "--dataset-name", "tiny", "--device", "cpu"]
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
    has_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_mpl = False
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
    raf = write_rafdb(tmp_path / "basic", 7, 7)
    assert _dataset_name(raf) == "raf"
    assert _default_val(raf) == raf
    train = write_npz(tmp_path / "fer2013-train.npz", 7, 0)
    assert _default_val(train) is None  # no sibling yet
    sibling = write_npz(tmp_path / "fer2013-publictest.npz", 7, 1)
    assert _default_val(train) == sibling


def test_train_rejects_bad_resolution_for_hr_arch(tmp_path: Path, tiny_npz: Path) -> None:
    out = tmp_path / "x.safetensors"
    status = main(["train", "--arch", "resnet18", "--data", str(tiny_npz), "--resolution", "16", "--out", str(out),
                   "--epochs", "1", "--device", "cpu"])
    assert status == 1
    assert not out.exists()
