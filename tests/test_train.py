"""Training code (lrfer.train): datasets, losses, checkpoints, recipes and the Trainer, on tiny synthetic faces."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrfer.constants import CLASSES
from lrfer.models import build_model
from lrfer.train import losses
from lrfer.train.checkpoint import load_checkpoint, save_checkpoint
from lrfer.train.datasets import RAF_TO_ZOO, FaceSet, load_faces
from lrfer.train.recipes import (
    ZOO_RECIPES,
    Recipe,
    Trainer,
    accuracy,
    copy_matching_weights,
    load_trained,
    normalize,
    predict_logits,
    recipe_for,
    save_trained,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_faces(n: int, seed: int, name: str = "synthetic") -> FaceSet:
    """48x48 faces whose class is coded by overall brightness (plus texture noise and a bright 'mouth' bar)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = rng.integers(0, 40, (n, 48, 48)) + 28 * labels[:, None, None]
    images[:, 32:38, 14:34] += 40
    return FaceSet(np.clip(images, 0, 255).astype(np.uint8), labels, name)


@pytest.fixture(scope="module")
def train_set() -> FaceSet:
    return synthetic_faces(256, seed=0, name="train")


@pytest.fixture(scope="module")
def val_set() -> FaceSet:
    return synthetic_faces(70, seed=1, name="val")


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResNet-18 teacher (width 8, non-default BatchNorm statistics) written with save_trained."""
    torch.manual_seed(0)
    teacher = build_model("resnet18", width=8).train()
    with torch.no_grad():
        teacher(torch.randn(32, 1, 48, 48))
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_trained(teacher.eval(), path, Recipe("resnet18", {"width": 8}, 48))
    return path


def tiny(arch: str, config: dict, resolution: int, method: str = "supervised", **kw: object) -> Recipe:
    return Recipe(arch, config, resolution, method, epochs=kw.pop("epochs", 1), batch_size=32,  # type: ignore[arg-type]
                  degradation={"random_method": True, "noise_std_max": 0.02}, **kw)  # type: ignore[arg-type]


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_history(trainer: Trainer, epochs: int, keys: tuple[str, ...] = ("loss",)) -> None:
    assert [h["epoch"] for h in trainer.history] == list(range(1, epochs + 1))
    for record in trainer.history:
        for key in keys:
            assert math.isfinite(record[key]), (key, record)
        assert 0.0 <= record["val_acc"] <= 1.0


# ------------------------------------------------------------------------------------------- datasets
def test_load_npz_round_trip_with_classes(tmp_path: Path) -> None:
    faces = synthetic_faces(20, seed=0)
    path = tmp_path / "tiny-train.npz"
    np.savez(path, images=faces.images, labels=faces.labels, classes=np.array(CLASSES))
    loaded = load_faces(path)
    assert loaded.name == "tiny-train"
    assert len(loaded) == 20
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == (20, 48, 48)
    assert loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.images, faces.images)
    np.testing.assert_array_equal(loaded.labels, faces.labels)


def test_load_npz_wrong_class_order_raises(tmp_path: Path) -> None:
    faces = synthetic_faces(7, seed=0)
    path = tmp_path / "bad.npz"
    np.savez(path, images=faces.images, labels=faces.labels, classes=np.array(sorted(CLASSES)))
    with pytest.raises(ValueError, match="class order"):
        load_faces(path)


def test_load_npz_resizes_other_sizes(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    np.savez(path, images=np.full((3, 96, 96), 77, np.uint8), labels=np.array([0, 3, 6]))
    loaded = load_faces(path)
    assert loaded.images.shape == (3, 48, 48)
    assert (loaded.images == 77).all()


def test_load_npz_centre_crops_faces_that_are_not_square(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(N, 48, 40) faces were stretched to 48x48 without a word, distorting the expressions."""
    path = tmp_path / "narrow.npz"
    faces = np.zeros((3, 48, 40), np.uint8)
    faces[:, :4] = 255  # rows that a centre crop to 40x40 leaves out
    np.savez(path, images=faces, labels=np.array([0, 3, 6]))
    with caplog.at_level("WARNING"):
        loaded = load_faces(path)
    assert loaded.images.shape == (3, 48, 48) and loaded.images.max() == 0
    assert "3 of 3 faces are not square (40x48 pixels)" in caplog.text and "centre-cropped" in caplog.text


def test_class_folders_centre_crop_images_that_are_not_square(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A 40x48 image in a class folder was stretched to 48x48 without a word, distorting the expression."""
    import cv2

    (tmp_path / "happy").mkdir()
    cv2.imwrite(str(tmp_path / "happy" / "a.png"), np.full((48, 48), 90, np.uint8))
    tall = np.full((48, 40), 90, np.uint8)
    tall[:4], tall[-4:] = 255, 0  # rows that a centre crop to 40x40 leaves out
    cv2.imwrite(str(tmp_path / "happy" / "b.png"), tall)
    with caplog.at_level("WARNING"):
        loaded = load_faces(tmp_path)
    assert loaded.images.shape == (2, 48, 48) and (loaded.images[1] == 90).all()
    assert "1 of 2 faces are not square" in caplog.text and "happy/b.png among them" in caplog.text


def test_class_folders_beside_macos_and_hidden_folders_load(tmp_path: Path) -> None:
    """An archive unzipped from a Mac holds __MACOSX/ beside the class folders: refused as "not class names"."""
    import cv2

    for folder in ("happy", "sad", "__MACOSX/happy", ".git"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("happy/a.png", "sad/b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48), 90, np.uint8))
    (tmp_path / "__MACOSX" / "happy" / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    loaded = load_faces(tmp_path)
    assert len(loaded) == 2 and sorted(loaded.labels.tolist()) == [CLASSES.index("happy"), CLASSES.index("sad")]


def test_class_folders_with_a_folder_that_cannot_be_listed_are_refused(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A class subfolder without read permission was skipped without a word: the model was trained on
    fewer faces than the folder holds (`lrfer predict` reports such folders)."""
    import errno
    import os

    import cv2

    for name in ("happy", "sad"):
        (tmp_path / name / "more").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "a.png"), np.full((48, 48), 90, np.uint8))
        cv2.imwrite(str(tmp_path / name / "more" / "b.png"), np.full((48, 48), 90, np.uint8))
    closed = tmp_path / "sad" / "more"
    scandir = os.scandir

    def denying_scandir(path: Any = ".") -> Any:  # chmod 000 does not stop root
        if os.fsdecode(path) == str(closed):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return scandir(path)

    assert len(load_faces(tmp_path)) == 4
    monkeypatch.setattr(os, "scandir", denying_scandir)
    with pytest.raises(PermissionError, match=f"cannot list folder {re.escape(repr(str(closed)))}: Permission denied"):
        load_faces(tmp_path)


