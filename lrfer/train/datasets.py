"""Datasets for training and evaluation, all returned as 48x48 grayscale uint8 faces + zoo labels.

Three layouts are understood (see :func:`load_faces`):

* FER2013 ``.npz``: ``labels`` (N,) whole numbers 0..6 in the zoo's class order (FER2013's own) and
  ``images`` (N, H, W) gray, (N, H, W, 1), (N, H, W, 3) BGR or flat (N, H*W) square faces, resized to
  48x48 when another size; uint8, or any numbers that are whole 0..255 gray levels (float faces scaled
  to 0..1 are refused rather than guessed);
* a folder of class folders (``<root>/<class name>/*.jpg``, names from :data:`lrfer.constants.CLASSES`);
  a folder below them that cannot be listed (permissions) is an error naming it, as an unreadable image is;
* RAF-DB "basic" (``EmoLabel/list_patition_label.txt`` + ``Image/aligned/*_aligned.jpg``), its
  labels mapped onto the zoo's class order.

Faces are square in every layout, as the detector's crops are at inference: a non-square face (an
``.npz`` of (N, 48, 40) images, a 640x490 file in a class folder) is centre-cropped to the square of its
shorter side, as timm's and torchvision's evaluation transforms crop, with one warning per dataset; it
was stretched to 48x48, which distorts the expression. The rule is :func:`lrfer.io.centre_square`,
which ``Recognizer.predict_crops`` and ``detector=None`` apply too, so eval and predict score the same
square of the same file.
"""
from __future__ import annotations

import codecs
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrfer.constants import CLASSES, HR_SIZE, RAF_SPLITS
from lrfer.io import IMAGE_EXTENSIONS, centre_square, read_image_file, walk_files

log = logging.getLogger(__name__)

#: The image files of a class folder: those `lrfer predict` reads from a folder (JAFFE's .tiff too).
IMAGE_SUFFIXES = IMAGE_EXTENSIONS
#: RAF-DB basic labels (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral) -> zoo index.
RAF_TO_ZOO = {1: 5, 2: 2, 3: 1, 4: 3, 5: 4, 6: 0, 7: 6}
RAF_LABELS = "1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral"
RAF_LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
#: RAF-DB basic's aligned 100x100 faces (``Image/aligned.zip``), the faces lrfer reads; ``Image/original/`` holds the
#: whole photos, which it does not.
RAF_ALIGNED = Path("Image") / "aligned"
RAF_ORIGINAL = Path("Image") / "original"


@dataclass(frozen=True)
class FaceSet:
    """Faces (N, 48, 48) uint8 and labels (N,) int64 in :data:`CLASSES` order."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def _to_face48(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    interp = cv2.INTER_AREA if image.shape[0] > HR_SIZE else cv2.INTER_CUBIC
    return cv2.resize(image, (HR_SIZE, HR_SIZE), interpolation=interp)


def _read_image(path: Path, cropped: list[Path] | None = None) -> np.ndarray:
    import cv2

    image = read_image_file(path)
    if cropped is not None and image.shape[0] != image.shape[1]:
        cropped.append(path)
    return _to_face48(cv2.cvtColor(centre_square(image), cv2.COLOR_RGB2GRAY))


def warn_cropped(where: Path, count: int, total: int, example: object) -> None:
    """One warning for the ``count`` non-square faces of ``total`` that were centre-cropped."""
    if count:
        log.warning("%s: %d of %d faces are not square (%s): each was centre-cropped to the square of its shorter "
                    "side, as the detector's crops are square at inference (crop them yourself to choose the square)",
                    where, count, total, example)


def load_npz(path: Path) -> FaceSet:
    arrays = _read_npz(path)
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: no {' or '.join(repr(k) for k in missing)} array (it has {sorted(arrays)}); "
                         "a face .npz holds 'images' (N, 48, 48) uint8 and 'labels' (N,) 0..6")
    if "classes" in arrays:
        _check_npz_classes(path, arrays["classes"])
    images = _npz_images(path, arrays["images"])
    return FaceSet(images, _npz_labels(path, arrays["labels"], len(images)), path.stem)


def _check_npz_classes(path: Path, classes: np.ndarray) -> None:
    """ValueError unless ``classes`` names :data:`CLASSES` in order (as text or as bytes, ``dtype='S'``;
    ignoring case, as the names of class folders are matched)."""
    if classes.ndim != 1:
        raise ValueError(f"{path}: 'classes' has shape {classes.shape}; expected ({len(CLASSES)},) class names")
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    if tuple(name.lower() for name in names) != CLASSES:
        raise ValueError(f"{path}: class order {names} differs from the zoo's {list(CLASSES)}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz (pickles refused); a truncated or damaged file is a ValueError naming it."""
    import zipfile
    import zlib

    data = None
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):  # a .npy array under a .npz name
            raise ValueError("a single .npy array, not a .npz archive")
        with data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, zipfile.BadZipFile) and err.filename:
            raise  # missing file, permissions: the caller's own message
        if "allow_pickle" in str(err) and hasattr(data, "files"):  # an intact archive
            raise ValueError(f"{path}: holds an object array, which lrfer does not read (it would unpickle it); "
                             "save 'images' and 'labels' as numbers and 'classes', if any, as strings "
                             "(np.array(names, dtype=str))") from None
        raise ValueError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err}); it may be truncated "
                         "or damaged: copy it again") from None


