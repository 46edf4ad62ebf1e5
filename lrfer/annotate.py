"""Draw results on images: a box per face with its label and top probability (OpenCV)."""
from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrfer.results import Face, VideoFrame

if TYPE_CHECKING:  # pragma: no cover
    from lrfer.io import ImageLike

#: Box colour per class (RGB); unknown classes get :data:`DEFAULT_COLOR`.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40), "disgust": (120, 170, 20), "fear": (150, 60, 200), "happy": (250, 200, 0),
    "sad": (40, 110, 230), "surprise": (250, 120, 0), "neutral": (200, 200, 200),
}
DEFAULT_COLOR = (0, 220, 120)
#: Suffixes an annotated copy keeps (colour formats OpenCV writes); any other (a gray-only .pgm, .jfif,
#: none) is written as PNG.
COLOUR_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"})


def annotated_path(path: str | os.PathLike[str]) -> Path:
    """The name :func:`save_annotated` writes ``path`` under: its own suffix if OpenCV writes colour
    images in that format, else ``.png``.

    >>> annotated_path("out/a.jpg"), annotated_path("out/b.pgm"), annotated_path("out/c")
    (PosixPath('out/a.jpg'), PosixPath('out/b.png'), PosixPath('out/c.png'))
    """
    import cv2

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in COLOUR_IMAGE_SUFFIXES and cv2.haveImageWriter("x" + suffix):
        return target
    return target.with_suffix(".png") if suffix else target.with_name(target.name + ".png")