def test_load_class_folders(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "faces"
    expected = {}
    for name, value in (("happy", 200), ("Sad", 60), ("neutral", 120)):
        folder = root / name
        (folder / "nested").mkdir(parents=True)
        cv2.imwrite(str(folder / "a.png"), np.full((48, 48), value, np.uint8))
        cv2.imwrite(str(folder / "nested" / "b.png"), np.full((60, 60, 3), value, np.uint8))  # colour, resized
        (folder / "notes.txt").write_text("ignored")
        expected[CLASSES.index(name.lower())] = value
    faces = load_faces(root)
    assert faces.images.shape == (6, 48, 48) and faces.images.dtype == np.uint8
    assert sorted(faces.labels.tolist()) == sorted([k for k in expected for _ in range(2)])
    for image, label in zip(faces.images, faces.labels):
        assert np.abs(image.astype(int) - expected[int(label)]).max() <= 1


def test_class_folders_naming_one_class_twice_are_refused(tmp_path: Path) -> None:
    """'happy/' and 'Happy/' both name happy: the second was left out without a word."""
    import cv2

    for name in ("happy", "Happy", "sad"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(ValueError, match=r"folders \[\['Happy', 'happy'\]\] name the same class"):
        load_faces(tmp_path)


def test_class_folders_unknown_name_raises(tmp_path: Path) -> None:
    import cv2

    for name in ("happy", "joy"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(ValueError, match="joy"):
        load_faces(tmp_path)


def test_class_folders_read_the_image_files_lrfer_predict_reads(tmp_path: Path) -> None:
    """JAFFE's faces are .tiff: they were left out without a word (all of them: "no images found")."""
    import cv2

    (tmp_path / "happy").mkdir()
    for name in ("a.tiff", "b.TIF", "c.png"):
        cv2.imwrite(str(tmp_path / "happy" / name), np.full((48, 48), 90, np.uint8))
    faces = load_faces(tmp_path)
    assert len(faces) == 3 and (faces.labels == CLASSES.index("happy")).all()
    assert (faces.images == 90).all()


def test_class_folders_follow_links_to_folders_as_lrfer_predict_does(tmp_path: Path) -> None:
    """``happy/more -> /elsewhere/happy`` was left out without a word (Python 3.11's rglob does not follow
    links), although `lrfer predict happy/` reads the faces there."""
    import cv2

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "b.png"), np.full((48, 48), 90, np.uint8))
    (tmp_path / "data" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "data" / "happy" / "a.png"), np.full((48, 48), 90, np.uint8))
    (tmp_path / "data" / "happy" / "more").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "data" / "happy" / "not-an-image.jpg").mkdir()  # a folder: no file to read
    faces = load_faces(tmp_path / "data")
    assert len(faces) == 2 and (faces.labels == CLASSES.index("happy")).all()


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such file or folder"),
    ("missing.npz", "no such file or folder"),
    ("flat", r"its images are not in class folders; move each to .*flat/<class name>/"),
    ("raf_parent", r"basic is RAF-DB's 'basic' folder; pass that folder itself"),
])
def test_load_faces_says_what_is_wrong_with_the_layout(tmp_path: Path, layout: str, message: str) -> None:
    """A typo, images not sorted into class folders, and RAF-DB/ for RAF-DB/basic/ were each told "not a .npz
    file, a RAF-DB basic folder or a folder of class folders", "no images found" or "['basic'] are not class names"."""
    import cv2

    root = tmp_path / layout
    if layout == "flat":
        root.mkdir()
        cv2.imwrite(str(root / "a.jpg"), np.zeros((48, 48), np.uint8))
    elif layout == "raf_parent":
        make_rafdb(root / "basic")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_faces(root)


def make_rafdb(root: Path) -> dict[str, list[tuple[int, int]]]:
    """Miniature RAF-DB 'basic' layout; returns per split the (RAF label, grey value) of each image, in order."""
    import cv2

    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines, made = [], {"train": [], "test": []}
    for i in range(14):
        split = "train" if i < 10 else "test"
        raf_label = i % 7 + 1
        stem = f"train_{i + 1:05d}" if split == "train" else f"test_{i - 9:04d}"
        value = 20 + 15 * i
        cv2.imwrite(str(root / "Image" / "aligned" / f"{stem}_aligned.jpg"), np.full((100, 100, 3), value, np.uint8))
        lines.append(f"{stem}.jpg {raf_label}")
        made[split].append((raf_label, value))
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return made


def test_raf_label_mapping_matches_class_names() -> None:
    raf_names = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
    assert {k: CLASSES[v] for k, v in RAF_TO_ZOO.items()} == raf_names


def test_load_rafdb_basic_layout(tmp_path: Path) -> None:
    made = make_rafdb(tmp_path / "basic")
    expected_zoo = {1: 5, 2: 2, 3: 1, 4: 3, 5: 4, 6: 0, 7: 6}
    for split, n in (("train", 10), ("test", 4)):
        faces = load_faces(tmp_path / "basic", split)
        assert faces.name == f"rafdb-{split}"
        assert faces.images.shape == (n, 48, 48) and faces.images.dtype == np.uint8
        assert faces.labels.tolist() == [expected_zoo[label] for label, _ in made[split]]
        for image, (_, value) in zip(faces.images, made[split]):
            assert abs(float(image.mean()) - value) < 3


def test_a_rafdb_label_list_saved_with_a_byte_order_mark_keeps_its_first_face(tmp_path: Path) -> None:
    """A Windows editor's byte-order mark made the first name '\\ufefftrain_00001.jpg': that face was
    left out of training without a word."""
    made = make_rafdb(tmp_path / "basic")
    labels = tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    assert len(load_faces(tmp_path / "basic", "train")) == len(made["train"])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_rafdb_label_list_saved_as_utf16_with_windows_line_endings_is_read(tmp_path: Path, encoding: str) -> None:
    """Notepad's "Unicode" (UTF-16 with its byte-order mark) was read as UTF-8: line 1 was refused as
    "'\\x00t\\x00r...' is not '<image name> <label>'", although the README says a byte-order mark is fine."""
    import codecs

    made = make_rafdb(tmp_path / "basic")
    labels = tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt"
    text = labels.read_text().replace("\n", "\r\n")
    labels.write_bytes(text.encode("utf-16") if encoding == "utf-16" else codecs.BOM_UTF16_BE + text.encode(encoding))
    faces = load_faces(tmp_path / "basic", "train")
    assert faces.labels.tolist() == [RAF_TO_ZOO[label] for label, _ in made["train"]]


def test_a_rafdb_copy_with_only_the_original_photos_is_told_to_unzip_the_aligned_faces(tmp_path: Path) -> None:
    """A copy with Image/original/ but no Image/aligned/ was told only "cannot read image: no such file
    .../Image/aligned/train_00001_aligned.jpg", without saying that lrfer reads the aligned faces alone."""
    make_rafdb(tmp_path / "basic")
    (tmp_path / "basic" / "Image" / "aligned").rename(tmp_path / "basic" / "Image" / "original")
    with pytest.raises(ValueError, match=r"no Image/aligned/ folder \(Image/original/ holds RAF-DB's whole photos.*"
                                         r"unzip RAF-DB's Image/aligned.zip into .*basic/Image"):
        load_faces(tmp_path / "basic", "train")


def test_a_face_missing_from_rafdb_names_its_line_in_the_label_list(tmp_path: Path) -> None:
    """A face listed in the label list but missing from Image/aligned/ was told only "cannot read image: no
    such file ...", without the line of the label list or the fix."""
    make_rafdb(tmp_path / "basic")
    (tmp_path / "basic" / "Image" / "aligned" / "train_00003_aligned.jpg").unlink()
    with pytest.raises(ValueError, match=r"list_patition_label.txt, line 3: no aligned face .*train_00003_aligned.jpg "
                                         r"for train_00003.jpg; copy it there .* or remove line 3"):
        load_faces(tmp_path / "basic", "train")


def test_rafdb_faces_unzipped_one_folder_too_deep_are_told_to_move_up(tmp_path: Path) -> None:
    """aligned.zip extracted into a folder of its own (Image/aligned/aligned/) was told "no such file"."""
    make_rafdb(tmp_path / "basic")
    image = tmp_path / "basic" / "Image"
    (image / "aligned").rename(image / "inner")
    (image / "aligned").mkdir()
    (image / "inner").rename(image / "aligned" / "aligned")
    with pytest.raises(ValueError, match=r"one folder too deep, in .*Image/aligned/aligned: move them up"):
        load_faces(tmp_path / "basic", "test")


@pytest.mark.parametrize("inside", ["Image/aligned", "Image", "EmoLabel", "EmoLabel/list_patition_label.txt"])
def test_a_path_inside_rafdbs_basic_folder_names_that_folder(tmp_path: Path, inside: str) -> None:
    """basic/Image/aligned was told to move its images into class folders, basic/Image that ['aligned'] are not
    class names, and the label list that it is "not a .npz file, a RAF-DB basic folder or a folder of class folders"."""
    make_rafdb(tmp_path / "basic")
    with pytest.raises(ValueError, match=rf"{re.escape(inside)}: inside RAF-DB's 'basic' folder; pass that folder "
                                         rf"itself, {re.escape(str(tmp_path / 'basic'))}$"):
        load_faces(tmp_path / "basic" / inside)


def test_class_folders_named_by_rafdb_labels_are_told_the_renaming(tmp_path: Path) -> None:
    """RAF-DB copies sorted into folders 1..7 (DATASET/train/1/...) were told only that ['1', ..., '7'] are not
    class names, leaving the user to guess which of lrfer's names each RAF-DB number is."""
    import cv2

    for label in range(1, 8):
        (tmp_path / "train" / str(label)).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "train" / str(label) / "a.jpg"), np.zeros((48, 48), np.uint8))
    with pytest.raises(ValueError, match=r"not class names; .* if they are RAF-DB's labels \(1 surprise, .*\), rename "
                                         r"them: 1 -> surprise, 2 -> fear, 3 -> disgust, 4 -> happy, 5 -> sad, "
                                         r"6 -> angry, 7 -> neutral$"):
        load_faces(tmp_path / "train")
    (tmp_path / "train" / "8").mkdir()  # not RAF-DB's numbers: no renaming offered
    with pytest.raises(ValueError, match=r"not class names; expected some of \[[^\]]*\]$"):
        load_faces(tmp_path / "train")