def _npz_images(path: Path, images: np.ndarray) -> np.ndarray:
    """(N, 48, 48) uint8 from the image layouts in the module docstring."""
    if images.ndim == 2:  # one flat row per face, as in FER2013's CSV
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"{path}: 'images' has shape {images.shape}; flat rows must hold square faces "
                             f"(e.g. 2304 = 48x48 pixels)")
        images = images.reshape(len(images), side, side)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"{path}: 'images' has shape {images.shape}; expected (N, H, W) gray, (N, H, W, 1), "
                         "(N, H, W, 3) BGR or (N, H*W) flat faces")
    if len(images) == 0:
        raise ValueError(f"{path}: no faces in 'images'")
    if 0 in images.shape[1:3]:
        raise ValueError(f"{path}: 'images' has shape {images.shape}: faces of 0 pixels")
    if images.shape[1] != images.shape[2]:
        warn_cropped(path, len(images), len(images), f"{images.shape[2]}x{images.shape[1]} pixels")
        images = centre_square(images, axes=(1, 2))
    images = _gray_levels(path, images)
    if images.ndim == 4 or images.shape[1:] != (HR_SIZE, HR_SIZE):
        images = np.stack([_to_face48(im) for im in images])
    return images


def _gray_levels(path: Path, images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "biufc":  # text, dates, records: np.min has no loop for some of them
        raise ValueError(f"{path}: 'images' holds {images.dtype} values; expected numbers, whole gray levels "
                         "0..255 (uint8)")
    whole = images.dtype.kind in "iu" or (images.dtype.kind == "f" and bool(np.all(images == np.round(images))))
    if not whole or images.min() < 0 or images.max() > 255:
        raise ValueError(f"{path}: 'images' ({images.dtype}, values {images.min():g}..{images.max():g}) must hold "
                         "whole gray levels 0..255; for faces scaled to 0..1 store "
                         "(images * 255).round().astype(np.uint8)")
    return images.astype(np.uint8)


def _npz_labels(path: Path, labels: np.ndarray, count: int) -> np.ndarray:
    if labels.shape != (count,):
        raise ValueError(f"{path}: 'labels' has shape {labels.shape} for {count} images; expected ({count},)")
    valid = np.isin(labels, np.arange(len(CLASSES))) if labels.dtype.kind in "iuf" else np.zeros(count, bool)
    if not valid.all():
        bad = np.unique(labels[~valid])[:5].tolist()
        raise ValueError(f"{path}: labels {bad} are not class indices 0..{len(CLASSES) - 1} "
                         f"({', '.join(f'{i} {c}' for i, c in enumerate(CLASSES))})")
    return labels.astype(np.int64)


def load_class_folders(root: Path) -> FaceSet:
    images, labels = [], []
    cropped: list[Path] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not _not_a_class_folder(p.name))
    unknown = [p.name for p in folders if p.name.lower() not in CLASSES]
    rafdb = [p for p in folders if is_rafdb(p)]
    if rafdb:  # RAF-DB/ given for RAF-DB/basic/
        raise ValueError(f"{root}: {rafdb[0]} is RAF-DB's 'basic' folder; pass that folder itself")
    _check_not_rafdb_without_labels(root)
    if unknown:
        raise ValueError(f"{root}: folders {unknown} are not class names; expected some of {list(CLASSES)}"
                         f"{_raf_numbered_hint(unknown)}")
    by_class = {name: [p.name for p in folders if p.name.lower() == name] for name in CLASSES}
    twins = [names for names in by_class.values() if len(names) > 1]
    if twins:  # one of them would be read and the others left out
        raise ValueError(f"{root}: folders {twins} name the same class (names are matched ignoring case); "
                         "merge them into one folder")
    for index, name in enumerate(CLASSES):
        if not by_class[name]:
            continue
        for path in _image_files(root / by_class[name][0]):
            images.append(_read_image(path, cropped))
            labels.append(index)
    warn_cropped(root, len(cropped), len(images), f"{cropped[0]} among them" if cropped else "")
    if not images:
        if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
            raise ValueError(f"{root}: its images are not in class folders; move each to {root}/<class name>/, "
                             f"a class name being one of {list(CLASSES)}")
        raise ValueError(f"{root}: no images found in class folders")
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), own_name(root))


