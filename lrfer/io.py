"""Image loading and validation: every accepted input becomes one canonical form.

The public API accepts paths, numpy arrays, PIL images and torch tensors. This module converts each
of them, once, to an RGB ``uint8`` array of shape ``(H, W, 3)`` (:func:`load_image`) and, for the
pipeline, to a ``(3, H, W)`` ``uint8`` tensor on the model's device (:func:`to_device_tensor`,
:func:`to_device_tensors` for a batch).
Anything else is rejected with a :class:`ValueError` that names the problem and the input.

This module imports neither torch nor OpenCV at import time, so ``lrfer --help`` stays fast.
"""
from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from lrfer.video import is_video_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: File extensions the CLI picks up when given a folder (lower case); ``.jpe`` and ``.jfif`` are JPEG's
#: other names (browsers on Windows save photos as ``.jfif``).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".gif"}
)

#: Everything :func:`load_image` accepts.
ImageLike = Union[str, os.PathLike[str], np.ndarray, "torch.Tensor", Any]


def describe(obj: Any) -> str:
    """A short description of an input for error messages (never the whole array)."""
    if isinstance(obj, (str, os.PathLike)):
        return f"path {str(obj)!r}"
    shape = getattr(obj, "shape", None)
    dtype = getattr(obj, "dtype", None)
    if shape is not None:
        return f"{type(obj).__module__}.{type(obj).__name__} of shape {tuple(shape)} and dtype {dtype}"
    return f"object of type {type(obj).__name__}"


#: Iterables that are one input, not several images: a path is a string of characters, an array or a
#: tensor iterates over its rows, and bytes over their values.
ONE_INPUT_TYPES = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


def is_image_like(obj: Any) -> bool:
    """True for one image (path, array, PIL image, tensor, or anything that is not iterable, which
    :func:`load_image` then names); False for a list, tuple or any other iterable of images (a
    generator, ``map(...)``); a dict or a set is one (unsupported) input, not images in an order.

    >>> is_image_like("a.jpg"), is_image_like(np.zeros((2, 2), np.uint8)), is_image_like(p for p in ["a.jpg"])
    (True, True, False)
    """
    if isinstance(obj, ONE_INPUT_TYPES) or _is_torch_tensor(obj) or _is_pil_image(obj):
        return True
    # a mapping iterates over its keys and a set in no order: neither is taken for images (load_image names it)
    return isinstance(obj, (Mapping, AbstractSet)) or not isinstance(obj, Iterable)


def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to RGB ``uint8 (H, W, 3)``, honouring EXIF orientation.

    >>> img = read_image_file("examples/group1.jpg")  # doctest: +SKIP
    >>> img.shape[2], img.dtype  # doctest: +SKIP
    (3, dtype('uint8'))
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"cannot read image: {str(p)!r} is a folder, not an image file")
    if not p.is_file():
        if isinstance(path, str) and "://" in path:  # Path("https://h/a.jpg") is 'https:/h/a.jpg'
            raise ValueError(f"cannot read image: {path!r} is a URL; lrfer reads image files, it downloads nothing: "
                             "save the image first (urllib.request.urlretrieve) and pass its path, or pass its pixels")
        what = "a broken symbolic link" if p.is_symlink() and not p.exists() else "no such file"
        raise ValueError(f"cannot read image: {what} {str(p)!r}")
    if is_video_file(p):
        raise ValueError(f"cannot read image: {str(p)!r} is a video; score it with Recognizer.predict_video(path) "
                         "or `lrfer predict` on the file")
    return decode_image_file(p)


def decode_image_file(p: Path) -> np.ndarray:
    """The RGB ``uint8 (H, W, 3)`` pixels of the image file ``p``, whatever its suffix, as
    :func:`read_image_file` reads them (OpenCV, else Pillow); ValueError naming the file when it cannot
    be read or decoded (corrupt, truncated) or has too many pixels."""
    try:
        data = np.fromfile(str(p), dtype=np.uint8)  # fromfile + imdecode also works for non-ASCII paths
    except OSError as err:  # permissions, I/O errors
        raise ValueError(f"cannot read image {str(p)!r}: {err.strerror or err}") from None
    if data.size == 0:
        raise ValueError(f"cannot read image: empty file {str(p)!r}")
    check_pixel_count(header_size(data), f"file {str(p)!r}")
    try:
        img = _decode_cv2(data)
    except ValueError as err:
        raise ValueError(f"cannot read image {str(p)!r}: {err}") from None
    if img is None:
        img = _decode_pil(p)
    if img is None:
        raise ValueError(f"cannot read image: {str(p)!r} is not a readable image (corrupt or unsupported format)")
    return validate_array(img, f"file {str(p)!r}")