@pytest.mark.parametrize("label_list", [None, "list_partition_label.txt"])
def test_a_rafdb_folder_without_its_label_list_says_so(tmp_path: Path, label_list: str | None) -> None:
    """Without EmoLabel/list_patition_label.txt (or under another spelling), RAF-DB's basic folder was read as
    class folders: "folders ['EmoLabel', 'Image'] are not class names"."""
    make_rafdb(tmp_path / "basic")
    labels = tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt"
    if label_list is None:
        labels.unlink()
    else:
        labels.rename(labels.with_name(label_list))
    holds = r" \(EmoLabel/ holds \['list_partition_label.txt'\]\)" if label_list else ";"
    with pytest.raises(ValueError, match=r"laid out as RAF-DB's 'basic' folder but has no "
                                         rf"EmoLabel/list_patition_label.txt{holds}"):
        load_faces(tmp_path / "basic")


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # the stand-in step has no optimizer step
def test_a_diverged_run_stops_before_writing_its_checkpoint(tmp_path: Path, train_set: FaceSet,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN loss left NaN weights for good, and the run went on for every epoch left."""
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16)
    trainer = Trainer(recipe, train_set, None, tmp_path)
    monkeypatch.setattr(trainer, "step_fn", lambda x, y: {"loss": float("nan")})
    with pytest.raises(RuntimeError, match=r"training diverged in epoch 1 \(mean loss nan\)"):
        trainer.fit(progress=False)
    assert not (tmp_path / "checkpoint.json").exists()


def test_load_faces_rejects_unknown_path(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError):
        load_faces(tmp_path / "x.csv")


# --------------------------------------------------------------------------------------------- losses
def test_attention_transfer_loss() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(4, 8, 16, 16), torch.randn(4, 16, 8, 8)]
    assert losses.attention_transfer_loss(maps, [m.clone() for m in maps]).item() == pytest.approx(0.0, abs=1e-7)
    # attention ignores channel count: a teacher map with other channels but the same energy pattern matches
    same_energy = [m.repeat(1, 2, 1, 1) for m in maps]
    assert losses.attention_transfer_loss(maps, same_energy).item() == pytest.approx(0.0, abs=1e-6)
    other = [torch.randn_like(m) for m in maps]
    assert losses.attention_transfer_loss(maps, other).item() > 1e-3


def test_attention_transfer_loss_different_spatial_sizes() -> None:
    torch.manual_seed(0)
    student = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    # teacher maps 3x larger, nearest-upsampled from the student: pooling back recovers the student's attention
    teacher = [torch.nn.functional.interpolate(m, scale_factor=3, mode="nearest") for m in student]
    assert teacher[0].shape[-1] == 24
    loss = losses.attention_transfer_loss(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    random_teacher = [torch.randn(2, 32, 24, 24), torch.randn(2, 64, 12, 12)]
    assert losses.attention_transfer_loss(student, random_teacher).item() > 1e-3
    # the student larger than the teacher works too
    assert math.isfinite(losses.attention_transfer_loss(random_teacher, student).item())


def test_distillation_kl() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    assert losses.distillation_kl(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(5, 7) * 3
    assert losses.distillation_kl(logits, other, 4.0).item() > 0
    # scaled by T^2
    t2 = losses.distillation_kl(logits * 2, other * 2, 2.0).item()
    t1 = losses.distillation_kl(logits, other, 1.0).item()
    assert t2 == pytest.approx(4 * t1, rel=1e-4)


def test_classification_aware_weights() -> None:
    beta = 2.0
    labels = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 7)
    logits[0, 0] = 9.0  # label 0: right and confident
    logits[1, 0] = 9.0  # label 1: wrong and confident
    logits[3, 3] = 9.0  # label 3: right and confident; row 2 is uniform (uncertain)
    logits.requires_grad_(True)
    w = losses.classification_aware_weights(logits, labels, beta)
    assert not w.requires_grad
    assert ((w >= 1) & (w <= 1 + beta)).all()
    correct_confident, wrong_confident, uncertain = w[0].item(), w[1].item(), w[2].item()
    assert correct_confident < 1.01 and w[3].item() < 1.01
    assert wrong_confident > 1 + beta - 0.01
    assert correct_confident < uncertain < wrong_confident


# ----------------------------------------------------------------------------------------- checkpoint
@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, 0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.Adam(p, 1e-2),
], ids=["sgd", "adam"])
def test_checkpoint_round_trip(tmp_path: Path, make_opt) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=8, drop_rate=0.0)
    opt = make_opt(model.parameters())
    for _ in range(3):
        loss = model(torch.randn(8, 1, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "checkpoint.json"
    save_checkpoint(path, {"model": model}, {"model": opt}, {"epoch": 1, "history": []})
    save_checkpoint(path, {"model": model}, {"model": opt}, {"epoch": 3, "history": [{"loss": 1.5}]})
    # the JSON and the one tensors file it names; the first save's tensors are gone
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.json", json.loads(path.read_text())["tensors"]}

    torch.manual_seed(1)
    fresh = build_model("baseline", width=8, input_size=8, drop_rate=0.0)
    fresh_opt = make_opt(fresh.parameters())
    assert not states_equal(model, fresh)
    meta = load_checkpoint(path, {"model": fresh}, {"model": fresh_opt})
    assert meta["epoch"] == 3 and meta["history"] == [{"loss": 1.5}]
    assert states_equal(model, fresh)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert json.loads(json.dumps(a["param_groups"])) == b["param_groups"]  # JSON turns Adam's betas into a list
    assert a["state"].keys() == b["state"].keys() and len(a["state"]) > 0
    for index, entries in a["state"].items():
        assert entries.keys() == b["state"][index].keys()
        for key, value in entries.items():
            other = b["state"][index][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    # one more identical step gives identical weights: the momentum really was restored
    x = torch.randn(8, 1, 8, 8)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert states_equal(model, fresh)



@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX's")
def test_training_files_follow_the_umask_like_the_exported_weights(tmp_path: Path, train_set: FaceSet) -> None:
    """A run's checkpoint tensors (and save_trained's file) were mode 0600 whatever the umask, while its
    checkpoint.json and the exported .safetensors were 0644: safetensors' save_file writes a 0600 temporary file."""
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16)
    old = os.umask(0o027)
    try:
        model = Trainer(recipe, train_set, None, tmp_path / "run").fit(progress=False)
        save_trained(model, tmp_path / "run" / "final.safetensors", recipe)
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").iterdir()}
    assert len(modes) == 3 and set(modes.values()) == {oct(0o640)}, modes

# -------------------------------------------------------------------------------------------- recipes
def test_recipe_for_moves_resolution() -> None:
    r = recipe_for("gmenet", 12)
    assert r.resolution == 12 and r.config["input_size"] == 12 and r.method == "distill"
    assert ZOO_RECIPES["gmenet-fer2013-16px"].config["input_size"] == 16  # the zoo recipe is untouched
    assert recipe_for("resnet18", 48).resolution == 48
    with pytest.raises(ValueError, match="48"):
        recipe_for("resnet18", 16)
    with pytest.raises(ValueError, match="known"):
        recipe_for("vgg", 16)


def test_zoo_recipes_build_their_models() -> None:
    for name, recipe in ZOO_RECIPES.items():
        assert name.startswith(recipe.arch + "-") and name.endswith(f"-{recipe.resolution}px")
        if "input_size" in recipe.config:
            assert recipe.config["input_size"] == recipe.resolution
        assert recipe.method in ("supervised", "distill", "fsr")
        if recipe.method != "supervised":
            assert recipe.teacher


def test_save_trained_load_trained_round_trip(teacher_path: Path) -> None:
    teacher = load_trained(teacher_path, torch.device("cpu"))
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    torch.manual_seed(0)
    reference = build_model("resnet18", width=8).train()
    with torch.no_grad():
        reference(torch.randn(32, 1, 48, 48))
    assert states_equal(teacher, reference.eval())


