"""The inference pipeline: images -> faces -> expressions.

One :class:`Recognizer` holds a model, its :class:`~lrfer.zoo.ModelSpec` and a face detector, all on
one device. :meth:`Recognizer.predict` runs small named stages, batched across the faces and images
of a call:

1. :func:`lrfer.io.load_image` -- path / numpy / PIL / tensor -> validated RGB ``uint8 (H, W, 3)``;
2. :func:`lrfer.io.to_device_tensors` -- ``uint8 (3, H, W)`` on the device (on CUDA the step's photos in one
   pinned, non-blocking copy);
3. detect -- ``Detector.detect`` on all images of the step at once (``detector=None``: the image's centred
   square is the face);
4. align -- :func:`lrfer.faces.align_faces`: 5-point similarity onto FER2013's 48x48 framing, gray;
5. :func:`lrfer.faces.degrade.to_native` -- area down-sampling, the area draw of training's degradation;
6. normalise ``(x - mean) / std`` from the spec, model, ``softmax(logits / spec.temperature)``; with
   ``tta=True`` each face's mirror image goes through the model beside it and the two logits are
   averaged before the temperature (:mod:`lrfer.tta`);
7. :class:`~lrfer.results.Face` objects.

Stages 3, 4 and 5-6 are also public methods (:meth:`Recognizer.detect`, :meth:`Recognizer.align`,
:meth:`Recognizer.classify`) for benchmarks and custom pipelines.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import functools
import inspect
import itertools
import linecache
import logging
import math
import numbers
import os
import pickle
import threading
import weakref
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, overload

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrfer.allocator import raise_adaptive_thresholds, trim_if_grown
from lrfer.constants import CPU_ACTIVATION_BUDGET, HR_SIZE
from lrfer.faces import align as alignment
from lrfer.faces.degrade import downsample, to_native
from lrfer.faces.detect import detector_name, no_autocast
from lrfer import io as lrfer_io
from lrfer.io import centre_square, centre_square_corner, describe, is_image_like, load_image, to_device_tensors
from lrfer.overlap import stop_if_cancelled
from lrfer.results import NO_LANDMARKS, Face, VideoFrame
from lrfer.shapes import MIN_FACE_ROWS
from lrfer.tta import check_tta, mean_over_mirror_images, with_mirror_images
from lrfer.video import VideoInfo, check_every
from lrfer.zoo import ModelSpec, default_model, load_model

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image as PILImage

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Images decoded, detected and aligned together in one step of :meth:`Recognizer.predict`: a long
#: list is never decoded all at once, but on CPU a step has no pixel limit (detection then takes its
#: photos one 8 MiB group at a time), so 32 very large photos are held decoded together.
IMAGES_PER_STEP = 32
#: On a GPU a step's cost is mostly a fixed number of kernel launches and host syncs, so steps are
#: larger: up to this many images, as long as they hold at most GPU_STEP_PIXELS pixels (about 0.8 GB
#: as the float copy the detectors share; 32 photos of 1920x1080, 256 of 480x360), divided by how many
#: times MTCNN's first level enlarges the photos (min_face below 12: :func:`pyramid_enlargement`).
GPU_IMAGES_PER_STEP = 256
GPU_STEP_PIXELS = 64 << 20
#: Most bytes of decoded video frames waiting for the model (:func:`frames_ahead`): 41 frames of
#: 1920x1080, 10 of 3840x2160.
READ_AHEAD_BYTES = 256 << 20
#: ITU-R BT.601 luma weights (R, G, B).
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Precisions accepted by :func:`load` (see its docstring).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Detector names accepted by :func:`load` (``None`` / ``"none"``: every image is already a face crop).
DETECTOR_NAMES = ("auto", "blazeface", "mtcnn", "haar", "facenet")
_threads_configured = False
#: torch's CPU threads as :func:`configure_cpu_threads` left them (None until it ran, or when the
#: environment chose): what :func:`cpu_threads` hands out.
_configured_threads: int | None = None


# ------------------------------------------------------------------------------------------- set-up
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available else CPU; otherwise ``torch.device(device)``.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str):
        device = device.strip().lower()  # "CPU", "Cuda:0" as "auto" and "AUTO" are
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"  # torch's index alone means a CUDA device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:  # torch's message lists its twenty device types
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):  # "mps", "xpu", ...: torch names them, then fails at first use
        try:
            torch.empty(0, device=device)
        except Exception as err:  # noqa: BLE001 - RuntimeError, ModuleNotFoundError ("hpu"), ...: not usable here
            raise ValueError(f"device {str(device)!r} is not available here ({first_line(err)}); use device='cpu' "
                             "or 'auto'") from err
    return device


def first_line(err: BaseException, most: int = 120) -> str:
    """The start of an error's message, for a message of lrfer's own: torch's "Could not run ..." is
    one line of about 1,200 characters listing every backend.

    >>> first_line(RuntimeError("Could not run 'aten::empty' with arguments from the 'MPS' backend. This could be ..."))
    "Could not run 'aten::empty' with arguments from the 'MPS' backend"
    """
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = text.split(". ")[0]
    return text if len(text) <= most else text[: most - 3] + "..."


def threads_chosen_by_user() -> bool:
    """Whether the environment sets the CPU thread count (``OMP_NUM_THREADS`` and the like)."""
    return any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS"))


def configure_cpu_threads() -> None:
    """Use the cores this process may run on, without oversubscribing.

    Left alone when the user chose (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set). Otherwise torch's
    default (physical cores) is only lowered if it exceeds the CPUs this process is allowed to use
    (containers, ``taskset``).
    """
    global _threads_configured, _configured_threads
    if _threads_configured:
        return
    _threads_configured = True
    if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
        os.register_at_fork(after_in_child=one_thread_after_fork)
    if threads_chosen_by_user():
        return
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        allowed = os.cpu_count() or 1
    if torch.get_num_threads() > allowed:
        torch.set_num_threads(allowed)
    _configured_threads = torch.get_num_threads()


def cpu_threads() -> int:
    """The CPU threads inference may use in all: torch's count as :func:`configure_cpu_threads` set
    it (the cores this process may run on), whatever the calling thread's count is now."""
    configure_cpu_threads()
    return torch.get_num_threads() if _configured_threads is None else _configured_threads


def prepare_cpu_process() -> None:
    """What a process that runs a recognizer on CPU needs once, whether it loaded the recognizer or
    unpickled it (a spawn worker): its torch threads, the fork hook of :func:`one_thread_after_fork`
    and glibc's raised thresholds."""
    configure_cpu_threads()
    raise_adaptive_thresholds()


def one_thread_after_fork() -> None:
    """In a child of ``os.fork`` (gunicorn's ``--preload``, ``multiprocessing`` with fork): torch on one
    CPU thread, as in torch's DataLoader workers. GNU OpenMP's thread pool does not survive a fork:
    a child that runs torch on several threads after the parent has waits forever."""
    torch.set_num_threads(1)


def normalize_detector_name(detector: str | None) -> str | None:
    """``"none"``/``None`` -> ``None``; known names lower-cased; anything else -> ``ValueError``."""
    if detector is None or (isinstance(detector, str) and detector.lower() == "none"):
        return None
    if not isinstance(detector, str) or detector.lower() not in DETECTOR_NAMES:
        raise ValueError(f"unknown detector {detector!r}; use one of {DETECTOR_NAMES} or None (images are face crops)")
    return detector.lower()