def _raf_numbered_hint(names: list[str]) -> str:
    """For class folders named 1..7, as RAF-DB's copies sorted by label are (``DATASET/train/1/``), the
    renaming that makes them class folders: the numbers alone do not say whose class order they follow."""
    if not set(names) <= {str(label) for label in RAF_TO_ZOO}:
        return ""
    renames = ", ".join(f"{label} -> {CLASSES[RAF_TO_ZOO[label]]}" for label in sorted(RAF_TO_ZOO))
    return f"; if they are RAF-DB's labels ({RAF_LABELS}), rename them: {renames}"


def _check_not_rafdb_without_labels(root: Path) -> None:
    """ValueError when ``root`` is laid out as RAF-DB's ``basic`` folder (``EmoLabel/``, ``Image/aligned/``) but
    lacks its label list, which it was told "folders ['EmoLabel', 'Image'] are not class names" for."""
    if not ((root / RAF_LABEL_FILE.parent).is_dir() or (root / RAF_ALIGNED).is_dir()
            or (root / RAF_ORIGINAL).is_dir()):
        return
    listed = sorted(p.name for p in (root / RAF_LABEL_FILE.parent).glob("*.txt"))
    holds = f" ({RAF_LABEL_FILE.parent}/ holds {listed})" if listed else ""
    raise ValueError(f"{root}: laid out as RAF-DB's 'basic' folder but has no {RAF_LABEL_FILE}{holds}; put RAF-DB's "
                     "label list there under that name (RAF-DB's spelling, 'patition')")


#: macOS's zip archiver puts the resource forks of a zipped folder's files in this folder beside it.
MACOS_ZIP_FOLDER = "__MACOSX"


def _not_a_class_folder(name: str) -> bool:
    """Folders beside the class folders that hold no faces: hidden ones (``.git``, ``.ipynb_checkpoints``,
    left out as ``lrfer predict``'s searches leave them) and macOS's ``__MACOSX`` of an unzipped archive
    (it was refused as "not class names")."""
    return name.startswith(".") or name == MACOS_ZIP_FOLDER