@pytest.mark.parametrize("content, problem", [
    (None, "not a readable safetensors file"),  # text, not safetensors
    ({}, "no 'lrfer_spec' metadata"),
    ({"lrfer_spec": "{arch"}, "not JSON"),
    ({"lrfer_spec": json.dumps({"arch": "resnet18"})}, "names no 'arch'"),
])
def test_load_trained_names_what_is_wrong_with_a_teacher_file(tmp_path: Path, content: dict[str, str] | None,
                                                              problem: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "teacher.safetensors"
    if content is None:
        path.write_text("{}")
    else:
        save_file({"w": torch.zeros(2)}, str(path), metadata=content)
    with pytest.raises(ValueError, match=problem) as caught:
        load_trained(path, torch.device("cpu"))
    assert str(path) in str(caught.value)
    with pytest.raises(FileNotFoundError, match="No such weights file"):
        load_trained(tmp_path / "missing.safetensors", torch.device("cpu"))


def test_supervised_baseline_one_epoch(tmp_path: Path, train_set: FaceSet, val_set: FaceSet) -> None:
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16)
    trainer = Trainer(recipe, train_set, val_set, tmp_path)
    model = trainer.fit(progress=False)
    assert not model.training
    check_history(trainer, 1)
    assert (tmp_path / "checkpoint.json").exists()
    logits = predict_logits(model, val_set.images, 16)
    assert logits.shape == (len(val_set), 7) and torch.isfinite(logits).all()


def test_distill_gmenet_with_teacher_file(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                          teacher_path: Path) -> None:
    recipe = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher_path))
    trainer = Trainer(recipe, train_set, val_set, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(progress=False)
    check_history(trainer, 1, ("loss", "ce", "att", "kd"))
    assert trainer.history[0]["att"] > 0 and trainer.history[0]["kd"] >= 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    # the teacher is frozen and unchanged
    assert states_equal(trainer.teacher, load_trained(teacher_path, torch.device("cpu")))


def test_attention_recorder_gives_each_attention_modules_logits_without_changing_the_output() -> None:
    from lrfer.models.gmenet import AttentionRecorder, ChannelAttention, SpatialAttention

    torch.manual_seed(0)
    model = build_model("gmenet", width=8, input_size=16).eval()
    x = torch.randn(3, 1, 16, 16)
    plain = model(x)
    with AttentionRecorder(model) as recorded:
        assert torch.equal(model(x), plain)
    assert [tuple(m.shape) for m in recorded.maps] == [(3, 8, 1, 1), (3, 1, 16, 16), (3, 16, 1, 1), (3, 1, 8, 8),
                                                       (3, 32, 1, 1), (3, 1, 4, 4)]
    # the logits are what the module's sigmoid weighs its input with
    block = model.local_stages[0][0]
    residual = block.conv2(block.conv1(model.stem(x)))
    channel, spatial = block.attention
    assert isinstance(channel, ChannelAttention) and isinstance(spatial, SpatialAttention)
    torch.testing.assert_close(residual * torch.sigmoid(recorded.maps[0]), channel(residual))
    weighted = channel(residual)
    torch.testing.assert_close(weighted * torch.sigmoid(recorded.maps[1]), spatial(weighted))
    model(x)
    assert len(recorded.maps) == 6  # hooks removed on leaving


def test_askd_loss_compares_attention_by_direction_and_pools_the_teacher() -> None:
    torch.manual_seed(0)
    student = [torch.randn(4, 8, 1, 1), torch.randn(4, 1, 16, 16)]
    assert losses.askd_loss(student, [m.clone() for m in student]).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.askd_loss(student, [3 * m for m in student]).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.askd_loss(student, [-m for m in student]).item() == pytest.approx(4.0, abs=1e-5)  # 1 - cos = 2 each
    teacher = [student[0], torch.nn.functional.interpolate(student[1], scale_factor=3, mode="nearest")]
    assert losses.askd_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same attention modules"):
        losses.askd_loss(student, student[:1])


def hr_gmenet_teacher(path: Path, width: int = 8) -> Path:
    """A 48 px GME-Net (the student's layout at 48 px) saved as a trained teacher."""
    torch.manual_seed(2)
    save_trained(build_model("gmenet", width=width, input_size=48).eval(), path,
                 Recipe("gmenet", {"width": width, "input_size": 48}, 48))
    return path


def test_askd_distils_the_attention_modules_of_a_48px_gmenet(tmp_path: Path, train_set: FaceSet, val_set: FaceSet
                                                             ) -> None:
    """GME-Net's distillation as its paper describes: the student's attention modules learn the
    attention of a high-resolution teacher with the same modules (before, only attention transfer
    of stage outputs from the ResNet-18 teacher, which has none)."""
    from lrfer.models.gmenet import AttentionRecorder

    teacher = hr_gmenet_teacher(tmp_path / "hr.safetensors")
    recipe = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher),
                  attention_distillation="askd", att_weight=1.0)
    trainer = Trainer(recipe, train_set, val_set, tmp_path / "run")
    # the attention loss alone reaches the student's attention convolutions
    hr = torch.from_numpy(train_set.images[:16]).unsqueeze(1).float() / 255
    _, att, _ = trainer._attention_similarity((hr - 0.5) / 0.25, (trainer._degrade(hr) - 0.5) / 0.25)
    att.backward()
    spatial = [m for m in AttentionRecorder(trainer.model).modules if not hasattr(m, "mlp")]
    assert att.item() > 0 and all(m.conv.weight.grad.abs().sum() > 0 for m in spatial)
    trainer.model.zero_grad(set_to_none=True)
    trainer.fit(progress=False)
    check_history(trainer, 1, ("loss", "ce", "att", "kd"))
    assert 0 < trainer.history[0]["att"] <= 6 * 2  # six modules, 1 - cos <= 2 each


def test_askd_refuses_a_teacher_without_the_students_attention(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                                teacher_path: Path) -> None:
    recipe = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher_path),
                  attention_distillation="askd")
    with pytest.raises(ValueError, match=r"attention modules of widths none, the student \[8, 16, 32\]"):
        Trainer(recipe, train_set, val_set, tmp_path / "a")
    wider = hr_gmenet_teacher(tmp_path / "wide.safetensors", width=16)
    with pytest.raises(ValueError, match=r"widths \[16, 32, 64\], the student \[8, 16, 32\]"):
        Trainer(replace(recipe, teacher=str(wider)), train_set, val_set, tmp_path / "b")
    with pytest.raises(ValueError, match="distils GME-Net's attention modules"):
        Trainer(tiny("baseline", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher_path),
                     attention_distillation="askd"), train_set, val_set, tmp_path / "c")
    with pytest.raises(ValueError, match="attention_distillation must be one of"):
        Trainer(replace(recipe, attention_distillation="cbam"), train_set, val_set, tmp_path / "d")
    # the student's own layout at 16 px has the widths, but reads 16 px faces
    low = tmp_path / "low.safetensors"
    save_trained(build_model("gmenet", width=8, input_size=16).eval(), low, Recipe("gmenet", {"width": 8, "input_size": 16}, 16))
    with pytest.raises(ValueError, match="reads 16 px faces; attention similarity"):
        Trainer(replace(recipe, teacher=str(low)), train_set, val_set, tmp_path / "e")


def test_a_kd_teacher_must_read_the_students_faces(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                  teacher_path: Path) -> None:
    """Soft targets from the 48 px teacher (or an 8 px model) run on 16 px faces were taken without a word."""
    recipe = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher_path))
    hr = hr_gmenet_teacher(tmp_path / "hr.safetensors")
    with pytest.raises(ValueError, match=r"reads 48 px faces, but its soft targets are taken on the student's 16 px"):
        Trainer(replace(recipe, kd_teacher=str(hr)), train_set, val_set, tmp_path / "a")


def test_kd_teacher_gives_soft_targets_on_the_students_input(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                             teacher_path: Path) -> None:
    config = {"width": 8, "input_size": 16}
    torch.manual_seed(1)
    start = build_model("gmenet", **config).eval()
    kd_path = tmp_path / "kd_teacher.safetensors"
    save_trained(start, kd_path, Recipe("gmenet", config, 16))
    recipe = tiny("gmenet", config, 16, "distill", teacher=str(teacher_path), kd_teacher=str(kd_path))
    kd_from = {}
    for name, kd_teacher in (("students_copy", str(kd_path)), ("hr_teacher", None)):
        trainer = Trainer(replace(recipe, kd_teacher=kd_teacher), train_set, val_set, tmp_path / name)
        trainer.model.load_state_dict(start.state_dict())
        trainer.model.eval()  # no dropout: the student computes what its copy computes on the same input
        kd_from[name] = trainer._distill_step(*trainer._batch(torch.arange(32)))["kd"]
    assert kd_from["students_copy"] == pytest.approx(0.0, abs=1e-6)  # its copy saw the same degraded faces
    assert kd_from["hr_teacher"] > 1e-3