def annotate(image: ImageLike, faces: Sequence[Face]) -> np.ndarray:
    """An RGB ``uint8 (H, W, 3)`` copy of ``image`` (any image :func:`lrfer.io.load_image` takes, as
    ``predict`` does: a path, a gray, RGB or RGBA array, a ``PIL.Image``, a ``uint8`` tensor) with each
    face's box, label and top probability; ValueError for an image ``predict`` refuses, TypeError for
    an item of ``faces`` that is not a :class:`~lrfer.results.Face` (``predict``'s list of lists).

    The label sits above the box, or below it when there is no room above, and is moved inside the
    image where it would leave it (a face filling or cut by the image keeps a readable label). A box
    wholly outside the image is not drawn. A box that is not four numbers, has NaN or infinity, or is
    reversed (``x2 < x1`` or ``y2 < y1``: as PIL's ``rectangle``, it is not swapped silently, since it
    is most often an ``(x, y, width, height)`` box) is a ValueError naming the face.

    >>> out = annotate(np.zeros((64, 64), np.uint8), [])
    >>> out.shape
    (64, 64, 3)
    """
    import cv2

    from lrfer.io import load_image

    out = load_image(image).copy()  # a path too: turned upright by its EXIF orientation, as predict turns it
    h, w = out.shape[:2]
    if not isinstance(faces, Iterable):  # one Face, a VideoFrame: "'Face' object is not iterable"
        hint = {Face: "pass [face]", VideoFrame: "pass frame.faces"}.get(type(faces), "pass predict's list")
        raise TypeError(f"annotate takes one image's faces, a list of Face; got {type(faces).__name__} ({hint})")
    for index, face in enumerate(faces):
        if not isinstance(face, Face):
            raise TypeError(f"annotate takes one image's faces, a list of Face; got an item of type "
                            f"{type(face).__name__} (for predict's list of lists, annotate each image with its own list)")
        box = drawn_box(face.box, index, (w, h))
        if box is None:
            continue
        x1, y1, x2, y2 = box
        color = CLASS_COLORS.get(face.label, DEFAULT_COLOR)
        font_scale, thickness = label_size(x2 - x1, (w, h))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        text = f"{face.label} {face.score:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        left, baseline = label_position((x1, y1, x2, y2), (tw + 2, th + base + 2), (w, h), base)
        cv2.rectangle(out, (left, baseline - th - 2), (left + tw + 2, baseline + base), color, -1)
        cv2.putText(out, text, (left + 1, baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return out


def drawn_box(box: Sequence[float], index: int, image: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``box`` (x1, y1, x2, y2) in whole pixels for drawing on an ``image`` (width, height): a side far
    past an edge brought to the image's width or height beyond it (OpenCV takes 32-bit coordinates
    only: a box of 1e12 raised its "Can't parse 'pt1'"), None for a box wholly outside the image (not
    drawn); ValueError naming ``faces[index]`` for a box that is not four numbers, for NaN or infinity
    (which raised "cannot convert float NaN to integer") and for a reversed box.

    >>> drawn_box((-1e12, 5.4, 30.0, 1e12), 0, (64, 48)), drawn_box((70.0, 5.0, 90.0, 20.0), 0, (64, 48))
    ((-64, 5, 30, 96), None)
    """
    width, height = image
    x1, y1, x2, y2 = box_numbers(box, index)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"annotate: faces[{index}] has a box that is not finite, {tuple(box)}; "
                         "a box is (x1, y1, x2, y2) in image pixels")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"annotate: faces[{index}] has a reversed box, {tuple(box)} (x2 < x1 or y2 < y1); a box is "
                         "(x1, y1, x2, y2) in image pixels, top-left corner first (for (x, y, width, height), "
                         "pass (x, y, x + width, y + height))")
    if x2 < 0 or y2 < 0 or x1 > width or y1 > height:
        return None
    left, right = (int(round(min(max(v, -width), 2 * width))) for v in (x1, x2))
    top, bottom = (int(round(min(max(v, -height), 2 * height))) for v in (y1, y2))
    return left, top, right, bottom


def box_numbers(box: Any, index: int) -> tuple[float, float, float, float]:
    """``box`` as four floats; ValueError naming ``faces[index]`` for anything else (3 values, a string,
    None), which raised "not enough values to unpack" or "must be real number, not str".

    >>> box_numbers([1, 2.5, 3, 4], 0)
    (1.0, 2.5, 3.0, 4.0)
    """
    values: tuple[float, ...] = ()
    if not isinstance(box, (str, bytes)):
        try:
            items = tuple(box)
            if not any(isinstance(v, (str, bytes)) for v in items):
                values = tuple(float(v) for v in items)
        except (TypeError, ValueError):  # not iterable, or an item that is not a number
            pass
    if len(values) != 4:
        raise ValueError(f"annotate: faces[{index}] has a box that is not four numbers, {reprlib.repr(box)}; "
                         "a box is (x1, y1, x2, y2) in image pixels")
    return values  # type: ignore[return-value]  # four, checked above


#: Smallest label font scale (text about 8 px high): the size for small faces.
MIN_FONT_SCALE = 0.35


def label_size(face_width: int, image: tuple[int, int]) -> tuple[float, int]:
    """``(font scale, line thickness)`` for a face's box and label: the label about 1.5 face widths
    wide (at least :data:`MIN_FONT_SCALE`), at most what the image's size gives. Sized by the image
    alone, a 24 px face in a 1920 px crowd got a label nine faces wide over its neighbours.

    >>> label_size(24, (1920, 1080)), label_size(600, (1920, 1080))
    ((0.35, 1), (1.2, 4))
    """
    long_side = max(image)
    font_scale = min(max(MIN_FONT_SCALE, face_width / 110), max(MIN_FONT_SCALE, long_side / 1600))
    thickness = max(1, min(round(long_side / 500), round(face_width / 40)))
    return font_scale, thickness


def label_position(box: tuple[int, int, int, int], label: tuple[int, int], image: tuple[int, int],
                   base: int) -> tuple[int, int]:
    """``(left, baseline)`` of a ``label`` (width, height) for ``box``: above it, else below it, else
    inside its top edge; shifted to stay within the ``image`` (width, height) where it fits.

    >>> label_position((10, 40, 50, 90), (30, 12), (200, 200), 3)  # room above the box
    (10, 35)
    >>> label_position((0, 0, 64, 64), (50, 12), (64, 64), 3)  # the face fills the image: inside it
    (0, 9)
    >>> label_position((-20, 10, 30, 40), (30, 12), (100, 100), 3)  # cut by the left edge
    (0, 49)
    """
    x1, y1, _, y2 = box
    width, height = image
    label_w, label_h = label
    if y1 - label_h >= 0:
        baseline = y1 - base - 2
    elif y2 + label_h <= height:
        baseline = y2 + label_h - base
    else:
        baseline = max(y1, 0) + label_h - base
    left = min(max(x1, 0), max(width - label_w, 0))
    return left, baseline


def save_annotated(path: str | os.PathLike[str], image: ImageLike, faces: Sequence[Face]) -> Path:
    """Write :func:`annotate`'s drawing of ``image`` to :func:`annotated_path` of ``path`` (folders
    created; format from the suffix, PNG for a name without one or with one OpenCV cannot write in
    colour); return where.

    >>> save_annotated("out/group1.jpg", img, faces)  # doctest: +SKIP
    PosixPath('out/group1.jpg')
    """
    import cv2

    target = annotated_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(target.suffix, np.ascontiguousarray(annotate(image, faces)[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV could not encode the annotated copy as {target.suffix} ({target})")
    buf.tofile(str(target))
    return target