def load(
    spec: str | os.PathLike[str] | ModelSpec | None = None,
    device: str | torch.device | None = None,
    detector: str | None = "auto",
    min_face: int = 20,
    precision: str = "auto",
    close_ups: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    tta: bool = False,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Recognizer:
    """Load a model and a face detector, ready to :meth:`~Recognizer.predict`.

    ``spec``: a manifest name (see :func:`lrfer.list_models`), a local ``.safetensors`` file or
    folder, or ``"hf://org/repo[@revision]"`` (timm's ``"hf-hub:org/repo"`` too); ``None`` -> the
    manifest's default model.
    ``device``: ``None``/``"auto"`` -> CUDA if available else CPU. ``detector``: ``"auto"``
    (BlazeFace, plus MTCNN for faces too small for it), ``"blazeface"``, ``"mtcnn"``, ``"haar"``,
    ``"facenet"`` or ``None`` (each input image is already a face crop, scored as :meth:`Recognizer.predict_crops`
    scores it: a non-square one on the centred square of its shorter side, which is the face's box).
    ``min_face``: smallest face width in whole pixels the detector searches for (>= 8; below 12, MTCNN's
    12 px window, its pyramid enlarges the photo: slower).
    BlazeFace returns no narrower face; MTCNN's boxes, refined from windows of ``min_face`` px, can
    come out narrower (0.7x on the shared photos, down to 0.4x for faces shrunk below ``min_face``)
    and are kept (small faces are what lrfer is for).
    ``precision`` of the expression model: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU; on a CPU
    with native bf16, the ``"auto"`` detector's search for small faces, MTCNN's P-Net, runs in bf16:
    :func:`pnet_precision_for`),
    ``"fp32"``, ``"bf16"`` (autocast on CPU or CUDA: 1.6-2.2x faster on CPUs with AVX-512 bf16;
    on FER2013 PublicTest probabilities moved by at most 0.026 for the default model and 0.043 for
    ``gmenet-fer2013-12px``, and 98.9-99.3 % of labels stayed the same) or ``"fp16"`` (CUDA only). ``"bf16"`` also runs MTCNN's
    P-Net in bf16 (the detectors ``"auto"`` and ``"mtcnn"``): a few borderline small faces can be
    found or lost; every other detection stage stays in float32.
    ``close_ups`` (``"auto"`` and ``"blazeface"``): a photo where BlazeFace finds no face gets a second
    look, zoomed out, for a face that fills it (a portrait, a video call, a face crop). That look costs
    a second BlazeFace pass on every photo without a face: ``False`` saves it where no face fills the
    frame (CCTV, crowds).
    ``cache_dir``: where Hub weights are fetched to and looked for (as :func:`lrfer.download`'s);
    default ``$LRFER_CACHE``, else huggingface_hub's cache. Bundled weights ignore it.
    ``tta``: also classify each face's mirror image and average the two logits (:mod:`lrfer.tta`).
    It doubles the expression model's work (not the detector's). On FER2013 PublicTest it added 0.06 to 1.5
    points of accuracy to every zoo model (the default: 59.5 -> 60.2 %), and lowered its calibration error.
    ``revision``, ``token``, ``local_files_only`` (keywords, for Hub weights; see :func:`lrfer.zoo.resolve`):
    the commit, branch or tag of ``"hf://org/repo"`` (one the spec names, ``@rev``, must be the same; a manifest
    name takes only the commit it pins, bundled and local weights none: ``ValueError``); the token handed to
    ``hf_hub_download`` (``None``: ``HF_TOKEN`` or the saved login; never logged); ``True``: the cache alone,
    as ``HF_HUB_OFFLINE=1`` (weights not in it: :class:`lrfer.zoo.NotCachedError`).

    >>> rec = lrfer.load("gmenet-fer2013-16px")  # doctest: +SKIP
    >>> rec = lrfer.load("hf://org/repo", revision="<commit>", local_files_only=True)  # doctest: +SKIP
    >>> labels = [f.label for f in rec.predict("examples/group1.jpg")]  # doctest: +SKIP
    """
    from lrfer.faces.detect import make_detector

    dev = resolve_device(device)
    det_name = normalize_detector_name(detector)
    if dev.type == "cpu":
        prepare_cpu_process()
    precision = check_precision(precision, dev)
    check_tta(tta)
    if precision == "bf16" and dev.type == "cpu" and not cpu_has_fast_bf16():
        logger.warning("precision='bf16' on a CPU without native bf16 instructions (AVX-512 BF16 or AMX): "
                       "it will be slower than fp32, not faster")
    model = load_model(default_model() if spec is None else spec, device=dev, cache_dir=cache_dir, revision=revision,
                       token=token, local_files_only=local_files_only)
    det = make_detector(det_name, dev, min_face=min_face, pnet_precision=pnet_precision_for(precision, dev, det_name),
                        close_ups=close_ups) if det_name else None
    return Recognizer(model, model.pretrained_cfg, dev, det, precision, tta=tta)  # type: ignore[arg-type]  # a ModelSpec (load_model)


def cpu_has_fast_bf16(unknown: bool = True) -> bool:
    """Whether this CPU runs bf16 convolutions natively (``unknown`` if torch cannot tell).

    oneDNN's check alone says yes on every x86 CPU with AVX-512 (Skylake-SP, Cascade Lake, Ice Lake),
    where it emulates bf16, slower than fp32: on x86 the CPU must also have AVX-512 BF16 or AMX."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return unknown
    avx512 = getattr(torch.cpu, "_is_avx512_supported", None)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if avx512 is None or avx512_bf16 is None:  # a torch that cannot tell
        return unknown
    if not avx512():  # ARM, or x86 without AVX-512: oneDNN's answer stands
        return True
    return bool(avx512_bf16() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def pnet_precision_for(precision: str, device: torch.device, detector: str | None) -> str:
    """MTCNN's P-Net precision for a recognizer's ``precision``: ``"bf16"`` with ``"bf16"``; with
    ``"auto"``, ``"bf16"`` for the ``"auto"`` detector on a CPU known to run bf16 natively, else ``"fp32"``.

    There P-Net only searches for the faces too small for BlazeFace, R-Net and O-Net re-score and place
    them in float32, and bf16 takes about 20 ms off a 1920 px photo on two cores (158 -> 137 ms, the
    same faces on the shared photos). With ``detector="mtcnn"`` every face comes through P-Net, whose bf16
    scores move borderline proposals (boxes of large faces moved by up to 20 px): fp32 unless asked.
    """
    if precision == "bf16":
        return "bf16"
    if precision == "auto" and device.type == "cpu" and detector == "auto" and cpu_has_fast_bf16(unknown=False):
        return "bf16"
    return "fp32"


def step_limits(device: torch.device, enlargement: float = 1.0) -> tuple[int, float]:
    """Most images and most pixels in one step of :meth:`Recognizer.predict` on ``device``;
    ``enlargement``: how many times the detector's largest pyramid level outgrows a photo
    (:func:`pyramid_enlargement`), which divides a GPU step's pixels."""
    if device.type == "cuda":
        return GPU_IMAGES_PER_STEP, GPU_STEP_PIXELS / max(1.0, enlargement)
    return IMAGES_PER_STEP, math.inf


def pyramid_enlargement(detector: Any) -> float:
    """Pixels of MTCNN's largest pyramid level per pixel of the photo: ``(12 / min_face) ** 2`` when
    ``min_face`` is below P-Net's 12 px window (its first level is the photo enlarged), else 1.

    >>> from lrfer.faces.mtcnn import MTCNN
    >>> pyramid_enlargement(MTCNN(min_face=8)), pyramid_enlargement(MTCNN(min_face=20)), pyramid_enlargement(None)
    (2.25, 1.0, 1.0)
    """
    from lrfer.faces.mtcnn import MTCNN, PNET_WINDOW

    mtcnn = getattr(detector, "mtcnn", detector)
    if not isinstance(mtcnn, MTCNN) or not getattr(detector, "small_faces", True):  # "blazeface": O-Net only
        return 1.0
    return max(1.0, (PNET_WINDOW / mtcnn.min_face) ** 2)


def in_steps(items: Iterable[T], device: torch.device, pixels_of: Callable[[T], np.ndarray],
             enlargement: float = 1.0, most: int | None = None) -> Iterator[list[T]]:
    """``items`` in consecutive steps of at most :func:`step_limits` images and pixels on ``device``
    (``pixels_of(item)`` is the item's ``(H, W, ...)`` image), and at most ``most`` images if given."""
    limit, pixel_budget = step_limits(device, enlargement)
    most = limit if most is None else min(most, limit)
    step: list[T] = []
    pixels = 0
    for item in items:
        image = pixels_of(item)
        size = image.shape[0] * image.shape[1]
        if step and pixels + size > pixel_budget:
            yield step
            step, pixels = [], 0
        step.append(item)
        pixels += size
        if len(step) == most:  # full: out now, without waiting for (decoding) the next item
            yield step
            step, pixels = [], 0
    if step:
        yield step


def frames_ahead(device: torch.device, height: int, width: int, enlargement: float = 1.0) -> int:
    """RGB video frames of ``height`` x ``width`` decoded ahead of the model: one step's worth
    (:func:`step_limits`), at most :data:`READ_AHEAD_BYTES` of them.

    >>> frames_ahead(torch.device("cpu"), 1080, 1920), frames_ahead(torch.device("cpu"), 2160, 3840)
    (32, 10)
    """
    most, pixel_budget = step_limits(device, enlargement)
    pixels = max(1, height * width)
    return max(1, int(min(most, pixel_budget // pixels, READ_AHEAD_BYTES // (3 * pixels))))  # a float budget: math.inf on CPU


def even_steps(count: int, streams: int, most: int) -> tuple[int, int]:
    """(streams, items per step) for ``count`` items scored ``streams`` steps at once, steps of at most
    ``most``: of equal sizes, so that the streams end together, and no more streams than steps (a
    stream without a step would only take its share of the threads). One stream keeps steps of ``most``.

    >>> even_steps(40, 2, 32), even_steps(65, 2, 32), even_steps(300, 2, 32), even_steps(3, 4, 32), even_steps(40, 1, 32)
    ((2, 20), (2, 17), (2, 30), (3, 1), (1, 32))
    """
    if streams == 1:
        return 1, most
    rounds = max(1, -(-count // (streams * most)))  # steps each stream takes, at most `most` items each
    per_step = max(1, -(-count // (streams * rounds)))
    return max(1, min(streams, -(-count // per_step))), per_step


def drain(queue: collections.deque[T]) -> Iterator[T]:
    """The items of ``queue``, each let go as it is handed out (a list iterator holds them all to its end).

    >>> list(drain(collections.deque([1, 2])))
    [1, 2]
    """
    while queue:
        yield queue.popleft()


def check_batch_size(batch_size: int) -> None:
    """ValueError unless ``batch_size`` (faces per model call) is a whole number, at least 1."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` in lower case ("FP32" as "CPU" is taken for a device); ValueError for one that is
    unknown, or fp16 on CPU (no fast fp16 kernels there)."""
    if isinstance(precision, str):
        precision = precision.strip().lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {device}); on CPU use 'bf16' or 'fp32'")
    return precision


# ------------------------------------------------------------------------------------- crop helpers
def resize_square(x: torch.Tensor, size: int = HR_SIZE) -> torch.Tensor:
    """Resize float ``(N, 1, H, W)`` 0..1 to ``size x size`` as OpenCV resizes one crop (the list path
    of :func:`crops_to_gray`): exact area averaging when shrinking, bicubic when enlarging."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h >= size and w >= size:
        return downsample(x, size, "area")
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1)


def _gray_float(arr: np.ndarray, rgb: bool) -> np.ndarray:
    """uint8 ``(..., H, W)`` gray or, with ``rgb``, ``(..., H, W, 3|4)`` RGB(A) -> float32 ``(..., H, W)`` 0..1.

    Gray crops are converted by torch (multi-threaded, in place): 10x faster than NumPy's
    ``astype(...) / 255`` on 1024 48x48 crops (0.23 against 2.7 ms on 2 cores), the same values. RGB
    crops go through one float copy of their three channels (NumPy) and a matrix product.
    """
    if rgb:
        return (arr[..., :3].astype(np.float32) @ GRAY_WEIGHTS) / 255
    return torch.from_numpy(np.require(arr, requirements=("C", "W"))).float().div_(255).numpy()  # read-only: copied (torch warns)


def _check_crop_array(crops: np.ndarray, batch: bool = True, what: str | None = None, tensor: bool = False) -> np.ndarray:
    """Validate a batched crop array: uint8 ``(N, H, W)``, ``(N, H, W, 1|3|4)``. ``batch``: the caller's
    own array, where ``(H, W, 3|4)`` is one color crop passed without its batch axis, not 3 px wide faces.
    ``what``: the caller's input as errors name it (a list's crop before its batch axis was added);
    ``tensor``: it was a tensor, so a hint for a channel-first batch is written for tensors."""
    what = what or describe(crops)
    if crops.dtype != np.uint8:
        raise ValueError(f"wrong dtype {crops.dtype} for crops ({what}): crops must be uint8 (0..255); "
                         f"{lrfer_io.dtype_hint(crops)}")
    if batch and crops.ndim == 3 and crops.shape[-1] in (1, 2, 3, 4) and min(crops.shape[:2]) > 4:
        raise ValueError(f"crops of shape {tuple(crops.shape)} look like one {crops.shape[-1]}-channel crop, not "
                         f"{crops.shape[0]} gray crops {crops.shape[-1]} px wide: pass crops[None] or [crop]")
    if crops.ndim == 4 and crops.shape[-1] == 1:
        crops = crops[..., 0]
    if not (crops.ndim == 3 or (crops.ndim == 4 and crops.shape[-1] in (3, 4))):
        one = "; one crop needs its batch axis: pass crops[None] or [crop]" if crops.ndim == 2 else ""
        raise ValueError(f"wrong shape {tuple(crops.shape)} for crops: expected (N, H, W) gray or (N, H, W, 3) RGB"
                         f"{one}{_channel_first_batch_hint(crops.shape, tensor)}")
    if crops.shape[1] == 0 or crops.shape[2] == 0:
        raise ValueError(f"empty image (0 size) in crops of shape {tuple(crops.shape)}")
    lrfer_io.check_pixel_count((crops.shape[2], crops.shape[1]), f"each of the crops of shape {tuple(crops.shape)}")
    return crops


def _channel_first_batch_hint(shape: tuple[int, ...], tensor: bool) -> str:
    """How to pass a channel-first batch ``(N, C, H, W)`` (torch's layout, as timm's loaders give it) as
    the channel-last crops :func:`_check_crop_array` takes; empty for other shapes.

    >>> _channel_first_batch_hint((4, 1, 16, 16), tensor=True)
    '; a channel-first batch (N, 1, H, W) of gray crops: pass x[:, 0]'
    """
    if len(shape) != 4 or shape[1] not in (1, 3, 4):
        return ""
    if shape[1] == 1:
        return "; a channel-first batch (N, 1, H, W) of gray crops: pass x[:, 0]"
    move = "x.permute(0, 2, 3, 1)" if tensor else "np.moveaxis(x, 1, -1)"
    return f"; a channel-first batch (N, {shape[1]}, H, W), torch's layout: pass {move}"


#: The smallest height and width of a ``(3, H, W)`` crops array that :func:`warn_if_channel_first` warns about.
CHANNEL_FIRST_MIN_SIDE = 8
#: Whether :func:`warn_if_channel_first` has warned in this process (once: a loop over crops would repeat it).
_warned_channel_first = False


def warn_if_channel_first(shape: tuple[int, ...], tensor: bool = False) -> None:
    """Log a warning, once per process, for crops of shape ``(3, H, W)`` (``W`` not 3, ``H`` and ``W`` at
    least :data:`CHANNEL_FIRST_MIN_SIDE`): they are three gray crops, as the first axis is always the
    crops', which is right for gray faces, but such an array is more often one colour crop with its
    channels first (torch's layout), read wrong without a word."""
    global _warned_channel_first
    if (_warned_channel_first or len(shape) != 3 or shape[0] != 3 or shape[2] == 3
            or min(shape[1:]) < CHANNEL_FIRST_MIN_SIDE):
        return
    _warned_channel_first = True
    one = "[x] (a tensor in a list is read channels first)" if tensor else "[np.moveaxis(x, 0, -1)]"
    logger.warning("crops of shape %s are read as 3 gray crops of %dx%d px (the first axis is the crops'); if it "
                   "is one RGB crop with its channels first, pass %s (this warning is logged once)",
                   tuple(shape), shape[1], shape[2], one)


def centre_square_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """The box ``(x1, y1, x2, y2)`` of the square that :func:`crops_to_gray` scores in an ``(H, W[, C])``
    image: the centred square of its shorter side, inside the image.

    >>> centre_square_box(np.zeros((48, 40, 3), np.uint8))
    (0.0, 4.0, 40.0, 44.0)
    """
    top, left, side = centre_square_corner(*image.shape[:2])
    return float(left), float(top), float(left + side), float(top + side)


def _crop_to_gray(crop: Any, index: int, size: int) -> np.ndarray:
    """One crop (array / PIL / tensor / path) -> float32 ``(size, size)`` gray: its centred square
    (:func:`lrfer.io.centre_square`), resized with OpenCV."""
    import cv2

    try:
        if isinstance(crop, np.ndarray) and crop.ndim == 2:  # errors name the crop, not the batch of one made here
            arr = _check_crop_array(crop[None], batch=False, what=describe(crop))[0]
        else:
            arr = load_image(crop)
    except ValueError as e:
        raise ValueError(f"crops[{index}]: {e}") from None
    gray = _gray_float(centre_square(arr), rgb=arr.ndim == 3)
    h, w = gray.shape
    if (h, w) == (size, size):
        return gray
    shrink = h >= size and w >= size
    out = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 1)


def crops_to_gray(crops: np.ndarray | torch.Tensor | Sequence[Any], size: int = HR_SIZE) -> torch.Tensor:
    """Tight face crops of any size -> float ``(N, 1, size, size)`` gray in 0..1 (CPU), ``size`` being
    48 or a model's native resolution: a non-square crop is cut to the centred square of its shorter
    side (:func:`lrfer.io.centre_square`, the rule of training and ``lrfer eval``), then each crop is
    resized once, straight to ``size`` (exact area when shrinking, bicubic when enlarging), so a square
    crop already at the native size is used as it is.

    A ``uint8`` array ``(N, H, W)`` or ``(N, H, W, 3)`` is cut by one slice and resized in one batched
    call (:func:`resize_square`), a list of differently sized crops one by one with OpenCV: the same values.

    >>> crops_to_gray(np.zeros((2, 96, 96), np.uint8)).shape
    torch.Size([2, 1, 48, 48])
    >>> crops_to_gray(np.zeros((2, 24, 24), np.uint8), 16).shape
    torch.Size([2, 1, 16, 16])
    """
    tensor = _is_tensor(crops)
    if _is_tensor(crops):
        # checked here, naming the tensor: numpy has no bf16 (.numpy() would raise a bare TypeError)
        if crops.dtype != torch.uint8:
            raise ValueError(f"wrong dtype {crops.dtype} for crops ({describe(crops)}): crops must be uint8 (0..255); "
                             f"{lrfer_io.tensor_dtype_hint(crops)}")
        crops = crops.detach().cpu().numpy()
    if isinstance(crops, np.ndarray):
        arr = _check_crop_array(crops, tensor=tensor)
        warn_if_channel_first(arr.shape, tensor)
        if arr.shape[0] == 0:
            return torch.zeros(0, 1, size, size)
        arr = centre_square(arr, axes=(1, 2))  # one slice (a view) for the whole batch, no loop
        with no_autocast():  # the resizing's matrix products, under a caller's autocast, would run in bf16
            return resize_square(torch.from_numpy(_gray_float(arr, rgb=arr.ndim == 4)).unsqueeze(1), size)
    if not isinstance(crops, (list, tuple)):
        raise ValueError(f"crops must be a uint8 array (N, H, W[, 3]) or a list of images; got {describe(crops)}")
    if not crops:
        return torch.zeros(0, 1, size, size)
    return torch.from_numpy(np.stack([_crop_to_gray(c, i, size) for i, c in enumerate(crops)])).unsqueeze(1)


def _is_tensor(obj: Any) -> TypeGuard[torch.Tensor]:
    return isinstance(obj, torch.Tensor)


#: predict_tensor's input range check: generous enough for a bicubic resize's overshoot, narrow
#: enough to catch 0..255 pixels and faces already normalised (about -2..2).
UNIT_RANGE_SLACK = 0.5


def _check_unit_range(x: torch.Tensor) -> None:
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (-UNIT_RANGE_SLACK <= lo and hi <= 1 + UNIT_RANGE_SLACK):
        raise ValueError(f"predict_tensor input values span {lo:.4g}..{hi:.4g}: expected faces in 0..1 (divide "
                         "0..255 pixels by 255; lrfer applies the model's normalisation itself)")


#: One trace at a time: each trace patches ``nn.Module.__call__`` and restores what it found, so two
#: overlapping traces (``lrfer.load`` in several threads) left one's patch installed for good.
_TRACE_LOCK = threading.Lock()


def trace_this_thread(model: nn.Module) -> Any:
    """``torch.fx.symbolic_trace(model)``, except that the process-wide ``nn.Module.__call__`` patch of
    tracing only traces this thread: a module another thread calls meanwhile runs as usual (with the
    plain tracer it raised ``NameError: module is not installed as a submodule``). Traces made here
    run one at a time."""
    from torch import fx

    owner = threading.get_ident()

    class ThisThreadTracer(fx.Tracer):
        def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
            if threading.get_ident() != owner:
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

    with _TRACE_LOCK:
        graph = ThisThreadTracer().trace(model)
    return fx.GraphModule(model, graph)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with each BatchNorm folded into its convolution (``torch.fx``).

    BatchNorm was 14 % of GME-Net-16's CPU time; folded, the network measured 1.2-1.6x faster, with
    outputs equal to 1e-5. A model that ``torch.fx`` cannot trace is returned unchanged.
    """
    import warnings

    # catch_warnings swaps the process-wide filter list: two overlapping blocks (lrfer.load in several
    # threads) could restore each other's "ignore" filters for good, so one block at a time.
    with _TRACE_LOCK, warnings.catch_warnings():  # the module imports torch.jit helpers that warn about their deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse
        # Tracing fills this cache; torch 2.1 reads torch.has_cuda & co. there, a UserWarning each.
        warnings.simplefilter("ignore", UserWarning)
        torch.overrides.get_ignored_functions()
    try:
        traced = trace_this_thread(model.eval())
        if "no_trace" in inspect.signature(fuse).parameters:
            return fuse(traced, no_trace=True)  # type: ignore[call-arg, unused-ignore]  # not in torch 2.1's stubs
        return _fuse_traced(traced)
    except Exception as err:  # noqa: BLE001 - any tracing failure just keeps the eager model
        logger.debug("BatchNorm folding skipped for %s: %s", type(model).__name__, err)
        return model


def _fuse_traced(traced: Any) -> nn.Module:
    """``fuse(traced, no_trace=True)`` for a torch whose ``fuse`` has no ``no_trace`` (2.1): that ``fuse``
    traces again with the plain tracer (the process-wide ``nn.Module.__call__`` patch that
    :func:`trace_this_thread` avoids). The same folding as the newer ``fuse``, on the given graph."""
    import copy

    from torch import fx
    from torch.fx.experimental.optimization import matches_module_pattern, replace_node_module
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    patterns: list[tuple[type[nn.Module], type[nn.Module]]] = [
        (nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
        (nn.Linear, nn.BatchNorm1d)]
    fx_model = copy.deepcopy(traced)
    modules = dict(fx_model.named_modules())
    new_graph = copy.deepcopy(fx_model.graph)
    for pattern in patterns:
        for node in new_graph.nodes:
            if not matches_module_pattern(pattern, node, modules) or len(node.args[0].users) > 1:
                continue
            first, bn = modules[node.args[0].target], modules[node.target]
            if not bn.track_running_stats:
                continue
            fused = fuse_linear_bn_eval(first, bn) if isinstance(first, nn.Linear) else fuse_conv_bn_eval(first, bn)
            replace_node_module(node.args[0], modules, fused)
            node.replace_all_uses_with(node.args[0])
            new_graph.erase_node(node)
    return fx.GraphModule(fx_model, new_graph)


#: One inference network built at a time: :func:`made_fx_sources` records the torch.fx sources of the
#: building thread, swapping torch's recording function meanwhile.
_BUILD_LOCK = threading.Lock()


def _new_locks_after_fork() -> None:
    """In a child of ``os.fork``: a lock another thread held at the fork (a ``lrfer.load`` running
    meanwhile) would stay held, and the child's own ``lrfer.load`` waited forever."""
    global _BUILD_LOCK, _TRACE_LOCK
    _BUILD_LOCK = threading.Lock()
    _TRACE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_locks_after_fork)


def _fx_sources() -> dict[str, str] | None:
    """torch.fx's process-wide cache of the Python source it generates for every ``GraphModule`` (keyed
    by the generated code's file name, read to show that code in tracebacks and by ``inspect.getsource``,
    which ``torch.jit.script`` of a ``GraphModule`` needs); None if torch has none."""
    from torch.fx import graph_module

    cache = getattr(getattr(graph_module, "_loader", None), "eval_cache", None)
    return cache if isinstance(cache, dict) else None


def _forget_fx_source(key: str) -> None:
    cache = _fx_sources()
    if cache is not None:
        cache.pop(key, None)
    linecache.cache.pop(key, None)


@contextlib.contextmanager
def made_fx_sources() -> Iterator[list[str]]:
    """The keys of the sources torch.fx caches for graphs that this thread makes while the block runs
    (none if torch has no such cache). Graphs other threads make meanwhile are not listed: dropping
    their source broke their tracebacks' source lines and ``torch.jit.script`` of them."""
    from torch.fx import graph_module

    loader = getattr(graph_module, "_loader", None)
    record = getattr(loader, "cache", None)
    made: list[str] = []
    if loader is None or _fx_sources() is None or not callable(record):
        yield made
        return
    owner = threading.get_ident()

    def cache(*args: Any, **kwargs: Any) -> Any:
        key = record(*args, **kwargs)
        if threading.get_ident() == owner and isinstance(key, str):
            made.append(key)
        return key

    loader.cache = cache  # an instance attribute over the method, removed below
    try:
        yield made
    finally:
        vars(loader).pop("cache", None)


def release_fx_sources(network: nn.Module, made: Collection[str]) -> None:
    """Let go of the source torch.fx generated under the keys ``made`` (:func:`made_fx_sources` of a
    build): now for the graphs that ``network`` does not use (traced and fused copies), when
    ``network`` is freed for its own. torch.fx keeps every generated source for the life of the
    process: 20-114 kB per :func:`load` of a zoo model (five graphs), and as much per unpickled
    :class:`Recognizer`, so a server loading models, or a worker unpickling one per task, grew without end."""
    from torch import fx

    used: set[str] = set()
    for module in network.modules():
        code = getattr(type(module).forward, "__code__", None) if isinstance(module, fx.GraphModule) else None
        if code is not None:  # the generated forward's file name is its key in the cache
            used.add(code.co_filename)
    for key in set(made):
        if key in used:
            weakref.finalize(network, _forget_fx_source, key).atexit = False
        else:
            _forget_fx_source(key)


def largest_activation(model: nn.Module, in_chans: int, resolution: int) -> int:
    """Elements per face of the largest input or module output of ``model`` (one probe face)."""
    sizes = [in_chans * resolution * resolution]

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        sizes.extend(o.numel() for o in outputs if isinstance(o, torch.Tensor))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.inference_mode():
            device = next(model.parameters(), torch.zeros(())).device
            model(torch.zeros(1, in_chans, resolution, resolution, device=device, dtype=torch.float32).contiguous(
                memory_format=torch.channels_last))
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


def faces_per_cpu_call(model: nn.Module, in_chans: int, resolution: int) -> int:
    """Faces per network call on CPU: the largest power of two whose largest feature map fits
    :data:`CPU_ACTIVATION_BUDGET` (activations stay in cache), between 32 and 4096.

    Measured side by side on 2 cores (predict_crops, batch 1024, faces/s for 128/256/512/1024/2048
    faces per call): resnet18-48 (9,216 floats per face -> 128) 4,969/4,334/3,987/3,220/3,162;
    gmenet-16 (8,192 -> 256) 5,200/5,629/4,409/3,441/3,425; gmenet-fast-16 (1,024 -> 2048)
    22,826/33,451/37,936/44,053/43,796.

    >>> faces_per_cpu_call(nn.Conv2d(1, 32, 3, padding=1), 1, 16)  # 32 x 16 x 16 = 8,192 floats per face
    256
    """
    faces = CPU_ACTIVATION_BUDGET // largest_activation(model, in_chans, resolution)
    return int(min(max(1 << max(faces, 1).bit_length() - 1, 32), 4096))


# ------------------------------------------------------------------------------------------ Recognizer
class Recognizer:
    """A face detector and an expression model on one device. Build it with :func:`lrfer.load`.

    ``model`` is the loaded network (to read, or to copy for fine-tuning); inference runs on a copy
    made here (BatchNorm folded, eval mode), so later changes to ``model`` (weights, ``train()``) do not
    change predictions: save changed weights with :func:`lrfer.zoo.save_weights` and load them, or
    build a new ``Recognizer(model, spec, device, detector, precision=rec.precision, tta=rec.tta)``
    (``precision`` and ``tta`` default to ``"auto"`` and ``False``, not to the old recognizer's).

    >>> rec = lrfer.load(detector="mtcnn")  # doctest: +SKIP
    >>> faces = rec.predict("examples/group1.jpg")  # doctest: +SKIP
    >>> faces[0].label in rec.classes  # doctest: +SKIP
    True
    """

    def __init__(
        self, model: nn.Module, spec: ModelSpec, device: torch.device, detector: Any | None, precision: str = "auto",
        tta: bool = False,
    ) -> None:
        # channels_last: ~1.5x faster convolutions on CPU (measured in benchmarks/throughput.py) and
        # the layout tensor cores want on CUDA.
        self.model: nn.Module = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # memory_format: missing from torch's stubs
        self.spec = spec
        self.device: torch.device = torch.device(device)
        self.precision = check_precision(precision, self.device)
        self.tta = check_tta(tta)
        self._network = self._inference_network()
        # CUDA takes whole batches; only CPU needs the probe forward that sizes the chunks.
        self._cpu_chunk = faces_per_cpu_call(self._network, spec.in_chans, spec.resolution) if self.device.type == "cpu" else None
        self.detector = detector
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def __getstate__(self) -> dict[str, Any]:
        # The traced inference graph does not pickle (torch.fx, string annotations); it is rebuilt.
        return {k: v for k, v in self.__dict__.items() if k != "_network"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("tta", False)  # pickled before tta existed: single view, as it was
        self.__dict__.update(state)
        if self.device.type == "cpu":  # a spawn worker never called load: a fork from it hung without the hook
            prepare_cpu_process()
        self._network = self._inference_network()

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the order of the model's outputs."""
        return tuple(self.spec.classes)

    @property
    def resolution(self) -> int:
        """The model's native input size in pixels (faces are degraded to it)."""
        return int(self.spec.resolution)

    def __repr__(self) -> str:
        return (f"Recognizer(model={self.spec.name!r}, resolution={self.resolution}, device={str(self.device)!r}, "
                f"detector={detector_name(self.detector)!r}, precision={self.precision!r}, tta={self.tta!r})")

    # -- tensor in / tensor out -------------------------------------------------------------------
    def _inference_network(self) -> nn.Module:
        """The network that inference calls: BatchNorm folded (:func:`fold_batchnorm`) and, on CPU in
        float32, additions and multiplications computed in place (:func:`~lrfer.inplace.compute_in_place`:
        the same outputs; the default model's ``predict_crops`` 1.04-1.31x faster on 2 cores)."""
        with _BUILD_LOCK:
            with made_fx_sources() as made:
                network = self._build_inference_network()
            release_fx_sources(network, made)
        return network

    def _build_inference_network(self) -> nn.Module:
        from torch import fx

        from lrfer.inplace import compute_in_place

        network = fold_batchnorm(self.model)
        if network is self.model:  # not traceable (MA-Net): a copy all the same, so that rec.model.train() or
            try:                     # edits of rec.model reach no model's predictions
                network = copy.deepcopy(self.model).eval()
            except (RuntimeError, TypeError) as err:  # weight_norm's computed weight, non-leaf tensor attributes
                logger.warning("%s cannot be copied (%s): inference runs on the model itself, so changes to "
                               "rec.model reach predictions", type(self.model).__name__, first_line(err))
        if self.device.type != "cpu" or self._autocast_dtype() is not None or not isinstance(network, fx.GraphModule):
            return network
        example = torch.zeros(3, self.spec.in_chans, self.spec.resolution, self.spec.resolution, device=self.device,
                              dtype=torch.float32)
        return compute_in_place(network, example.contiguous(memory_format=torch.channels_last))

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.precision == "auto":
            return torch.float16 if self.device.type == "cuda" else None
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self._autocast_dtype()
        if dtype is None:  # fp32 (predict_tensor has switched a caller's autocast off)
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _check_faces_tensor(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"predict_tensor expects a torch.Tensor; got {describe(x)}")
        if not x.is_floating_point():
            raise ValueError(f"wrong dtype {x.dtype} for predict_tensor input: expected float faces in 0..1 (x / 255)")
        sizes = {HR_SIZE, self.resolution}
        if x.ndim != 4 or x.shape[1] != self.spec.in_chans or x.shape[2] != x.shape[3] or x.shape[2] not in sizes:
            raise ValueError(
                f"wrong shape {tuple(x.shape)} for predict_tensor input: expected (N, {self.spec.in_chans}, 48, 48) "
                f"aligned faces or (N, {self.spec.in_chans}, {self.resolution}, {self.resolution}) native faces"
            )

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Aligned faces ``(N, 1, 48, 48)`` (or native ``(N, 1, r, r)``), float 0..1 -> probabilities ``(N, C)``.

        Applies :func:`~lrfer.faces.degrade.to_native`, the spec's normalisation, the model and the
        calibrated softmax; the result stays on the model's device, an ordinary tensor (editable, and
        usable in an autograd graph, e.g. as soft targets; no gradient flows back to ``x``: the model runs
        in inference mode, fine-tune ``rec.model`` for gradients). Values far outside 0..1 (0..255 pixels,
        or faces already normalised) raise a ValueError; checking them reads two numbers back from
        the device.

        >>> rec.predict_tensor(torch.rand(4, 1, 48, 48)).shape  # doctest: +SKIP
        torch.Size([4, 7])
        """
        self._check_faces_tensor(x)
        _check_unit_range(x)
        return self._probabilities(x).clone()  # out of inference mode: an inference tensor is read-only to autograd

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), no_autocast():
            x = x.to(self.device, dtype=torch.float32, non_blocking=True)
            x = (to_native(x, self.resolution) - self._mean) / self._std
            if self.tta:
                x = with_mirror_images(x)
            x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = torch.cat([alignment.run_network(self._network, part, MIN_FACE_ROWS) for part in x.split(self._model_chunk())]) if len(x) else self._network(x)
            if self.tta:
                logits = mean_over_mirror_images(logits.float())
            return torch.softmax(logits.float() / self.spec.temperature, dim=1)

    def _model_chunk(self) -> int:
        """Faces per network call: on CPU, :func:`faces_per_cpu_call` (activations in cache); on CUDA, everything."""
        return self._cpu_chunk or 1 << 30

    def classify(self, faces48: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Pipeline stage: probabilities for aligned 48x48 faces (or faces at the native size, as crops
        are), float ``(N, 1, 48, 48)`` gray in 0..1, ``batch_size`` at a time -> numpy float32 ``(N, C)``.

        Unlike :meth:`predict_tensor` the value range is not checked: 0..255 pixels give confident,
        meaningless probabilities.

        >>> rec.classify(torch.rand(3, 1, 48, 48)).shape  # doctest: +SKIP
        (3, 7)
        """
        check_batch_size(batch_size)
        self._check_faces_tensor(faces48)
        if faces48.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        if self.device.type == "cuda" and faces48.device.type == "cpu":
            faces48 = faces48.pin_memory()
        parts = [self._probabilities(faces48[i : i + batch_size]).cpu() for i in range(0, faces48.shape[0], batch_size)]
        return torch.cat(parts).numpy()

    # -- crops ------------------------------------------------------------------------------------
    def predict_crops(self, crops: np.ndarray | torch.Tensor | Sequence[Any], batch_size: int = 256) -> np.ndarray:
        """Probabilities ``(N, len(classes))`` for already-cropped faces (FER2013-like tight framing).

        ``crops``: ``uint8`` array (or tensor) ``(N, H, W)`` gray or ``(N, H, W, 3)`` RGB, or a list of
        crops of any sizes (each as :meth:`predict` reads one image). Each is converted to gray (ITU-R 601:
        ``0.299 R + 0.587 G + 0.114 B``), cut, if it is not square, to the centred square of its shorter
        side (:func:`lrfer.io.centre_square`: a ``(N, 48, 40)`` array is scored on its ``[:, 4:44]``
        rows, as training and ``lrfer eval`` crop such faces; stretching distorts the expression: crop
        the square yourself to choose another), and resized once, straight to the model's
        native size (exact area averaging when shrinking, as training degrades its 48 px faces; bicubic
        when enlarging): a square crop already at the native size goes to the network unchanged.
        Colour crops are read as RGB, as everywhere in lrfer: OpenCV's BGR arrays (``cv2.imread``)
        must be converted first (``cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)``), or red and blue swap weights.
        The first axis is always the crops': one ``(H, W, 3)`` crop is refused (pass ``crop[None]`` or
        ``[crop]``), and an array or tensor ``(3, H, W)`` is three gray crops, not one channel-first RGB
        crop as :meth:`predict` reads it (a warning is logged once, for ``H`` and ``W`` of 8 px or more):
        pass such a crop as ``[np.moveaxis(crop, 0, -1)]``, or a tensor as ``[crop]``.

        >>> rec.predict_crops(np.zeros((5, 48, 48), np.uint8)).shape  # doctest: +SKIP
        (5, 7)
        """
        return self.classify(crops_to_gray(crops, self.resolution), batch_size)

    # -- images -----------------------------------------------------------------------------------
    # The order matters to type checkers, which take the first overload that fits. A tensor first: under
    # ``mypy --strict`` torch 2.1's stubs give Tensor an Any base (torch._C is not re-exported), and such
    # a Tensor fits the list overload too. Lists before the other images: without Pillow (optional)
    # PILImage is Any, and the last overload would fit a list.
    @overload
    def predict(self, images: torch.Tensor, batch_size: int = 256, streams: int | None = None) -> list[Face]: ...

    @overload
    def predict(self, images: list[Any] | tuple[Any, ...], batch_size: int = 256, streams: int | None = None
                ) -> list[list[Face]]: ...

    @overload  # a str or an array is iterable too, but one image: this overload, before the iterables', fits it
    def predict(self, images: str | os.PathLike[str] | np.ndarray | PILImage, batch_size: int = 256,  # type: ignore[overload-overlap, unused-ignore]
                streams: int | None = None) -> list[Face]: ...

    @overload  # any other iterable of images: a generator, map(...)
    def predict(self, images: Iterable[Any], batch_size: int = 256, streams: int | None = None
                ) -> list[list[Face]]: ...

    def predict(self, images: Any, batch_size: int = 256, streams: int | None = None) -> list[Face] | list[list[Face]]:
        """Detect faces and read their expressions.

        One image (path, numpy ``uint8`` HxW / HxWx3 RGB / HxWx4, ``PIL.Image``, ``uint8`` tensor
        ``(3, H, W)`` or ``(H, W, 3)``) -> ``list[Face]``; a list of images, or any other iterable of
        them (a generator, ``map(...)``: taken a step at a time, so memory stays flat however long it is)
        -> ``list[list[Face]]``, in the iterable's order (an empty one: ``[]``). Colour arrays are RGB:
        convert OpenCV's BGR (``cv2.imread``) with ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)``. No face -> an
        empty list. ``batch_size``: faces per model call.
        ``streams``: steps of a long list (at most :func:`step_limits`: 32 images on CPU, evened out so
        that the streams end together) scored at once, each on a thread and, on CUDA, a CUDA stream of
        its own (:func:`lrfer.overlap.overlapped`), the calling thread's torch CPU threads shared among
        them (:func:`lrfer.overlap.threads_per_stream`), while the calling thread decodes the next step's
        files. ``None``: :func:`lrfer.overlap.auto_streams` (2 on CPU when the calling thread has 2
        torch threads or more, 1 on CUDA); never more than the list's steps. The same faces in the same
        order, up to float rounding (a step on fewer threads sums in another order).

        >>> faces = rec.predict("examples/group1.jpg")  # doctest: +SKIP
        >>> per_image = rec.predict(["a.jpg", "b.png"], streams=2)  # doctest: +SKIP
        >>> per_image = rec.predict(p for p in Path("photos").glob("*.jpg"))  # doctest: +SKIP
        """
        from lrfer.overlap import overlapped, streams_or_auto, threads_per_stream

        check_batch_size(batch_size)  # here, not in the first step's model call: an empty list too, and before any decoding
        streams = streams_or_auto(streams, self.device)
        single = is_image_like(images)
        if single or isinstance(images, (list, tuple)):
            listed = [images] if single else images
            streams, per_step = self._streams_for(len(listed), streams)
            items: Iterable[Any] = listed
        else:  # a generator, map(...), ...: taken a step at a time, never all at once
            items, streams, per_step = self._stepped_iterable(images, streams)
        steps = self._steps(items, single, per_step)
        scored = overlapped(functools.partial(self._predict_step, batch_size=batch_size), steps, streams, self.device,
                            threads_per_stream(streams))
        try:
            results = [faces for found in scored for faces in found]
        finally:
            scored.close()  # an error or an interrupt: the other steps in flight stop
        return results[0] if single else results

    #: ``rec(images)`` is ``rec.predict(images)``, as a Hugging Face pipeline or facenet-pytorch's MTCNN is called.
    __call__ = predict

    def _streams_for(self, count: int, streams: int) -> tuple[int, int]:
        """:func:`even_steps` for a list of ``count`` images on this device (on CPU, 40 images on 2 streams:
        steps of 20 and 20, not 32 and 8)."""
        return even_steps(count, streams, step_limits(self.device, pyramid_enlargement(self.detector))[0])

    def _stepped_iterable(self, images: Iterable[Any], streams: int) -> tuple[Iterator[Any], int, int]:
        """(items, streams, images per step) for an iterable of images that is not a list: its first
        ``streams`` steps' items are taken ahead (not decoded); if it ends within them, they are evened
        out as a list of that length, else the steps are of :func:`step_limits` as its length is unknown.
        Memory stays flat however long a generator is: items leave the look-ahead as they are taken."""
        most = step_limits(self.device, pyramid_enlargement(self.detector))[0]
        source = iter(images)
        ahead = collections.deque(itertools.islice(source, streams * most + 1))
        if len(ahead) <= streams * most:
            streams, per_step = self._streams_for(len(ahead), streams)
            return drain(ahead), streams, per_step
        return itertools.chain(drain(ahead), source), streams, most

    def _steps(self, items: Iterable[Any], single: bool, most: int | None = None) -> Iterator[list[np.ndarray]]:
        """The images loaded, in steps of :func:`step_limits` (and at most ``most`` images)."""
        loaded = (self._load(item, index, single) for index, item in enumerate(items))
        yield from in_steps(loaded, self.device, lambda array: array, pyramid_enlargement(self.detector), most)

    # -- videos -----------------------------------------------------------------------------------
    def predict_video(self, video: str | os.PathLike[str], every: int = 1, batch_size: int = 256,
                      streams: int | None = None) -> Generator[VideoFrame, None, None]:
        """Detect faces and read their expressions in every ``every``-th frame of a video file.

        A generator of :class:`~lrfer.results.VideoFrame` (frame index, time in seconds, faces), in
        frame order, one per frame read, faces or not. Frames are decoded one at a time in a
        background thread, a step of frames ahead, and scored in steps as :meth:`predict` scores a
        list of images: memory stays flat however long the video. ``streams``: steps scored at once,
        each on a thread (and on CUDA a CUDA stream) of its own (:func:`lrfer.overlap.overlapped`;
        they share the calling thread's torch CPU threads); ``None``: :func:`lrfer.overlap.auto_streams`
        (2 on CPU when the calling thread has 2 torch threads or more, 1 on CUDA). ValueError when the file cannot be read as a video; a video
        that ends before the frames its header announces (truncated or damaged) is scored as far as
        it decodes, and a warning is logged.

        >>> for frame in rec.predict_video("clip.mp4", every=5):  # doctest: +SKIP
        ...     print(frame.index, frame.time_s, [f.label for f in frame.faces])
        """
        return (frame for frame, _ in self.predict_video_frames(video, every, batch_size, streams))

    def predict_video_frames(
        self, video: str | os.PathLike[str], every: int = 1, batch_size: int = 256, streams: int | None = None,
        *, on_info: Callable[[VideoInfo], object] | None = None,
    ) -> Generator[tuple[VideoFrame, np.ndarray], None, None]:
        """:meth:`predict_video`, each result with its frame's RGB ``uint8 (H, W, 3)`` pixels (to draw on).
        ``on_info``: called with the file's :class:`~lrfer.video.VideoInfo` (its header, read when the
        decoder opens the file) before this method returns, so a caller needing the frame count or
        frame rate (``lrfer predict``, for its progress bar and annotated copy) does not open the file
        a second time.

        With ``streams`` > 1 each step runs on :func:`lrfer.overlap.threads_per_stream` torch threads (the
        calling thread's own count is left alone), and when the file's header gives its number of frames,
        the steps are evened out (:func:`even_steps`: 96 frames on 2 streams as 4 steps of 24, not 32, 32
        and a last 32 alone); frames beyond the announced count (a header that undercounts) come in
        steps of the usual size, not in the evened ones (a header announcing 2 frames of a long video
        made them steps of 1 frame, for the whole video)."""
        from lrfer.overlap import streams_or_auto, threads_per_stream
        from lrfer.video import prepend, read_frames

        every = check_every(every)
        check_batch_size(batch_size)
        streams = streams_or_auto(streams, self.device)
        opened: list[VideoInfo] = []

        def header(read: VideoInfo) -> None:
            opened.append(read)
            if on_info is not None:
                on_info(read)

        frames = read_frames(video, every, header)
        first = next(frames)  # a missing, unreadable or undecodable file fails here, not at the first result
        height, width = first[2].shape[:2]
        ahead = frames_ahead(self.device, height, width, pyramid_enlargement(self.detector))
        most = count = None
        announced = 0 if streams == 1 else opened[0].frame_count
        if announced:
            count = -(-announced // every)
            streams, most = even_steps(count, streams, ahead)
        threads = threads_per_stream(streams) if streams > 1 else None
        return self._video_steps(prepend(first, frames), batch_size, ahead, streams, most, threads, count)

    def _video_steps(
        self, decoded: Iterator[tuple[int, float, np.ndarray]], batch_size: int, ahead: int, streams: int,
        most: int | None = None, threads: int | None = None, count: int | None = None,
    ) -> Generator[tuple[VideoFrame, np.ndarray], None, None]:
        """The frames of ``decoded`` scored ``streams`` steps at once, read ``most`` (default ``ahead``)
        frames ahead; with ``most``, the first ``count`` frames in steps of at most ``most`` and any
        after them in steps of at most ``ahead``."""
        from lrfer.overlap import overlapped
        from lrfer.video import read_ahead

        def score(step: list[tuple[int, float, np.ndarray]]) -> tuple[list[tuple[int, float, np.ndarray]], list[list[Face]]]:
            return step, self._predict_step([pixels for _, _, pixels in step], batch_size)

        def stepped(items: Iterable[tuple[int, float, np.ndarray]], most: int | None) -> Iterator[list[tuple[int, float, np.ndarray]]]:
            return in_steps(items, self.device, lambda frame: frame[2], pyramid_enlargement(self.detector), most)

        frames = read_ahead(decoded, depth=most or ahead)
        if most is None or count is None:
            steps = stepped(frames, most)
        else:  # islice takes no frame beyond the count: the last even step is not held back
            steps = itertools.chain(stepped(itertools.islice(frames, count), most), stepped(frames, ahead))
        scored = overlapped(score, steps, streams, self.device, threads)
        try:
            for step, found in scored:
                for (index, time_s, pixels), faces in zip(step, found):
                    yield VideoFrame(index, time_s, faces), pixels
        finally:
            scored.close()  # nothing more is scored; then the decoding thread stops
            frames.close()

    def _predict_step(self, arrays: list[np.ndarray], batch_size: int) -> list[list[Face]]:
        faces = self._score_step(arrays, batch_size)
        trim_if_grown()  # the step's memory is freed: photos of many sizes leave it in glibc's heap
        return faces

    def _score_step(self, arrays: list[np.ndarray], batch_size: int) -> list[list[Face]]:
        if self.detector is None:
            return self._faces_from_crops(arrays, batch_size)
        tensors = to_device_tensors(arrays, self.device)
        detections = self.detect(tensors)
        stop_if_cancelled()
        faces48 = self.align(tensors, detections)
        probs = self.classify(faces48, batch_size)
        return self._to_faces(detections, probs)

    @staticmethod
    def _load(item: Any, index: int, single: bool) -> np.ndarray:
        try:
            return load_image(item)
        except ValueError as e:
            raise ValueError(str(e) if single else f"images[{index}]: {e}") from None

    def detect(self, tensors: list[torch.Tensor]) -> list[Any]:
        """Pipeline stage: one ``Detections`` per ``uint8 (3, H, W)`` RGB tensor on :attr:`device`."""
        if self.detector is None:
            raise ValueError("this Recognizer has no detector (detector=None): its inputs are face crops")
        with torch.inference_mode():
            return self.detector.detect(tensors)

    @staticmethod
    def align(tensors: list[torch.Tensor], detections: list[Any]) -> torch.Tensor:
        """Pipeline stage: faces aligned to FER2013's framing, float ``(sumK, 1, 48, 48)`` gray 0..1."""
        from lrfer.faces.align import align_faces

        with torch.inference_mode(), no_autocast():
            return align_faces(tensors, detections, out_size=HR_SIZE)

    def _faces_from_crops(self, arrays: list[np.ndarray], batch_size: int) -> list[list[Face]]:
        """``detector=None``: each image is one face, scored on its centred square; box = that square."""
        probs = self.classify(crops_to_gray(arrays, self.resolution), batch_size)
        return [[self._face(centre_square_box(arr), NO_LANDMARKS, 1.0, p)] for arr, p in zip(arrays, probs.tolist())]

    def _to_faces(self, detections: list[Any], probs: np.ndarray) -> list[list[Face]]:
        from lrfer.faces.detect import FIELDS, Detections

        # One device-to-host copy per field for the whole step, not three per image (each a GPU sync).
        every_face = Detections.cat(detections)
        boxes, scores, marks = (getattr(every_face, f).detach().cpu().double().numpy().tolist() for f in FIELDS)
        rows = probs.tolist()  # Python floats at once: per-element numpy scalars cost as much as the rest
        out: list[list[Face]] = []
        start = 0
        for det in detections:
            out.append([self._face(tuple(boxes[j]), tuple(map(tuple, marks[j])), scores[j], rows[j])
                        for j in range(start, start + len(det))])
            start += len(det)
        return out

    def _face(self, box: tuple[float, ...], landmarks: Any, score: float, p: list[float]) -> Face:
        probs = dict(zip(self.classes, p))
        label = self.classes[max(range(len(p)), key=p.__getitem__)]  # the first maximum, as np.argmax
        return Face(box, landmarks, score, box[2] - box[0], label, probs)  # type: ignore[arg-type]


def _reduce_for_another_process(rec: Recognizer) -> tuple[Any, ...]:
    """How ``multiprocessing`` sends a recognizer (pool arguments, queues). Its pickler moved every CPU
    tensor into shared memory, one file descriptor each: under forkserver a pool of workers failed
    with 'too many fds', and the parent kept hundreds open. A CPU recognizer travels as plain pickle
    bytes instead; a CUDA one as torch shares it."""
    if rec.device.type == "cpu":
        return pickle.loads, (pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL),)
    return rec.__reduce_ex__(pickle.DEFAULT_PROTOCOL)  # type: ignore[return-value]  # a tuple for every class


ForkingPickler.register(Recognizer, _reduce_for_another_process)