def test_manifest_entry_names_the_kd_teacher() -> None:
    from lrfer.train.export import build_entry

    recipe = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher="t.safetensors")
    plain = build_entry("gmenet-synthetic-16px", recipe, "synthetic", 1.0, {}, "test")["description"]
    with_kd = build_entry("gmenet-synthetic-16px", replace(recipe, kd_teacher="gmenet-fer2013-16px"), "synthetic", 1.0,
                          {}, "test")["description"]
    assert "gmenet-fer2013-16px" not in plain and with_kd.startswith(plain) and "gmenet-fer2013-16px" in with_kd


def test_is_run_of_matches_recorded_recipes() -> None:
    recipe = ZOO_RECIPES["gmenet-tiny-fer2013-16px"]
    assert recipe.kd_teacher and recipe.teacher
    ran = json.loads(json.dumps(recipe.to_json()))  # as a checkpoint records it
    assert recipe.is_run_of(ran)
    # the teachers' fp32 files from the same work dir (scripts/train_zoo.py) stand for their names
    assert recipe.is_run_of(dict(ran, teacher=f"runs/{recipe.teacher}/final.safetensors",
                                 kd_teacher=f"/abs/runs/{recipe.kd_teacher}/final.safetensors"))
    assert not recipe.is_run_of(dict(ran, teacher="other.safetensors"))
    assert not recipe.is_run_of(dict(ran, kd_teacher=f"runs/{recipe.teacher}/final.safetensors"))
    assert not recipe.is_run_of(dict(ran, kd_teacher=None))  # trained on the HR teacher's soft targets
    assert not recipe.is_run_of(dict(ran, epochs=60))
    # a run recorded before a field existed ran with its default
    plain = ZOO_RECIPES["gmenet-small-fer2013-16px"]
    older = {k: v for k, v in json.loads(json.dumps(plain.to_json())).items() if k != "kd_teacher"}
    assert plain.is_run_of(older) and not recipe.is_run_of({k: v for k, v in ran.items() if k != "kd_teacher"})


def test_fsr_fsrfer_one_epoch(tmp_path: Path, train_set: FaceSet, val_set: FaceSet, teacher_path: Path) -> None:
    recipe = replace(tiny("fsrfer", {"input_size": 16, "extractor_width": 8, "hidden": 16, "growth": 8}, 16, "fsr",
                          teacher=str(teacher_path)), lr=1e-3, weight_decay=0.0)
    trainer = Trainer(recipe, train_set, val_set, tmp_path)
    assert trainer.discriminator is not None
    model = trainer.fit(progress=False)
    check_history(trainer, 1, ("loss", "feat", "cls", "d"))
    # the extractor is the fixed teacher (weights and BatchNorm statistics); the generator has moved off identity
    assert states_equal(model.extractor, load_trained(teacher_path, torch.device("cpu")))
    assert model.generator.conv_out.weight.abs().sum() > 0
    assert (tmp_path / "checkpoint.json").exists()


def test_manet_init_from_teacher_copies_tensors(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                teacher_path: Path) -> None:
    teacher = load_trained(teacher_path, torch.device("cpu"))
    fresh = build_model("manet", width=8)
    copied = copy_matching_weights(teacher, fresh)
    t, m = teacher.state_dict(), fresh.state_dict()
    assert copied >= len([k for k in t if k.startswith(("stem.", "stages.0.", "stages.1."))])
    for key in [k for k in t if k.startswith(("stem.", "stages.0.", "stages.1."))]:
        assert torch.equal(m[key], t[key]), key
    for key in [k for k in m if k.startswith("patches.2.stage.")]:
        assert torch.equal(m[key], t["stages.2." + key[len("patches.2.stage."):]]), key
    for key in [k for k in m if k.startswith("global_branch.2.")]:
        assert torch.equal(m[key], t["stages.3." + key[len("global_branch.2."):]]), key

    recipe = tiny("manet", {"width": 8}, 48, teacher=str(teacher_path), init_from_teacher=True)
    trainer = Trainer(recipe, train_set, val_set, tmp_path)
    assert torch.equal(trainer.model.state_dict()["stem.0.weight"], t["stem.0.weight"])
    trainer.fit(progress=False)
    check_history(trainer, 1)


def test_manet_branch_losses_train_each_branch_on_its_own(tmp_path: Path, train_set: FaceSet, val_set: FaceSet) -> None:
    """The authors' MA-Net loss: 0.6 CE(local) + 0.4 CE(global), not one CE of the blended logits."""
    import torch.nn.functional as F

    from lrfer.models.manet import GLOBAL_WEIGHT, LOCAL_WEIGHT

    trainer = Trainer(tiny("manet", {"width": 8}, 48, branch_losses=True), train_set, val_set, tmp_path)
    torch.manual_seed(0)
    x, y = torch.rand(6, 1, 48, 48), torch.tensor([0, 1, 2, 3, 4, 5])
    trainer.model.eval()  # dropout off: the step's losses can be recomputed
    local, global_ = trainer.model.forward_branches(x)
    expected = [F.cross_entropy(z, y, label_smoothing=0.1).item() for z in (local, global_)]
    record = trainer._branch_step(x, y)
    assert record["local"] == pytest.approx(expected[0]) and record["global"] == pytest.approx(expected[1])
    assert record["loss"] == pytest.approx(LOCAL_WEIGHT * expected[0] + GLOBAL_WEIGHT * expected[1])
    blended = F.cross_entropy(LOCAL_WEIGHT * local + GLOBAL_WEIGHT * global_, y, label_smoothing=0.1).item()
    assert record["loss"] != pytest.approx(blended)
    trainer.fit(progress=False)
    check_history(trainer, 1, ("loss", "local", "global"))
    with pytest.raises(ValueError, match="branch_losses is MA-Net's loss"):
        Trainer(tiny("baseline", {"width": 8, "input_size": 12}, 12, branch_losses=True), train_set, val_set, tmp_path / "b")


def test_runs_are_deterministic_for_a_seed(tmp_path: Path, train_set: FaceSet, val_set: FaceSet) -> None:
    recipe = tiny("baseline", {"width": 8, "input_size": 12}, 12)
    a = Trainer(recipe, train_set, val_set, tmp_path / "a").fit(progress=False)
    b = Trainer(recipe, train_set, val_set, tmp_path / "b").fit(progress=False)
    c = Trainer(replace(recipe, seed=1), train_set, val_set, tmp_path / "c").fit(progress=False)
    assert states_equal(a, b)
    assert not states_equal(a, c)


class _Interrupted(Exception):
    pass


def run_then_interrupted_and_resumed(recipe: Recipe, train_set: FaceSet, val_set: FaceSet, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, device: str = "cpu") -> tuple[Trainer, Trainer]:
    """(an uninterrupted 2-epoch run, the same run stopped after its first checkpoint and resumed)."""
    full = Trainer(recipe, train_set, val_set, tmp_path / "A", device=device)
    full.fit(progress=False)
    original_save = Trainer._save

    def save_then_stop(self: Trainer, epoch: int) -> None:
        original_save(self, epoch)
        if epoch == 1:
            raise _Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_save", save_then_stop)
        with pytest.raises(_Interrupted):
            Trainer(recipe, train_set, val_set, tmp_path / "B", device=device).fit(progress=False)
    resumed = Trainer(recipe, train_set, val_set, tmp_path / "B", device=device)
    resumed.fit(progress=False)
    return full, resumed


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # default dropout (0.2) on: resume must restore every random stream, not only the data generator
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16, epochs=2)
    full_trainer, resumed_trainer = run_then_interrupted_and_resumed(recipe, train_set, val_set, tmp_path, monkeypatch)
    check_history(resumed_trainer, 2)
    assert resumed_trainer.history[0] == {**full_trainer.history[0], "seconds": resumed_trainer.history[0]["seconds"]}
    assert resumed_trainer.history[1]["loss"] == pytest.approx(full_trainer.history[1]["loss"], rel=1e-5)
    a, b = full_trainer.model.state_dict(), resumed_trainer.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    # a finished run resumes to the end without training again
    again = Trainer(recipe, train_set, val_set, tmp_path / "B")
    assert states_equal(again.fit(progress=False), resumed_trainer.model)
    assert len(again.history) == 2