def _decode_cv2(data: np.ndarray) -> np.ndarray | None:
    import cv2

    # Decoded straight to RGB where OpenCV can (4.11+); else BGR turned by cvtColor (a numpy channel
    # flip copy took 9 ms for a 1920 px photo, as long as the decoding). Both apply EXIF orientation.
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    try:
        with opencv_errors_only(cv2):  # lrfer reports a file it cannot decode itself, naming it
            img = cv2.imdecode(data, cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
    except cv2.error as err:  # e.g. a header claiming more pixels than OpenCV's limit (2**30)
        raise ValueError(f"OpenCV refused to decode it ({err.err or err})") from None
    if img is None or img.size == 0:
        return None
    return img if rgb_flag is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _QuietOpenCV:
    """The state of :func:`opencv_errors_only`, shared by the threads that decode at once: how many are
    inside, and OpenCV's log level before the first of them lowered it (None: left as it was)."""

    lock = threading.Lock()
    inside = 0
    level_before: int | None = None


def _opencv_log_functions(cv2: Any) -> tuple[Any, Any, int] | None:
    """OpenCV's ``(getLogLevel, setLogLevel, LOG_LEVEL_ERROR)``: ``cv2.utils.logging``'s (opencv-python-headless
    5.0.0 has them), else ``cv2.getLogLevel``/``cv2.setLogLevel`` (the same numbers; 4.10.0.84, setup.cfg's
    lower bound, has only these); None where this build has neither."""
    api = getattr(getattr(cv2, "utils", None), "logging", None)
    for where in (api, cv2):
        get, set_ = getattr(where, "getLogLevel", None), getattr(where, "setLogLevel", None)
        if callable(get) and callable(set_):
            return get, set_, int(getattr(api, "LOG_LEVEL_ERROR", OPENCV_LOG_LEVEL_ERROR))
    return None


#: ``cv::utils::logging::LOG_LEVEL_ERROR`` (SILENT 0, FATAL 1, ERROR 2, WARNING 3, INFO 4, ...).
OPENCV_LOG_LEVEL_ERROR = 2


@contextlib.contextmanager
def opencv_errors_only(cv2: Any) -> Iterator[None]:
    """OpenCV's own log (``[ WARN:0@0.1] global grfmt_png.cpp ... PNG input buffer is incomplete``, printed
    on stderr by its C++ code) set to errors only while lrfer decodes: lrfer reports an undecodable
    file itself, and a slightly broken one that decodes needs no word. OpenCV's level is process-wide,
    so it is lowered from the first thread in to the last one out, then put back, unless someone set
    another level meanwhile; a level already at errors or quieter is left alone. Messages of the
    codec libraries themselves (libpng's ``libpng warning: iCCP: known incorrect sRGB profile``,
    libjpeg's ``Corrupt JPEG data: premature end of data segment``) do not go through OpenCV's log and
    still reach stderr."""
    functions = _opencv_log_functions(cv2)
    if functions is None:
        yield
        return
    get, set_, errors_only = functions
    with _QuietOpenCV.lock:
        if _QuietOpenCV.inside == 0:
            level = int(get())
            _QuietOpenCV.level_before = level if level > errors_only else None
            if _QuietOpenCV.level_before is not None:
                set_(errors_only)
        _QuietOpenCV.inside += 1
    try:
        yield
    finally:
        with _QuietOpenCV.lock:
            _QuietOpenCV.inside -= 1
            if _QuietOpenCV.inside == 0 and _QuietOpenCV.level_before is not None:
                if int(get()) == errors_only:  # not changed by someone else meanwhile
                    set_(_QuietOpenCV.level_before)
                _QuietOpenCV.level_before = None


def _quiet_opencv_after_fork() -> None:
    """In a child of ``os.fork``: a fresh lock (another thread may have held the parent's), and OpenCV's
    level as it was if the fork came while a thread of the parent decoded (that thread is not in the child)."""
    _QuietOpenCV.lock = threading.Lock()
    if _QuietOpenCV.inside and _QuietOpenCV.level_before is not None:
        cv2 = _loaded_module("cv2")
        functions = None if cv2 is None else _opencv_log_functions(cv2)
        if functions is not None:
            functions[1](_QuietOpenCV.level_before)
    _QuietOpenCV.inside, _QuietOpenCV.level_before = 0, None


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_quiet_opencv_after_fork)


def _decode_pil(path: Path) -> np.ndarray | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is optional
        return None
    try:
        with Image.open(path) as im:  # _pil_to_array turns it upright and refuses 32-bit modes (a float TIFF)
            return _pil_to_array(im, f"file {str(path)!r} (mode {im.mode})")
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable"
        return None


#: The largest image, in pixels, that lrfer takes (Pillow's decompression-bomb limit): a 389 KB PNG can
#: hold 20000x20000 black pixels, and the pipeline's copies of them would need about 8 GB. None: no limit.
MAX_IMAGE_PIXELS: int | None = 2 * 89_478_485


def check_pixel_count(size: tuple[int, int] | None, what: str) -> None:
    """ValueError if a ``(width, height)`` image is over :data:`MAX_IMAGE_PIXELS` (None: size unknown)."""
    if MAX_IMAGE_PIXELS is None or size is None or size[0] * size[1] <= MAX_IMAGE_PIXELS:
        return
    raise ValueError(f"image too large ({size[0]}x{size[1]} = {size[0] * size[1]:,} pixels) for {what}: the limit "
                     f"is lrfer.io.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} (as Pillow's decompression-bomb check); "
                     "tile or shrink it, or raise the limit (None: no limit)")