def _image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` that ``lrfer predict`` reads from it, in its order: links to
    folders followed, as ``lrfer predict`` follows them (``Path.rglob`` left them out without a word).
    A folder that cannot be listed (permissions) is a PermissionError (an OSError) naming it: ``lrfer
    predict`` warns and goes on, but a model trained without that folder's faces would be trained on other
    data than the folder holds, as silently as before; an unreadable image stops the loading too."""
    unlisted: list[OSError] = []
    names = walk_files(os.fsencode(folder), IMAGE_SUFFIXES, unlisted)
    if unlisted:
        raise _unlisted_error(unlisted)
    return [folder / os.fsdecode(name) for name in names]


def _unlisted_error(unlisted: list[OSError]) -> OSError:
    """One error naming the folders of ``unlisted`` (the first few), as ``lrfer predict`` names them."""
    first = unlisted[0]
    names = [os.fsdecode(err.filename) if err.filename is not None else str(err) for err in unlisted]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    error = PermissionError if isinstance(first, PermissionError) else OSError
    return error(f"cannot list folder {', '.join(repr(n) for n in names[:3])}{more}: {first.strerror or first} "
                 "(its faces would be left out of the data: make it readable or move it out)")


def is_rafdb(path: Path) -> bool:
    """Whether ``path`` is RAF-DB's ``basic`` folder (it holds the label list)."""
    return (path / RAF_LABEL_FILE).exists()


def load_rafdb(root: Path, split: str = "train") -> FaceSet:
    """RAF-DB basic: ``split`` is "train" or "test" (the file-name prefix in the label list)."""
    if split not in RAF_SPLITS:
        raise ValueError(f"RAF-DB split {split!r}: use one of {list(RAF_SPLITS)}")
    images, labels = [], []
    aligned = _raf_aligned_folder(root)
    label_file = root / RAF_LABEL_FILE
    for number, line in enumerate(_read_label_list(label_file).split("\n"), 1):
        if not line.strip():
            continue
        name, label = _raf_entry(label_file, number, line)
        if not name.startswith(split + "_"):
            continue
        images.append(_read_image(_raf_face(aligned, name, label_file, number)))
        labels.append(label)
    if not images:
        raise ValueError(f"{root}: no '{split}' entries in {RAF_LABEL_FILE}")
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), f"rafdb-{split}")


def _read_label_list(label_file: Path) -> str:
    """The text of RAF-DB's label list, with any line endings and a byte-order mark (Windows editors): UTF-8's
    made the first name unmatched; UTF-16's (Notepad's "Unicode") was read as UTF-8, line 1 refused as garbage."""
    with open(label_file, "rb") as file:
        utf16 = file.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    return label_file.read_text(encoding="utf-16" if utf16 else "utf-8-sig", errors="replace")


def _raf_aligned_folder(root: Path) -> Path:
    """RAF-DB's folder of aligned faces; ValueError naming the fix when it is missing (a copy with only
    ``Image/original/`` was told "cannot read image: no such file .../train_00001_aligned.jpg")."""
    folder = root / RAF_ALIGNED
    if folder.is_dir():
        return folder
    original = (f" ({RAF_ORIGINAL}/ holds RAF-DB's whole photos, which lrfer does not read)"
                if (root / RAF_ORIGINAL).is_dir() else "")
    raise ValueError(f"{root}: no {RAF_ALIGNED}/ folder{original}; lrfer reads RAF-DB's aligned 100x100 faces: "
                     f"unzip RAF-DB's Image/aligned.zip into {root / 'Image'}")


def _raf_face(aligned: Path, name: str, label_file: Path, number: int) -> Path:
    """The aligned face of the label list's ``name`` (line ``number``); ValueError naming the line and the fix
    when it is missing (it was told only "cannot read image: no such file ...")."""
    path = aligned / f"{Path(name).stem}_aligned.jpg"
    if path.is_file():
        return path
    if (aligned / RAF_ALIGNED.name / path.name).is_file():  # aligned.zip unzipped into a folder of its own
        fix = f"its faces are one folder too deep, in {aligned / RAF_ALIGNED.name}: move them up into {aligned}"
    else:
        fix = f"copy it there from RAF-DB's Image/aligned.zip, or remove line {number}"
    raise ValueError(f"{label_file}, line {number}: no aligned face {path} for {name}; {fix}")


def _raf_entry(label_file: Path, number: int, line: str) -> tuple[str, int]:
    """(image name, zoo label) of one line of RAF-DB's label list."""
    parts = line.split()
    if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in RAF_TO_ZOO:
        return parts[0], RAF_TO_ZOO[int(parts[1])]
    raise ValueError(f"{label_file}, line {number}: {line.strip()!r} is not '<image name> <label>' with a "
                     f"RAF-DB basic label 1..7 ({RAF_LABELS})")


def check_faces_path(path: str | Path, option: str | None = None) -> Path:
    """``path`` as a Path; FileNotFoundError naming what :func:`load_faces` reads when nothing is there
    (and the command's ``option`` that gave the path, if any)."""
    path = Path(path)
    if not path.exists():
        given = f"{option} {path}" if option else str(path)
        raise FileNotFoundError(f"{given}: no such file or folder (expected a FER2013 .npz, a RAF-DB basic folder "
                                "or a folder of class folders)")
    return path


def own_name(path: str | Path) -> str:
    """The name of the file or folder ``path`` is, ``.`` and ``..`` too (``Path('.').name`` is empty)."""
    return Path(os.path.abspath(path)).name


def load_faces(path: str | Path, split: str = "train") -> FaceSet:
    """Load any supported layout; ``split`` only matters for RAF-DB.

    >>> train = load_faces("../shared/datasets/fer2013/fer2013-train.npz")  # doctest: +SKIP
    """
    path = check_faces_path(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if is_rafdb(path):
        return load_rafdb(path, split)
    if path.is_dir():
        try:
            return load_class_folders(path)
        except ValueError:
            _check_not_inside_rafdb(path)
            raise
    _check_not_inside_rafdb(path)
    raise ValueError(f"{path}: not a .npz file, a RAF-DB basic folder or a folder of class folders")


def _check_not_inside_rafdb(path: Path) -> None:
    """ValueError naming RAF-DB's ``basic`` folder when ``path`` (which is no data lrfer reads) is inside it:
    ``basic/Image/aligned`` was told to sort its images into class folders, the label list "not a .npz file"."""
    basic = next((folder for folder in list(Path(os.path.abspath(path)).parents)[:3] if is_rafdb(folder)), None)
    if basic is not None:
        raise ValueError(f"{path}: inside RAF-DB's 'basic' folder; pass that folder itself, {basic}") from None