def test_training_runs_cudnns_deterministic_algorithms_and_restores_its_flags(
        tmp_path: Path, train_set: FaceSet, val_set: FaceSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """cuDNN's default algorithms made two CUDA runs of one seed differ (an H100, stop 33): a resumed
    run could not match the uninterrupted one. Checked on the flags, which the CPU has too."""
    seen: list[tuple[bool, bool]] = []
    original_step = Trainer._supervised_step

    def recording_step(self: Trainer, hr: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        cudnn = torch.backends.cudnn
        seen.append((cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, cudnn.enabled))
        return original_step(self, hr, y)

    monkeypatch.setattr(Trainer, "_supervised_step", recording_step)
    for flag, value in (("benchmark", True), ("deterministic", False), ("allow_tf32", False), ("enabled", False)):
        monkeypatch.setattr(torch.backends.cudnn, flag, value)  # the user's other flags must stay theirs
    Trainer(tiny("baseline", {"width": 8, "input_size": 12}, 12), train_set, val_set, tmp_path).fit(progress=False)
    assert seen and set(seen) == {(True, False, False, False)}
    cudnn = torch.backends.cudnn
    assert (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, cudnn.enabled) == (False, True, False, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_on_cuda_resumes_like_an_uninterrupted_run(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The degradation's noise was drawn with the run's CPU generator on the CUDA batch (an error at the
    first step), and CUDA's random stream (dropout there) was not in the checkpoint."""
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16, epochs=2)
    full, resumed = run_then_interrupted_and_resumed(recipe, train_set, val_set, tmp_path, monkeypatch, "cuda")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_baseline_learns_a_visual_pattern(tmp_path: Path) -> None:
    """Brightness codes the class: a width-8 baseline at 16 px must do far better than chance (1/7)."""
    train, val = synthetic_faces(448, seed=2), synthetic_faces(140, seed=3)
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16, epochs=3)
    trainer = Trainer(recipe, train, val, tmp_path)
    trainer.fit(progress=False)
    assert trainer.history[-1]["val_acc"] > 0.6
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]


def test_predict_logits_at_other_resolutions(train_set: FaceSet) -> None:
    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16).train()
    for r in (8, 16, 24, 48):
        logits = predict_logits(model, train_set.images[:10], 16, eval_resolution=r, batch_size=4)
        assert logits.shape == (10, 7) and torch.isfinite(logits).all()
    assert model.training  # mode restored
    native = predict_logits(model, train_set.images[:10], 16)
    torch.testing.assert_close(native, predict_logits(model, train_set.images[:10], 16, eval_resolution=16))


@pytest.mark.parametrize("value", [float("nan"), 1e6], ids=["nan", "beyond-fp16"])
def test_export_refuses_weights_that_are_not_finite_in_fp16(tmp_path: Path, val_set: FaceSet, value: float) -> None:
    """A diverged run (NaN weights), or a weight beyond fp16's range, was exported as if nothing were wrong:
    chance-level metrics, temperature 100 (the end of the fitted range), and a file that predicts nothing."""
    from lrfer.train.export import export

    model = build_model("baseline", width=8, input_size=16).eval()
    with torch.no_grad():
        model.fc.weight[0, 0] = value
    out = tmp_path / "baseline-synthetic-16px.safetensors"
    with pytest.raises(ValueError, match=r"baseline-synthetic-16px: not exported: fc\.weight hold NaN or infinite"):
        export(model, tiny("baseline", {"width": 8, "input_size": 16}, 16), "baseline-synthetic-16px", "synthetic",
               val_set, out, "test")
    assert not out.exists()


def test_an_export_killed_while_writing_leaves_the_file_it_replaces_whole(tmp_path: Path, val_set: FaceSet,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`lrfer train --out` wrote straight into the file: killed half-way, the model it was replacing was lost
    (a truncated file, refused by lrfer.load) and the new one not written."""
    from lrfer.train.export import export
    from lrfer.zoo import load_model

    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16)
    out = tmp_path / "baseline-synthetic-16px.safetensors"
    _, sha = export(build_model("baseline", width=8, input_size=16).eval(), recipe, "baseline-synthetic-16px",
                    "synthetic", val_set, out, "test")

    def killed_mid_write(self: Path, data: bytes) -> int:
        with open(self, "wb") as file:
            file.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        export(build_model("baseline", width=8, input_size=16).eval(), recipe, "baseline-synthetic-16px",
               "synthetic", val_set, out, "test")
    monkeypatch.undo()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    load_model(out)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_export_scores_the_fp16_weights_it_ships(tmp_path: Path, val_set: FaceSet) -> None:
    """The manifest's temperature and metrics must describe the fp16 file, not the fp32 run."""
    from safetensors.torch import load_file

    from lrfer.train.export import calibrate_and_score, export

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16).train()
    with torch.no_grad():
        model(torch.randn(32, 1, 16, 16))
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # digits that fp16 cannot hold
    model.eval()
    fp32 = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = tiny("baseline", {"width": 8, "input_size": 16}, 16)
    out = tmp_path / "baseline-synthetic-16px.safetensors"
    entry, sha = export(model, recipe, "baseline-synthetic-16px", "synthetic", val_set, out, "test")

    assert any(not torch.equal(fp32[k], v) for k, v in model.state_dict().items())
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, fp32[key].half().float()), key
    shipped = build_model("baseline", width=8, input_size=16).eval()
    shipped.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(out).items()})
    temperature, scores = calibrate_and_score(shipped, recipe, val_set)
    assert entry["temperature"] == round(temperature, 4)
    assert entry["metrics"]["publictest_accuracy"] == round(scores.accuracy, 4)
    assert entry["metrics"]["publictest_ece"] == round(scores.ece, 4)
    assert len(sha) == 64


def test_licence_of_a_model_taught_by_a_teacher_names_it() -> None:
    """A student distilled from the FER2013 teacher on other data learnt from FER2013 too: its licence
    said only 'see the dataset's own licence'. A teacher file is named by its file name (no local path),
    and a teacher trained on the same data adds nothing."""
    from lrfer.train.export import build_entry

    distilled = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher="resnet18-fer2013-48px")
    licence = build_entry("gmenet-mine-16px", distilled, "mine", 1.0, {}, "test")["license"]
    assert "taught by resnet18-fer2013-48px (FER2013" in licence["data"]
    assert "taught by resnet18-fer2013-48px" in licence["weights"]
    supervised = tiny("baseline", {"width": 8, "input_size": 16}, 16, "supervised", teacher="resnet18-fer2013-48px")
    assert "taught" not in build_entry("baseline-mine-16px", supervised, "mine", 1.0, {}, "test")["license"]["data"]
    assert "taught" not in build_entry("gmenet-fer2013-16px", distilled, "fer2013", 1.0, {}, "test")["license"]["data"]
    chosen = build_entry("gmenet-mine-16px", distilled, "mine", 1.0, {}, "test", weights_license="CC-BY-4.0",
                         data_license="Mine: CC0")["license"]
    assert chosen["weights"] == "CC-BY-4.0, taught by resnet18-fer2013-48px"
    assert chosen["data"].startswith("Mine: CC0; taught by resnet18-fer2013-48px (FER2013")
    assert build_entry("gmenet-mine-16px", supervised, "mine", 1.0, {}, "test")["license"] == {
        "code": "MIT", "weights": "research use only (trained on mine)", "data": "mine: see the dataset's own licence"}
    own = replace(distilled, teacher="/home/me/runs/raf-teacher.safetensors")
    data = build_entry("gmenet-fer2013-16px", own, "fer2013", 1.0, {}, "test")["license"]["data"]
    assert "taught by raf-teacher.safetensors (see the teacher's own training data)" in data and "/home" not in data


