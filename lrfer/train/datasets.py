"""Datasets for training and evaluation, all returned as 48x48 grayscale uint8 faces + zoo labels.

Three layouts are understood (see :func:`load_faces`):

* FER2013 ``.npz`` (``images`` (N,48,48) uint8, ``labels`` int in FER2013 order);
* a folder of class folders (``<root>/<class name>/*.jpg``, names from :data:`lrfer.constants.CLASSES`);
* RAF-DB "basic" (``EmoLabel/list_patition_label.txt`` + ``Image/aligned/*_aligned.jpg``), its
  labels mapped onto the zoo's class order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrfer.constants import CLASSES, HR_SIZE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: RAF-DB basic labels (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral) -> zoo index.
RAF_TO_ZOO = {1: 5, 2: 2, 3: 1, 4: 3, 5: 4, 6: 0, 7: 6}
RAF_LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


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


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return _to_face48(image)


def load_npz(path: Path) -> FaceSet:
    data = np.load(path)
    images, labels = data["images"], data["labels"].astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (HR_SIZE, HR_SIZE):
        images = np.stack([_to_face48(im) for im in images])
    if "classes" in data.files and tuple(str(c) for c in data["classes"]) != CLASSES:
        raise ValueError(f"{path}: class order {list(data['classes'])} differs from the zoo's {list(CLASSES)}")
    return FaceSet(images.astype(np.uint8), labels, path.stem)


def load_class_folders(root: Path) -> FaceSet:
    images, labels = [], []
    unknown = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower() not in CLASSES]
    if unknown:
        raise ValueError(f"{root}: folders {unknown} are not class names; expected some of {list(CLASSES)}")
    for index, name in enumerate(CLASSES):
        folder = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == name), None)
        if folder is None:
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(path))
                labels.append(index)
    if not images:
        raise ValueError(f"{root}: no images found in class folders")
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), root.name)


def load_rafdb(root: Path, split: str = "train") -> FaceSet:
    """RAF-DB basic: ``split`` is "train" or "test" (the file-name prefix in the label list)."""
    images, labels = [], []
    for line in (root / RAF_LABEL_FILE).read_text().split("\n"):
        if not line.strip():
            continue
        name, label = line.split()
        if not name.startswith(split):
            continue
        stem = Path(name).stem
        images.append(_read_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg"))
        labels.append(RAF_TO_ZOO[int(label)])
    if not images:
        raise ValueError(f"{root}: no '{split}' entries in {RAF_LABEL_FILE}")
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), f"rafdb-{split}")


def load_faces(path: str | Path, split: str = "train") -> FaceSet:
    """Load any supported layout; ``split`` only matters for RAF-DB.

    >>> train = load_faces("../shared/datasets/fer2013/fer2013-train.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix == ".npz":
        return load_npz(path)
    if (path / RAF_LABEL_FILE).exists():
        return load_rafdb(path, split)
    if path.is_dir():
        return load_class_folders(path)
    raise ValueError(f"{path}: not a .npz file, a RAF-DB basic folder or a folder of class folders")