#: JPEG start-of-frame markers (they hold the image size); C4, C8 and CC are other segments.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG or JPEG file's header, read before decoding (the pixels of a
    decompression bomb are never made); None for other formats or an unreadable header.

    >>> header_size(np.frombuffer(b"\\x89PNG\\r\\n\\x1a\\n\\0\\0\\0\\rIHDR\\0\\0\\1\\0\\0\\0\\0\\x80", np.uint8))
    (256, 128)
    """
    head = data[:24].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] != b"\xff\xd8":
        return None
    # The whole file, not its first 64 KiB: EXIF, XMP and ICC segments (up to 64 KiB each) can push the
    # frame header past them, and a bomb behind two such segments was decoded before being refused.
    jpeg = np.ascontiguousarray(data).data.cast("B")
    at = 2
    while at + 9 <= len(jpeg) and jpeg[at] == 0xFF:
        marker = jpeg[at + 1]
        if marker == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        if marker in JPEG_SOF_MARKERS:
            return int.from_bytes(jpeg[at + 7:at + 9], "big"), int.from_bytes(jpeg[at + 5:at + 7], "big")
        at += 2 + (jpeg[at + 2] << 8 | jpeg[at + 3])  # a crafted file of 4-byte segments: 0.6 s per 10 MB
    return None


def dtype_hint(arr: np.ndarray) -> str:
    """How to turn an array of the wrong dtype into what :func:`validate_array` takes: the hint
    depends on the kind (a 0..1 float hint multiplies integer pixels by 255 into white).

    >>> dtype_hint(np.zeros(2, np.int64))
    'convert 0..255 integers with np.clip(x, 0, 255).astype(np.uint8)'
    >>> dtype_hint(np.full(2, 200.0))
    'its values go above 1, 0..255 floats: convert with np.clip(x, 0, 255).round().astype(np.uint8)'
    """
    kind = arr.dtype.kind
    if kind == "f":
        if above_one(float(arr.max()) if arr.size else 0.0):  # x * 255 would turn them white
            return "its values go above 1, 0..255 floats: convert with np.clip(x, 0, 255).round().astype(np.uint8)"
        return "convert with np.clip(x * 255, 0, 255).astype(np.uint8) for 0..1 floats"
    if kind in "iu":
        if arr.dtype.itemsize == 2:  # 16-bit pixels first: clipping them saturates them
            return ("convert 16-bit pixels with (x >> 8).astype(np.uint8), 0..255 values with "
                    "np.clip(x, 0, 255).astype(np.uint8)")
        return "convert 0..255 integers with np.clip(x, 0, 255).astype(np.uint8)"
    if kind in "USO":
        return "an array of paths or images is not an image: pass a list (e.g. arr.tolist())"
    return "convert it to np.uint8"


def shape_hint(shape: tuple[int, ...]) -> str:
    """What to do with an array of a shape :func:`validate_array` refuses, where it can tell: a batch,
    or channels first (torch's layout: a channel-first RGB array read as 3 rows of pixels).

    >>> shape_hint((3, 480, 640)).endswith("arr.transpose(1, 2, 0)"), shape_hint((480, 640, 2))
    (True, '')
    """
    if len(shape) == 4:
        return "; a batch of N images (N, H, W, C) is not one image: pass a list (list(arr))"
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return "; channels first (C, H, W) is torch's layout: pass arr.transpose(1, 2, 0)"
    return ""


def validate_array(arr: np.ndarray, what: str | None = None) -> np.ndarray:
    """Check a numpy image and return it as contiguous, writable RGB ``uint8 (H, W, 3)`` (a copy only
    where the input is none of these).

    Accepts ``(H, W)`` gray, ``(H, W, 1)``, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA (alpha dropped).

    >>> validate_array(np.zeros((4, 5), np.uint8)).shape
    (4, 5, 3)
    """
    what = what or describe(arr)
    if arr.ndim >= 2:
        check_pixel_count((arr.shape[1], arr.shape[0]), what)
    if arr.dtype == np.bool_ or arr.dtype != np.uint8:
        raise ValueError(f"wrong dtype {arr.dtype} for {what}: images must be uint8 (0..255); {dtype_hint(arr)}")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise ValueError(f"wrong shape {tuple(arr.shape)} for {what}: expected (H, W) gray or (H, W, 3) RGB / "
                         f"(H, W, 4) RGBA{shape_hint(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image (0 size, shape {tuple(arr.shape)}) for {what}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.require(arr, requirements=("C", "W"))  # writable: torch.from_numpy warns about read-only arrays


def above_one(largest: float) -> bool:
    """Whether a float image whose largest value is ``largest`` holds 0..255 values rather than 0..1 ones
    (NaN or infinity: nothing can be told, the 0..1 hint stays)."""
    return math.isfinite(largest) and largest > 1


def tensor_dtype_hint(t: torch.Tensor) -> str:
    """:func:`dtype_hint` for a tensor: a 0..1 float hint multiplies integer pixels by 255 into white.

    >>> import torch; tensor_dtype_hint(torch.zeros(2, dtype=torch.int32))
    'use x.clamp(0, 255).to(torch.uint8) for 0..255 integers'
    """
    import torch

    if t.dtype.is_floating_point:
        if above_one(float(t.detach().max()) if t.numel() else 0.0):  # x * 255 would turn them white
            return "its values go above 1, 0..255 floats: use x.round().clamp(0, 255).to(torch.uint8)"
        return "use (x * 255).round().clamp(0, 255).to(torch.uint8) for 0..1 floats"
    if t.dtype == torch.bool:
        return "use x.to(torch.uint8) * 255 for a mask"
    if t.dtype in (torch.int16, getattr(torch, "uint16", torch.int16)):  # 16-bit first: clamped, they saturate
        return "use (x.to(torch.int32) >> 8).to(torch.uint8) for 16-bit pixels, x.clamp(0, 255).to(torch.uint8) for 0..255 values"
    if not t.dtype.is_complex:
        return "use x.clamp(0, 255).to(torch.uint8) for 0..255 integers"
    return "convert it to torch.uint8"


def tensor_to_array(t: torch.Tensor, what: str | None = None) -> np.ndarray:
    """A ``uint8`` tensor ``(3, H, W)``, ``(H, W, 3)``, ``(1, H, W)`` or ``(H, W)`` -> RGB numpy ``(H, W, 3)``."""
    what = what or describe(t)
    import torch

    if t.dtype != torch.uint8:
        raise ValueError(f"wrong dtype {t.dtype} for {what}: image tensors must be uint8 (0..255); {tensor_dtype_hint(t)}")
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(1, 2, 0)  # channels first, the torch convention (also wins for tiny ambiguous shapes)
    elif t.ndim not in (2, 3):
        batch = "; a batch (N, 3, H, W) is not one image: pass a list (list(x))" if t.ndim == 4 else ""
        raise ValueError(f"wrong shape {tuple(t.shape)} for {what}: expected (3, H, W) or (H, W, 3){batch}")
    return validate_array(t.detach().cpu().numpy(), what)


def load_image(src: ImageLike) -> np.ndarray:
    """Turn any accepted image into RGB ``uint8 (H, W, 3)``; raise ``ValueError`` naming the problem.

    Accepted: a path (``str``/``Path``), a numpy ``uint8`` array ``(H, W)``, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA, a ``PIL.Image``, a torch ``uint8`` tensor ``(3, H, W)`` or ``(H, W, 3)``.

    >>> load_image(np.zeros((2, 3, 3), np.uint8)).shape
    (2, 3, 3)
    """
    if isinstance(src, (str, os.PathLike)):
        return read_image_file(src)
    if isinstance(src, np.ndarray):
        return validate_array(src)
    if _is_torch_tensor(src):
        return tensor_to_array(src)
    if _is_pil_image(src):
        return _pil_to_array(src)
    raise ValueError(
        f"unsupported image input: {describe(src)}; pass a path, a numpy uint8 array, a PIL.Image or a uint8 tensor"
        " (or a list of them, for several images)"
    )


# ------------------------------------------------------------------------- one face per image
def centre_square_corner(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the centred square of the shorter side of a ``height x width`` image: the
    part of a non-square face that training, ``lrfer eval``, ``predict_crops`` and ``detector=None`` score
    (as timm's evaluation transforms crop; stretching it to a square distorts the expression).

    >>> centre_square_corner(48, 40), centre_square_corner(3, 4), centre_square_corner(5, 5)
    ((4, 0, 40), (0, 0, 3), (0, 0, 5))
    """
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def centre_square(images: Any, axes: tuple[int, int] = (0, 1)) -> Any:
    """The centred square of the shorter side (:func:`centre_square_corner`) of an image (its ``axes``:
    rows, columns), or of each of a batch's (``axes=(1, 2)``), as a slice (a view of a numpy array or
    tensor, no copy); a square image as it is.

    >>> centre_square(np.arange(12).reshape(3, 4)).tolist()
    [[0, 1, 2], [4, 5, 6], [8, 9, 10]]
    >>> centre_square(np.zeros((2, 48, 40, 3), np.uint8), axes=(1, 2)).shape
    (2, 40, 40, 3)
    """
    rows, cols = images.shape[axes[0]], images.shape[axes[1]]
    if rows == cols:
        return images
    top, left, side = centre_square_corner(rows, cols)
    index = [slice(None)] * images.ndim
    index[axes[0]] = slice(top, top + side)
    index[axes[1]] = slice(left, left + side)
    return images[tuple(index)]


def _is_torch_tensor(obj: Any) -> bool:
    torch = _loaded_module("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_pil_image(obj: Any) -> bool:
    pil = _loaded_module("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def _loaded_module(name: str) -> Any:
    """A module only if the caller already imported it (an object of its type cannot exist otherwise)."""
    import sys

    return sys.modules.get(name)


def _exif_orientation(im: Any) -> int | None:
    try:
        return im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels as stored
        return None


#: The EXIF tag of the orientation (what a camera writes when it stores a rotated photo).
EXIF_ORIENTATION = 0x0112
#: PIL modes of 16-bit gray pixels: reduced to 8 bits by their high byte, as OpenCV reads a 16-bit PNG file.
PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes of 32-bit integer or float pixels: no one scale to 0..255 is right for them.
PIL_WIDE_MODES = ("I", "F")


def _pil_to_array(im: Any, what: str | None = None) -> np.ndarray:
    """A PIL image's pixels as RGB ``uint8 (H, W, 3)``. One just opened from a file (``im.format`` set)
    is turned upright by its EXIF orientation first, as a path to the same file is; an image the
    caller made or transformed (no format) is taken as it is."""
    what = what or f"PIL image of size {im.size} and mode {im.mode}"
    check_pixel_count(im.size, what)  # before the pixels of one just opened are decoded
    if im.format is not None and _exif_orientation(im) not in (None, 1):
        from PIL import ImageOps

        try:
            im = ImageOps.exif_transpose(im)
        except (OSError, ValueError, AssertionError, AttributeError) as err:  # a closed or broken file
            raise ValueError(f"cannot read the pixels of {what}: {type(err).__name__}: "
                             f"{str(err) or 'closed or unreadable'}") from None
    if im.size[0] == 0 or im.size[1] == 0:
        raise ValueError(f"empty image (0 size) for {what}")
    if im.mode in PIL_WIDE_MODES:
        raise ValueError(f"wrong pixel type for {what}: images must be 8-bit; scale it to 0..255 and convert it "
                         "with Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))")
    try:
        im.load()  # before np.asarray, which turns a closed file's AttributeError into an object array
        if im.mode in PIL_16BIT_MODES:
            pixels = (np.asarray(im) >> 8).astype(np.uint8)
        else:
            pixels = np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB"))
    except (OSError, ValueError, AssertionError, SyntaxError, AttributeError) as err:  # bad or closed files
        raise ValueError(f"cannot read the pixels of {what}: {type(err).__name__}: {str(err) or 'closed or unreadable'}") from None
    return validate_array(pixels, what)


def to_device_tensor(img: np.ndarray, device: Any = "cpu") -> torch.Tensor:
    """RGB ``uint8 (H, W, 3)`` -> ``uint8 (3, H, W)`` tensor on ``device`` (pinned, non-blocking on CUDA,
    contiguous there).

    On CPU a view of the array's memory, no copy: the detectors read the pixels interleaved (the
    integral images of :mod:`lrfer.faces.mtcnn`'s pyramid) or convert them once to planar floats.
    On CUDA :func:`upload_together` of this one image.
    """
    import torch

    if torch.device(device).type == "cuda":
        return upload_together([img], device)[0]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def to_device_tensors(arrays: Sequence[np.ndarray], device: Any = "cpu") -> list[torch.Tensor]:
    """:func:`to_device_tensor` for a batch of RGB ``uint8 (H, W, 3)`` arrays.

    On CPU the same views, no copy. On CUDA the whole batch goes up in one copy from one pinned
    buffer (:func:`upload_together`) instead of a pinned buffer and a transfer per photo.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return [to_device_tensor(a, device) for a in arrays]
    return upload_together(arrays, device, pin=True)


def upload_together(arrays: Sequence[np.ndarray], device: Any, pin: bool = True) -> list[torch.Tensor]:
    """RGB ``uint8 (H, W, 3)`` arrays -> ``uint8 (3, H, W)`` tensors on ``device``: the pixels copied
    into one host buffer (pinned where ``pin``), sent in one non-blocking copy as they are, and made
    planar on the device in one call per image size (no transposed copy on the CPU: a few ms per large
    photo). Images of one size are slices of one tensor there.

    >>> rgb = [np.full((2, 3, 3), v, np.uint8) for v in (1, 2, 3)]
    >>> [tuple(t.shape) for t in upload_together(rgb, "cpu", pin=False)]
    [(3, 2, 3), (3, 2, 3), (3, 2, 3)]
    """
    import torch

    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(tuple(a.shape), []).append(i)
    staging = torch.empty(sum(int(a.size) for a in arrays), dtype=torch.uint8, pin_memory=pin)
    host = staging.numpy()
    start = 0
    for indices in by_shape.values():  # each size's images next to each other
        for i in indices:
            host[start : start + arrays[i].size].reshape(arrays[i].shape)[...] = arrays[i]
            start += arrays[i].size
    flat = staging.to(device, non_blocking=True)
    out: list[torch.Tensor] = [flat] * len(arrays)
    start = 0
    for shape, indices in by_shape.items():
        size = len(indices) * math.prod(shape)
        planar = flat[start : start + size].view(len(indices), *shape).permute(0, 3, 1, 2).contiguous()
        for i, image in zip(indices, planar.unbind(0)):
            out[i] = image
        start += size
    return out


class ImageFiles(Sequence[tuple[Path, Path]]):
    """``(path, relative_name)`` pairs stored compactly: one bytes array (about 60 bytes per file).

    A folder of 100k images costs about 6 MB here, against about 60 MB as ``Path`` objects, in the
    main process and again in every decoding worker: this is what keeps ``lrfer predict``'s memory
    flat from 10k to 100k files.
    """

    def __init__(self, paths: Sequence[bytes], root_lengths: Sequence[int]) -> None:
        self._paths = np.array(paths, dtype=bytes) if len(paths) else np.zeros(0, dtype="S1")
        self._root_lengths = np.asarray(root_lengths, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i: int) -> tuple[Path, Path]:  # type: ignore[override]
        raw = bytes(self._paths[i])
        return Path(os.fsdecode(raw)), Path(os.fsdecode(raw[self._root_lengths[i]:]))

    def path(self, i: int) -> str:
        """The ``i``-th file path as a string."""
        return os.fsdecode(bytes(self._paths[i]))


def iter_image_files(paths: Iterable[str | os.PathLike[str]], unlisted: list[OSError] | None = None) -> ImageFiles:
    """Expand files and folders (recursively, sorted) into ``(path, relative_name)`` pairs.

    Files given explicitly are kept whatever their extension; folders contribute files with an
    extension in :data:`IMAGE_EXTENSIONS`. ``relative_name`` is the path inside its folder argument
    (the file name for file arguments), used to mirror the layout in ``--annotate`` output. The
    errors of folders that cannot be listed (permissions) are appended to ``unlisted``, if given.
    A file reached again through another argument (a folder given twice, a file or a sub-folder of
    a folder given too) is listed once, where it came first.

    >>> list(iter_image_files(["examples"]))  # doctest: +SKIP
    [(PosixPath('examples/group1.jpg'), PosixPath('group1.jpg'))]
    """
    found: list[bytes] = []
    root_lengths: list[int] = []
    paths = list(paths)
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            root = os.fsencode(p) + b"/"
            names = walk_files(os.fsencode(p), IMAGE_EXTENSIONS, unlisted)
            found.extend(root + rel for rel in names)
            root_lengths.extend([len(root)] * len(names))
        elif p.is_file():
            found.append(os.fsencode(p))
            root_lengths.append(len(os.fsencode(p)) - len(os.fsencode(p.name)))
        elif os.path.exists(p):  # "no such file" sent the user looking for a typo
            raise ValueError(f"{str(p)!r} is not a file or folder (a pipe or a device): save the images to files")
        elif isinstance(raw, str) and "://" in raw:  # Path("https://h/a.jpg") is 'https:/h/a.jpg'
            raise ValueError(f"{raw!r} is a URL; lrfer reads image and video files, it downloads nothing: save the "
                             "file first (curl -O URL) and give its path; for a camera or a stream, read frames with "
                             "cv2.VideoCapture and pass lists of RGB frames to Recognizer.predict")
        else:
            raise ValueError(f"no such file or folder: {str(p)!r}")
    if len(paths) > 1:
        keep = first_of_each(found)
        found, root_lengths = [found[i] for i in keep], [root_lengths[i] for i in keep]
    return ImageFiles(found, root_lengths)


def first_of_each(paths: Sequence[bytes]) -> list[int]:
    """Indices of ``paths`` that name a file not named before: the same name in the same real folder
    (``photos`` and ``./photos/``, a folder and a link to it), however it is spelt. A link to a file
    beside it is a name of its own, kept. Each folder is resolved once (a walk's files share few).

    >>> first_of_each([b"a/x.jpg", b"a/./x.jpg", b"a/y.jpg", b"a//x.jpg"])
    [0, 2]
    """
    real_folders: dict[bytes, bytes] = {}
    seen: set[tuple[bytes, bytes]] = set()
    keep = []
    for i, path in enumerate(paths):
        folder, name = os.path.split(path)
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder or b".")
        key = (real_folders[folder], name)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


#: The file ``lrfer predict --annotate DIR`` leaves in a folder DIR it made: folder searches below a
#: folder given leave such a folder out (hidden, it is not itself a photo).
ANNOTATED_MARKER = b".lrfer-annotated"


def walk_files(root: bytes, extensions: Iterable[str], unlisted: list[OSError] | None = None) -> list[bytes]:
    """Paths relative to ``root`` (bytes, '/'-separated) of the files below it with one of
    ``extensions`` (lower-case, with the dot; matched case-insensitively), sorted folder by folder.
    A broken link is listed (to be reported unreadable), not left out in silence; FIFOs and the like are.
    Links to folders are followed (``photos/2024 -> /mnt/nas/2024``) after the real folders, in name
    order, into folders not listed yet: a folder keeps its own name, and a link back up the tree ends.
    A folder that cannot be listed (no read permission) is skipped, its error appended to ``unlisted``;
    so are the folders below ``root`` that hold :data:`ANNOTATED_MARKER` (``lrfer predict --annotate``'s
    copies, not photos: ``lrfer predict . --annotate annotated`` run again scored them). Hidden files and
    folders (names from ``.``, as ``glob`` leaves them out) are not searched: macOS's ``._IMG_1.jpg``
    resource forks on shared drives and in zip files, ``.Trash-1000/`` and ``.thumbnails/`` held files
    that were not the user's photos, unreadable or deleted ones, or smaller copies."""
    wanted = {os.fsencode(e) for e in extensions}
    found: list[bytes] = []
    seen: set[tuple[int, int]] = set()
    links: list[tuple[bytes, bytes]] = []  # (relative name, path) of links to folders, followed last

    def walk(top: bytes, rel_top: bytes) -> None:
        for folder, folders, files in os.walk(top, onerror=None if unlisted is None else unlisted.append):
            identity = _folder_identity(folder)
            if identity in seen:
                folders[:] = []
                continue
            seen.add(identity)
            if folder != top and ANNOTATED_MARKER in files:
                folders[:] = []
                continue
            folders[:] = [name for name in folders if not name.startswith(b".")]
            rel_folder = os.path.relpath(folder, top)
            prefix = rel_top + (b"" if rel_folder == b"." else rel_folder + b"/")
            links.extend((prefix + name, os.path.join(folder, name)) for name in folders
                         if os.path.islink(os.path.join(folder, name)))
            for name in files:
                path = os.path.join(folder, name)
                if not name.startswith(b".") and os.path.splitext(name)[1].lower() in wanted and (os.path.isfile(path) or os.path.islink(path)):
                    found.append(prefix + name)

    walk(root, b"")
    while links:
        links.sort(reverse=True)
        rel, path = links.pop()
        walk(path, rel + b"/")
    return sorted(found, key=lambda rel: rel.split(b"/"))


def _folder_identity(folder: bytes) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino


class ImageFileDataset:
    """Map-style dataset for ``torch.utils.data.DataLoader``: decodes one file per item.

    Each item is ``(index, image)`` where ``image`` is a ``uint8 (H, W, 3)`` tensor, or
    ``(index, error_message)`` when the file cannot be read, so one bad file never stops a run.
    Batch them with :func:`pack_images`.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]] | ImageFiles) -> None:
        self.files = files if isinstance(files, ImageFiles) else list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        import torch

        try:
            path = self.files.path(i) if isinstance(self.files, ImageFiles) else self.files[i]
            return i, torch.from_numpy(read_image_file(path))
        except ValueError as e:
            return i, str(e)


class SlotPixels(NamedTuple):
    """Where a worker put a batch's pixels: the first ``size`` bytes of :class:`DecodeSlots` slot ``slot``."""

    slot: int
    size: int


#: A batch of decoded files as :func:`pack_images` gives it: the items' indices, each item's image
#: shape or error message, and all the images' pixels in one flat ``uint8`` tensor (or in a slot).
PackedImages = tuple[list[int], list[Union[tuple[int, ...], str]], Union["torch.Tensor", SlotPixels]]


class DecodeSlots:
    """Shared-memory buffers that decoding workers fill again and again, instead of a new segment per batch.

    A new segment costs the main process, per 480 px photo, about 0.05 ms of page faults when it first
    reads the pixels and 0.10-0.13 ms to unmap and free them afterwards (2 cores, stop 33): on a GPU
    that is as much as detection's share of a photo. A slot's pages stay mapped in both processes.

    A worker claims the lowest free slot (:meth:`claim`, under a lock shared by the workers) and
    writes a batch there; the main process reads the batch through arrays whose base is a lease of
    the slot (:meth:`view`), and the slot is free again once the last of those arrays is gone. So a
    slot is never written while anything still reads it. Without a free slot, for a batch larger
    than a slot, or when the lock is not had within 1 s, a worker makes a segment of its own as before.

    The slots are one ``memfd`` file (Linux), sparse: a page takes memory once a worker writes it, so
    slots beyond the most batches ever in flight at once cost nothing, and /dev/shm's size (64 MB in
    Docker) does not limit them. Made in the main process before the workers start, which inherit
    the mapping (fork) or receive the file descriptor (spawn, forkserver).
    """

    def __init__(self, count: int, slot_bytes: int) -> None:
        import multiprocessing

        self.fd = os.memfd_create("lrfer-decode-slots", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, count * slot_bytes)
        self._map(count, slot_bytes)
        context = multiprocessing.get_context()  # the DataLoader's workers' (the default start method)
        self.taken = context.RawArray("b", count)
        self.lock = context.Lock()

    def _map(self, count: int, slot_bytes: int) -> None:
        import torch

        self.slot_bytes = slot_bytes
        self.pixels = torch.frombuffer(mmap.mmap(self.fd, count * slot_bytes), dtype=torch.uint8).view(count, slot_bytes)

    def __getstate__(self) -> dict[str, Any]:  # to a worker being spawned: the descriptor goes with it
        from multiprocessing.reduction import DupFd

        return {"fd": DupFd(self.fd), "shape": tuple(self.pixels.shape), "taken": self.taken, "lock": self.lock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fd = state["fd"].detach()
        weakref.finalize(self, os.close, self.fd)
        self._map(*state["shape"])
        self.taken, self.lock = state["taken"], state["lock"]

    def __len__(self) -> int:
        return len(self.taken)

    def claim(self, size: int) -> int | None:
        """In a worker: the lowest free slot, now taken, for ``size`` bytes; None if none fits or is free.
        The lock only orders the workers; the main process frees a slot with one byte store."""
        if size > self.slot_bytes or not self.lock.acquire(timeout=1.0):  # a worker killed holding it
            return None
        try:
            for slot in range(len(self.taken)):
                if not self.taken[slot]:
                    self.taken[slot] = 1
                    return slot
            return None
        finally:
            self.lock.release()

    def release(self, slot: int) -> None:
        self.taken[slot] = 0

    def view(self, pixels: SlotPixels) -> np.ndarray:
        """In the main process: a flat ``uint8`` array of the slot's bytes that holds the slot while it,
        or any view of it, lives."""
        return np.asarray(_SlotLease(self, pixels))


class _SlotLease:
    """A slot's bytes for numpy (``__array_interface__``); frees the slot when numpy lets go of it."""

    def __init__(self, slots: DecodeSlots, pixels: SlotPixels) -> None:
        self.slots, self.slot = slots, pixels.slot
        start = slots.pixels.data_ptr() + pixels.slot * slots.slot_bytes
        self.__array_interface__ = {"shape": (pixels.size,), "typestr": "|u1", "data": (start, False), "version": 3}

    def __del__(self) -> None:
        self.slots.release(self.slot)


def decode_slots(count: int, slot_bytes: int) -> DecodeSlots | None:
    """:class:`DecodeSlots` of ``count`` slots of ``slot_bytes``; None where this system has no
    ``memfd_create`` (not Linux) or refuses one."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        return DecodeSlots(count, slot_bytes)
    except OSError:  # pragma: no cover - a sandbox without memfd
        return None


def pack_images(batch: list[tuple[int, Any]], slots: DecodeSlots | None = None) -> PackedImages:
    """DataLoader ``collate_fn``: ``(index, uint8 image tensor | error message)`` items as one flat
    tensor of pixels plus, per item, its index and its shape or message (:func:`unpack_images`).

    A decoding worker hands each tensor to the main process through a shared-memory segment of its
    own, with a socket handshake for its file descriptor. With a tensor per photo that took the main
    thread 0.43-0.64 ms per 480 px photo (2 cores), about what a GPU needs to score one; one tensor
    per batch pays it once. In a worker the pixels are concatenated straight into shared memory, as
    torch's default collate does.

    >>> import torch
    >>> indices, shapes, pixels = pack_images([(4, torch.ones(2, 3, 3, dtype=torch.uint8)), (5, "unreadable")])
    >>> indices, shapes, pixels.shape
    ([4, 5], [(2, 3, 3), 'unreadable'], torch.Size([18]))
    """
    import torch
    from torch.utils.data import get_worker_info

    images = [item.reshape(-1) for _, item in batch if not isinstance(item, str)]
    in_worker = get_worker_info() is not None
    size = sum(int(image.numel()) for image in images)
    shapes = [item if isinstance(item, str) else tuple(int(v) for v in item.shape) for _, item in batch]
    indices = [index for index, _ in batch]
    if slots is not None and images and in_worker:
        slot = slots.claim(size)
        if slot is not None:
            try:
                torch.cat(images, out=slots.pixels[slot, :size])
            except BaseException:
                slots.release(slot)
                raise
            return indices, shapes, SlotPixels(slot, size)
    out = _shared_buffer(images[0], size) if images and in_worker else None
    pixels = torch.cat(images, out=out) if images else torch.zeros(0, dtype=torch.uint8)
    return indices, shapes, pixels


def _shared_buffer(like: torch.Tensor, numel: int) -> torch.Tensor | None:
    """An empty 1-D tensor of ``like``'s dtype in shared memory, as torch's ``collate_tensor_fn`` makes
    one (a private storage method: None where it is missing, and pickling then copies the batch there).
    Shared memory that is full raises: swallowed, the copy made while pickling failed in a thread of
    the worker, and the main process waited forever for the batch."""
    new_shared = getattr(like.untyped_storage(), "_new_shared", None)
    if new_shared is None:  # pragma: no cover - other torch versions
        return None
    storage = new_shared(numel * like.element_size())
    try:
        return like.new(storage)
    except TypeError:  # pragma: no cover - other torch versions
        return None


def unpack_images(packed: PackedImages, slots: DecodeSlots | None = None) -> list[tuple[int, np.ndarray | str]]:
    """:func:`pack_images`'s batch as ``(index, uint8 (H, W, 3) array | error message)`` items; the
    arrays are views of the one flat buffer (no copy): of the :class:`DecodeSlots` slot the worker
    wrote, which they hold until the last of them is gone.

    >>> import torch
    >>> packed = ([0, 1], ["bad", (1, 2, 3)], torch.arange(6, dtype=torch.uint8))
    >>> [(i, getattr(a, "shape", a)) for i, a in unpack_images(packed)]
    [(0, 'bad'), (1, (1, 2, 3))]
    """
    indices, shapes, pixels = packed
    if isinstance(pixels, SlotPixels):
        if slots is None:
            raise ValueError("a batch decoded into a slot needs the DecodeSlots it was decoded into")
        flat = slots.view(pixels)
    else:
        flat = pixels.numpy()
    items: list[tuple[int, np.ndarray | str]] = []
    start = 0
    for index, shape in zip(indices, shapes):
        if isinstance(shape, str):
            items.append((index, shape))
            continue
        size = math.prod(shape)
        items.append((index, flat[start : start + size].reshape(shape)))
        start += size
    return items