def test_licence_of_a_model_taught_by_a_teacher_file_reads_the_files_entry(tmp_path: Path) -> None:
    """A teacher file was named 'see the teacher's own training data' even when its entry said FER2013
    (research use only), and listed even when it was trained on the student's own data."""
    from lrfer.train.export import build_entry
    from lrfer.zoo import load_manifest, save_weights

    zoo_entry = load_manifest().models["baseline-fer2013-16px"].to_dict()
    model = build_model("baseline", **zoo_entry["config"])
    teacher = tmp_path / "fer-teacher.safetensors"
    save_weights(model.state_dict(), teacher, zoo_entry)
    distilled = tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher))
    data = build_entry("gmenet-mine-16px", distilled, "mine", 1.0, {}, "test")["license"]["data"]
    assert "taught by fer-teacher.safetensors (FER2013 (Goodfellow et al. 2013, Kaggle): research use only)" in data
    assert "taught" not in build_entry("gmenet-fer2013-16px", distilled, "fer2013", 1.0, {}, "test")["license"]["data"]
    # two class-folder sets both named 'train' are not one set: the teacher's terms stay
    save_weights(model.state_dict(), teacher, {**zoo_entry, "name": "baseline-train-16px", "dataset": "train",
                                               "license": {**zoo_entry["license"], "data": "ACME faces: no redistribution"}})
    data = build_entry("gmenet-train-16px", distilled, "train", 1.0, {}, "test")["license"]["data"]
    assert data == "train: see the dataset's own licence; taught by fer-teacher.safetensors (ACME faces: no redistribution)"


# ------------------------------------------------------------------ what each loss and step computes
def _energy(feature_map: torch.Tensor) -> torch.Tensor:
    """Attention transfer's map by hand: channel mean of squares, flattened, L2-normalised."""
    energy = feature_map.pow(2).mean(1).flatten(1)
    return energy / energy.norm(dim=1, keepdim=True)


def test_attention_transfer_loss_sums_squared_distances_over_positions_and_stages() -> None:
    """The value, not only its sign: a loss of the last stage only, one averaged over positions (a
    different att_weight in effect) or one that up-samples the student to the teacher's size passed."""
    torch.manual_seed(0)
    student = [torch.randn(3, 4, 8, 8), torch.randn(3, 8, 4, 4)]
    teacher = [torch.randn(3, 6, 16, 16), torch.randn(3, 5, 4, 4)]
    pooled = torch.nn.functional.avg_pool2d(teacher[0].pow(2).mean(1, keepdim=True), 2)  # to the student's 8x8
    first = (_energy(student[0]) - torch.nn.functional.normalize(pooled.flatten(1), dim=1)).pow(2).sum(1).mean()
    second = (_energy(student[1]) - _energy(teacher[1])).pow(2).sum(1).mean()
    assert losses.attention_transfer_loss(student, teacher).item() == pytest.approx((first + second).item(), rel=1e-5)


def test_distillation_kl_is_the_teachers_kl_from_the_student_per_face() -> None:
    """KL(teacher || student) at temperature T, summed over classes, averaged over faces, times T^2:
    the reversed KL, or torch's element-wise "mean" (a seventh of it), still passed the other checks."""
    torch.manual_seed(0)
    student, teacher, t = torch.randn(5, 7), torch.randn(5, 7) * 3, 4.0
    p_teacher = torch.softmax(teacher / t, 1)
    expected = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, 1))).sum(1).mean() * t**2
    assert losses.distillation_kl(student, teacher, t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_feature_loss_weighs_each_faces_l1_distance() -> None:
    """FSR-FER's feature loss: mean |sr - hr| per face, times that face's weight, averaged."""
    sr = torch.zeros(2, 3, 4, 4)
    hr = torch.ones(2, 3, 4, 4)
    hr[1] = -2.0  # distance 1 for face 0, 2 for face 1 (its sign must not matter)
    weights = torch.tensor([1.0, 3.0])
    assert losses.weighted_feature_loss(sr, hr, weights).item() == pytest.approx((1 * 1 + 2 * 3) / 2)


def test_gan_loss_targets() -> None:
    """real=True asks the logits to be high, real=False low (the generator's and the discriminator's targets)."""
    high, low = torch.full((4,), 20.0), torch.full((4,), -20.0)
    assert losses.gan_loss(high, real=True).item() < 1e-6 and losses.gan_loss(low, real=False).item() < 1e-6
    assert losses.gan_loss(high, real=False).item() > 10 and losses.gan_loss(low, real=True).item() > 10


def _same_draws(trainer: Trainer, hr: torch.Tensor) -> torch.Tensor:
    """The degraded faces the trainer's next step will draw, drawn here without using up its generator."""
    state = trainer.generator.get_state()
    low_res = trainer._degrade(hr)
    trainer.generator.set_state(state)
    return low_res


def test_supervised_step_uses_the_recipes_label_smoothing(tmp_path: Path, train_set: FaceSet) -> None:
    recipe = replace(tiny("baseline", {"width": 8, "input_size": 16}, 16), label_smoothing=0.3)
    trainer = Trainer(recipe, train_set, None, tmp_path)
    trainer.model.eval()  # no dropout: the loss can be recomputed
    hr, y = trainer._batch(torch.arange(32))
    with torch.no_grad():
        logits = trainer.model(normalize(_same_draws(trainer, hr)))
    expected = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.3).item()
    assert trainer._supervised_step(hr, y)["loss"] == pytest.approx(expected, rel=1e-5)


def test_distill_step_adds_each_weighted_term(tmp_path: Path, train_set: FaceSet, teacher_path: Path) -> None:
    """GME-Net's loss is ce + att_weight * att + kd_weight * kd, with the student on the degraded face,
    the teacher on the 48 px face, and the soft targets at the recipe's temperature: a term left out of
    the optimised loss, or a teacher shown the low-resolution face, still passed the one-epoch run."""
    recipe = replace(tiny("gmenet", {"width": 8, "input_size": 16}, 16, "distill", teacher=str(teacher_path)),
                     att_weight=3.0, kd_weight=0.5, kd_temperature=2.0, label_smoothing=0.2)
    trainer = Trainer(recipe, train_set, None, tmp_path)
    trainer.model.eval()
    hr, y = trainer._batch(torch.arange(32))
    with torch.no_grad():
        low_res = normalize(_same_draws(trainer, hr))
        teacher_maps = trainer.teacher.forward_features(normalize(hr))
        features, student_maps = trainer.model.forward_features(low_res)
        logits = trainer.model.fc(features)
        ce = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.2).item()
        att = losses.attention_transfer_loss(student_maps, teacher_maps[:len(student_maps)]).item()
        kd = losses.distillation_kl(logits, trainer.teacher.head(teacher_maps[-1]), 2.0).item()
    record = trainer._distill_step(hr, y)
    assert record["ce"] == pytest.approx(ce, rel=1e-5)
    assert record["att"] == pytest.approx(att, rel=1e-5) and record["kd"] == pytest.approx(kd, rel=1e-4)
    assert record["loss"] == pytest.approx(ce + 3.0 * att + 0.5 * kd, rel=1e-5)


def test_fsr_step_losses_follow_fsrfer(tmp_path: Path, train_set: FaceSet, teacher_path: Path) -> None:
    """The generator's loss: weighted L1 to the 48 px face's features + weighted classification +
    adversarial (its output called real); the discriminator's: 48 px features real, generated fake."""
    recipe = replace(tiny("fsrfer", {"input_size": 16, "extractor_width": 8, "hidden": 16, "growth": 8}, 16, "fsr",
                          teacher=str(teacher_path)), lr=1e-3, weight_decay=0.0, adv_weight=0.5, cls_weight=2.0,
                     fsr_beta=3.0)
    trainer = Trainer(recipe, train_set, None, tmp_path)
    model, disc = trainer.model, trainer.discriminator
    assert disc is not None
    with torch.no_grad():  # the generator is not the identity, so that sr differs from the LR features
        for p in model.generator.conv_out.parameters():
            p.normal_(0, 0.05)
    model.eval()
    hr, y = trainer._batch(torch.arange(32))
    with torch.no_grad():
        hr_feat = model.extractor.stem_to_stage(normalize(hr), model.sr_stage)
        lr_feat = model.lr_features(normalize(_same_draws(trainer, hr)))
        weights = 1 + 3.0 * (1 - torch.softmax(model.classify_features(lr_feat), 1)[torch.arange(32), y])
        sr = model.generator(lr_feat)
        feat = ((sr - hr_feat).abs().flatten(1).mean(1) * weights).mean().item()
        cls = (torch.nn.functional.cross_entropy(model.classify_features(sr), y, reduction="none") * weights).mean().item()
        adv = torch.nn.functional.softplus(-disc(sr)).mean().item()  # -log sigmoid: called real
        d = (torch.nn.functional.softplus(-disc(hr_feat)).mean() + torch.nn.functional.softplus(disc(sr)).mean()).item()
    record = trainer._fsr_step(hr, y)
    assert record["feat"] == pytest.approx(feat, rel=1e-4) and record["cls"] == pytest.approx(cls, rel=1e-4)
    assert record["loss"] == pytest.approx(feat + 2.0 * cls + 0.5 * adv, rel=1e-4)
    assert record["d"] == pytest.approx(d, rel=1e-4)


def test_fit_shuffles_each_epoch_and_reports_means(tmp_path: Path, train_set: FaceSet, val_set: FaceSet,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each epoch visits the faces once in a new random order, in full batches; its record holds the mean
    of the steps' values and the validation accuracy; the optimiser gets the recipe's settings and the
    one-cycle schedule ends with the run (a schedule longer than the run, a fixed order, sums instead of
    means and accuracy on the training faces all passed the one-epoch runs)."""
    recipe = replace(tiny("baseline", {"width": 8, "input_size": 16}, 16, epochs=2), weight_decay=1e-3, lr=0.02)
    trainer = Trainer(recipe, train_set, val_set, tmp_path)
    assert trainer.optimizers["model"].param_groups[0]["weight_decay"] == 1e-3
    seen: list[torch.Tensor] = []
    batch = trainer._batch

    def recording_batch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(index.clone())
        return batch(index)

    monkeypatch.setattr(trainer, "_batch", recording_batch)
    lrs: list[float] = []

    def step(hr: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        lrs.append(trainer.optimizers["model"].param_groups[0]["lr"])
        return {"loss": float(len(lrs) - 1)}

    monkeypatch.setattr(trainer, "step_fn", step)
    with pytest.warns(UserWarning, match="lr_scheduler.step"):  # no optimizer step: the stub trains nothing
        model = trainer.fit(progress=False)
    steps = len(train_set) // 32
    assert len(seen) == 2 * steps and all(len(index) == 32 for index in seen)
    epochs = [torch.cat(seen[:steps]), torch.cat(seen[steps:])]
    for order in epochs:
        assert len(set(order.tolist())) == len(order)  # without replacement
        assert not torch.equal(order, torch.arange(len(order)))
    assert not torch.equal(epochs[0], epochs[1])
    assert [h["loss"] for h in trainer.history] == [sum(range(steps)) / steps, sum(range(steps, 2 * steps)) / steps]
    assert trainer.history[-1]["val_acc"] == accuracy(model, val_set, 16)
    assert trainer.history[-1]["val_acc"] != accuracy(model, train_set, 16)
    # OneCycleLR over the run's steps: from max_lr / 25 up to max_lr, down to max_lr / 25 / 1e4 at the last step
    assert lrs[0] == pytest.approx(0.02 / 25) and max(lrs) <= 0.02 and lrs[-1] == pytest.approx(0.02 / 25 / 1e4)


@pytest.mark.parametrize("erase_prob", [0.0, 1.0])
def test_batches_erase_as_the_recipe_says(tmp_path: Path, erase_prob: float) -> None:
    """The recipe's erase_prob reaches random_erase: none erased at 0, every face at 1."""
    bright = FaceSet(np.full((32, 48, 48), 200, np.uint8), np.arange(32) % 7, "bright")
    trainer = Trainer(replace(tiny("baseline", {"width": 8, "input_size": 16}, 16), erase_prob=erase_prob), bright,
                      None, tmp_path)
    hr, _ = trainer._batch(torch.arange(32))
    erased = (hr == 0).flatten(1).any(1)
    assert erased.all() if erase_prob else not erased.any()


def test_predict_logits_degrades_to_the_evaluation_resolution(train_set: FaceSet) -> None:
    """Area down-sampling to the evaluated size, then bicubic up-sampling (or area down-sampling) to the
    model's: the evaluated resolution was only checked for the output's shape."""
    from lrfer.faces.degrade import to_native, upsample

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16).eval()
    images = train_set.images[:10]
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    with torch.no_grad():
        by_hand = {8: model(normalize(upsample(to_native(x, 8), 16))), 24: model(normalize(to_native(to_native(x, 24), 16)))}
    for r, expected in by_hand.items():
        torch.testing.assert_close(predict_logits(model, images, 16, eval_resolution=r), expected)
    assert not torch.allclose(by_hand[8], predict_logits(model, images, 16), atol=1e-4)


def test_askd_loss_average_pools_a_larger_teacher_map() -> None:
    """A teacher's spatial map twice the student's size is average-pooled to it (max-pooling passed
    the nearest-neighbour check above, on which the two agree)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 16, 16)
    pooled = torch.nn.functional.avg_pool2d(teacher, 2)
    expected = (1 - torch.nn.functional.cosine_similarity(student.flatten(1), pooled.flatten(1), dim=1)).mean()
    assert losses.askd_loss([student], [teacher]).item() == pytest.approx(expected.item(), rel=1e-5)


def test_export_metrics_are_the_calibrated_scores_at_the_native_resolution(tmp_path: Path, val_set: FaceSet) -> None:
    """The entry's ECE is measured with its temperature, its macro-F1 is the macro-F1 and its seed the
    recipe's: compared with calibrate_and_score itself, an uncalibrated ECE or a score at another
    resolution passed."""
    from lrfer.train.evaluate import fit_temperature, score
    from lrfer.train.export import export

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16).eval()
    recipe = replace(tiny("baseline", {"width": 8, "input_size": 16}, 16), seed=3)
    entry, _ = export(model, recipe, "baseline-synthetic-16px", "synthetic", val_set,
                      tmp_path / "baseline-synthetic-16px.safetensors", "test", split="val")
    logits = predict_logits(model, val_set.images, 16, eval_resolution=16)
    temperature = fit_temperature(logits, val_set.labels)
    calibrated, raw = score(logits, val_set.labels, 16, temperature), score(logits, val_set.labels, 16)
    assert entry["temperature"] == round(temperature, 4) and entry["seed"] == 3
    assert entry["metrics"] == {"val_accuracy": round(calibrated.accuracy, 4),
                                "val_macro_f1": round(calibrated.macro_f1, 4), "val_ece": round(calibrated.ece, 4)}
    assert round(raw.ece, 4) != entry["metrics"]["val_ece"] and calibrated.macro_f1 != calibrated.accuracy


def test_colour_faces_are_read_as_bgr(tmp_path: Path) -> None:
    """OpenCV's BGR order, as the recognizer reads photos: a pure blue face is dark gray (0.114 * 255),
    not the 0.299 * 255 of reading it as RGB; from a class folder and from an (N, H, W, 3) .npz alike."""
    import cv2

    blue = np.zeros((48, 48, 3), np.uint8)
    blue[..., 0] = 255
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces" / "happy" / "blue.png"), blue)
    np.savez(tmp_path / "blue.npz", images=blue[None], labels=np.array([3]))
    for faces in (load_faces(tmp_path / "faces"), load_faces(tmp_path / "blue.npz")):
        assert np.abs(faces.images.astype(int) - 29).max() <= 1


def test_random_affine_draws_rotations_scales_shifts_and_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrices handed to affine_grid: a rotation of at most max_rotate degrees over a scale in
    ``scale``, mirrored for about half the faces, shifted by up to max_shift of the side (2 * max_shift
    in affine_grid's [-1, 1] coordinates)."""
    from lrfer.train.augment import random_affine

    thetas: list[torch.Tensor] = []
    affine_grid = torch.nn.functional.affine_grid
    monkeypatch.setattr(torch.nn.functional, "affine_grid",
                        lambda theta, *a, **k: thetas.append(theta.clone()) or affine_grid(theta, *a, **k))
    random_affine(torch.rand(256, 1, 8, 8), torch.Generator().manual_seed(0), max_rotate=10.0, scale=(0.8, 1.25),
                  max_shift=0.1)
    linear, shift = thetas[0][:, :, :2], thetas[0][:, :, 2]
    det = torch.linalg.det(linear)
    unflipped = linear.clone()
    unflipped[:, :, 0] *= det.sign()[:, None]
    size = det.abs().sqrt()  # 1 / scale
    rotation = unflipped / size[:, None, None]
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(2).expand(256, 2, 2), atol=1e-5, rtol=0)
    angle = torch.rad2deg(torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0])).abs()
    assert angle.max() <= 10.0 + 1e-4 and angle.max() > 9.0
    assert size.min() >= 0.8 - 1e-5 and size.max() <= 1.25 + 1e-5 and size.max() - size.min() > 0.3
    assert 0.35 < (det < 0).float().mean() < 0.65
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.18
