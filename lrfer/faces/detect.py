"""Face detection: one result type (:class:`Detections`), one protocol (:class:`Detector`), one factory.

Every detector takes a list of ``(3, H, W)`` uint8 RGB tensors and returns one :class:`Detections`
per image, with ``K = 0`` tensors (never ``None``) when nothing is found. Coordinates are continuous
image pixel coordinates: pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``.

Backends (see :func:`make_detector`):

- ``"auto"`` (the default): :class:`CombinedDetector`, BlazeFace for every face it can see plus MTCNN
  for the faces too small for it;
- ``"blazeface"``: MediaPipe's full-range BlazeFace (:mod:`lrfer.faces.blazeface`), bundled weights,
  with O-Net's landmarks; robust to pose, fast, faces larger than about 1/25 of the photo's long side;
- ``"mtcnn"``: lrfer's own torch-only MTCNN (:mod:`lrfer.faces.mtcnn`), bundled weights; faces down
  to ``min_face`` (8 px at the least), but it misses profile and looking-down faces and finds more false faces;
- ``"haar"``: OpenCV's frontal-face Haar cascade (no landmarks: they are NaN); needs an OpenCV build
  that still has ``cv2.CascadeClassifier`` and its cascade files (OpenCV 4.x; not OpenCV 5);
- ``"facenet"``: ``facenet_pytorch.MTCNN`` if installed (``pip install --no-deps facenet-pytorch``: its 2.6 release pins torch<2.3);
- ``None``: no detector, the input is already a cropped face.
"""
from __future__ import annotations

import hashlib
import logging
import numbers
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np
import torch

from lrfer.constants import MIN_FACE_PX
from lrfer.overlap import stop_if_cancelled
from lrfer.shapes import to_device
from lrfer.zoo import ChecksumError

log = logging.getLogger(__name__)

DETECTORS = ("auto", "blazeface", "mtcnn", "haar", "facenet")
#: CombinedDetector: MTCNN searches faces smaller than this fraction of the photo's long side
#: (BlazeFace's 192 px input sees faces down to about 1/30; larger faces are its call) and adds one
#: narrower than SMALL_FACE_MERGE_FRACTION that scores at least SMALL_FACE_MIN_SCORE and covers less
#: than SMALL_FACE_MAX_OVERLAP of any BlazeFace face.
SMALL_FACE_FRACTION = 1 / 20
#: The width up to which the merge takes MTCNN's faces: twice its pyramid's limit, because O-Net's
#: refined box often comes out wider than the window that found it (a 76 px face from windows of at
#: most 70 px), and BlazeFace can miss such faces (scores 0.25-0.35 on faces of 1/17-1/21).
SMALL_FACE_MERGE_FRACTION = 2 * SMALL_FACE_FRACTION
SMALL_FACE_MIN_SCORE = 0.95
SMALL_FACE_MAX_OVERLAP = 0.5
NUM_LANDMARKS = 5
#: The tensors of a :class:`Detections`, in order.
FIELDS = ("boxes", "scores", "landmarks")
HAAR_CASCADE_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 5


@dataclass(frozen=True)
class Detections:
    """Faces found in one image.

    ``boxes`` (K, 4) float32 ``x1, y1, x2, y2``; ``scores`` (K,) float32; ``landmarks`` (K, 5, 2)
    float32 ``(x, y)`` of left eye, right eye, nose, left and right mouth corners, left and right as
    seen in the image (the "left eye" is the one with the smaller x: the subject's own right eye in
    an unmirrored photo), NaN when the detector gives none.

    >>> d = Detections.empty()
    >>> len(d), tuple(d.boxes.shape), tuple(d.landmarks.shape)
    (0, (0, 4), (0, 5, 2))
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor

    def __post_init__(self) -> None:
        k = self.boxes.shape[0] if self.boxes.dim() == 2 else -1
        if self.boxes.shape != (k, 4) or self.scores.shape != (k,) or self.landmarks.shape != (k, NUM_LANDMARKS, 2):
            raise ValueError(
                "Detections needs boxes (K, 4), scores (K,) and landmarks (K, 5, 2); got "
                f"{tuple(self.boxes.shape)}, {tuple(self.scores.shape)}, {tuple(self.landmarks.shape)}"
            )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    @property
    def has_landmarks(self) -> torch.Tensor:
        """(K,) bool: which faces have all five landmarks."""
        return torch.isfinite(self.landmarks).flatten(1).all(dim=1)

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> Detections:
        """No faces: K = 0 tensors on ``device``."""
        return cls.from_boxes(torch.zeros(0, 4), device=device)

    @classmethod
    def from_boxes(
        cls,
        boxes: torch.Tensor,
        scores: torch.Tensor | None = None,
        landmarks: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> Detections:
        """Build from boxes, with scores 1 and NaN landmarks unless given.

        >>> Detections.from_boxes(torch.tensor([[0., 0., 10., 10.]])).scores
        tensor([1.])
        """
        device = boxes.device if device is None else torch.device(device)
        boxes = boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
        k = boxes.shape[0]
        scores = torch.ones(k) if scores is None else scores
        landmarks = torch.full((k, NUM_LANDMARKS, 2), float("nan")) if landmarks is None else landmarks
        return cls(boxes, scores.to(device=device, dtype=torch.float32), landmarks.to(device=device, dtype=torch.float32))

    @classmethod
    def cat(cls, parts: Sequence[Detections]) -> Detections:
        """The faces of ``parts`` (on one device) one after another.

        >>> len(Detections.cat([Detections.from_boxes(torch.zeros(2, 4)), Detections.empty()]))
        2
        """
        return cls(*(torch.cat([getattr(d, field) for d in parts]) for field in FIELDS))

    def select(self, index: torch.Tensor) -> Detections:
        """The faces picked by ``index`` (a boolean mask or indices), in its order."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    def to(self, device: torch.device | str) -> Detections:
        """The same detections on another device (``self`` if already there)."""
        if self.device == torch.device(device):
            return self
        return Detections(self.boxes.to(device), self.scores.to(device), self.landmarks.to(device))


def split_by_image(faces: Detections, image: torch.Tensor, count: int) -> list[Detections]:
    """Faces of a batch (``image`` (K,) gives each one's image) -> one :class:`Detections` per image,
    each in the batch's order; one sort and one host sync whatever the number of images.

    >>> faces = Detections.from_boxes(torch.tensor([[0., 0., 1., 1.], [2., 2., 3., 3.], [4., 4., 5., 5.]]))
    >>> [d.boxes[:, 0].tolist() for d in split_by_image(faces, torch.tensor([1, 0, 1]), 3)]
    [[2.0], [0.0, 4.0], []]
    """
    ordered = faces.select(torch.argsort(image, stable=True))
    sizes = torch.bincount(image, minlength=count).tolist() if image.numel() else [0] * count
    return [Detections(*parts) for parts in zip(*(getattr(ordered, field).split(sizes) for field in FIELDS))]


def read_bundled_weights(path: Path, sha256: str, what: str, script: str) -> dict[str, torch.Tensor]:
    """Load a bundled safetensors file after checking its sha256 (always on; a mismatch is a
    :class:`~lrfer.zoo.ChecksumError`, as for the expression models' weights)."""
    from safetensors.torch import load as load_safetensors

    if not path.is_file():
        raise FileNotFoundError(f"{what} weights {path} are missing; reinstall lrfer, or regenerate them with {script}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ChecksumError(
            f"sha256 of {path} is {digest}, expected {sha256}: the file is corrupt or was replaced; "
            "reinstall lrfer (pip install --force-reinstall lrfer)"
        )
    return load_safetensors(data)


#: Whether the detectors' convolutions may use TF32 on CUDA (cuDNN's default). Off: full float32,
#: as on the CPU. With TF32, MTCNN's boxes and landmarks moved enough on an H200 to change a
#: borderline face's probabilities by 3e-2 against the CPU (the GPU tests allow 1e-2).
DETECTOR_TF32 = False


_tf32_lock = threading.Lock()
_tf32_users = 0
_tf32_before: object = None


@contextmanager
def no_autocast() -> Iterator[None]:
    """A caller's ``torch.autocast`` switched off: lrfer's stages run in the precision they were made for
    (the expression model's own autocast, with ``precision``, is entered inside)."""
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        yield


@contextmanager
def detection_mode() -> Iterator[None]:
    """Inference mode without autocast, with cuDNN convolutions in full float32 unless
    :data:`DETECTOR_TF32`; the caller's TF32 setting is restored when the last concurrent
    detection (any thread) exits."""
    global _tf32_users, _tf32_before
    conv = getattr(torch.backends.cudnn, "conv", None)
    value: str | bool
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        owner, setting, value = conv, "fp32_precision", "tf32" if DETECTOR_TF32 else "ieee"
    else:
        owner, setting, value = torch.backends.cudnn, "allow_tf32", DETECTOR_TF32
    with _tf32_lock:
        if _tf32_users == 0:
            _tf32_before = getattr(owner, setting)
            setattr(owner, setting, value)
        _tf32_users += 1
    try:
        with torch.inference_mode(), no_autocast():
            yield
    finally:
        with _tf32_lock:
            _tf32_users -= 1
            if _tf32_users == 0:
                setattr(owner, setting, _tf32_before)


class NetworkDetector(torch.nn.Module):
    """Base of lrfer's torch detectors: always in eval mode, ``device`` is where the weights are."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> NetworkDetector:
        """The detector always stays in eval mode."""
        return super().train(False)


@runtime_checkable
class Detector(Protocol):
    """Anything with a ``device`` and ``detect(images) -> list[Detections]``."""

    @property
    def device(self) -> torch.device:
        """Where the detector computes (a plain attribute or a read-only property)."""
        ...

    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """One :class:`Detections` per ``(3, H, W)`` uint8 RGB image."""
        ...


def check_images(images: list[torch.Tensor], device: torch.device | None = None) -> list[torch.Tensor]:
    """Validate a list of ``(3, H, W)`` uint8 RGB tensors; move them to ``device`` if given.

    >>> len(check_images([torch.zeros(3, 8, 8, dtype=torch.uint8)]))
    1
    """
    if isinstance(images, torch.Tensor) or not isinstance(images, (list, tuple)):
        raise ValueError("images must be a list of (3, H, W) uint8 RGB tensors (wrap a single image in a list)")
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise ValueError(f"images[{i}] is a {type(img).__name__}; convert it with torch.from_numpy(rgb).permute(2, 0, 1)")
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}] has shape {tuple(img.shape)}; expected (3, H, W) RGB")
        if img.shape[1] == 0 or img.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty: shape {tuple(img.shape)}")
        if img.dtype != torch.uint8:
            raise ValueError(f"images[{i}] has dtype {img.dtype}; expected torch.uint8 (0..255)")
        out.append(img if device is None or img.device == device else img.to(device))
    return out


def detector_name(detector: object | None) -> str | None:
    """The :func:`make_detector` name of a detector (``None`` for no detector), else its class name."""
    if detector is None:
        return None
    return getattr(detector, "name", type(detector).__name__)


def _cascades_loaded_here() -> threading.local:
    """Per-thread Haar classifiers, the calling thread's loaded now: an OpenCV without cascades fails at
    load (or unpickling), not at the first photo."""
    cascades = threading.local()
    cascades.cascade = _load_haar_cascade()
    return cascades


class HaarDetector:
    """OpenCV's frontal-face Haar cascade; boxes only (landmarks NaN, scores 1)."""

    name = "haar"

    def __init__(self, device: torch.device | str = "cpu", min_face: int = 20) -> None:
        self.device = torch.device(device)
        self.min_face = int(min_face)
        self._cascades = _cascades_loaded_here()

    def _this_threads_cascade(self) -> Any:  # cv2.CascadeClassifier
        """The calling thread's classifier. OpenCV's ``detectMultiScale`` keeps the image it searches in
        the classifier (its feature evaluator): one classifier searched by several threads at once mixed
        their images up (other faces than alone, or ``cv2.error: vector::_M_range_check``)."""
        cascade = getattr(self._cascades, "cascade", None)
        if cascade is None:
            cascade = self._cascades.cascade = _load_haar_cascade()
        return cascade

    def __getstate__(self) -> dict[str, Any]:
        # cv2.CascadeClassifier does not pickle: each process (and thread) loads its own.
        return {k: v for k, v in self.__dict__.items() if k != "_cascades"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cascades = _cascades_loaded_here()

    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """Run the cascade on each image (on the CPU, in OpenCV; each thread with its own classifier)."""
        import cv2

        cascade = self._this_threads_cascade()
        results = []
        for img in check_images(images):
            stop_if_cancelled()
            rgb = np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy())
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            found = cascade.detectMultiScale(
                gray, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(self.min_face, self.min_face)
            )
            xywh = torch.as_tensor(np.asarray(found, dtype=np.float32).reshape(-1, 4))
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
            results.append(Detections.from_boxes(boxes, device=self.device))
        return results


def _load_haar_cascade() -> Any:  # a cv2.CascadeClassifier (absent from OpenCV 5)
    import cv2

    fix = "use detector='mtcnn' (bundled), or install an OpenCV 4.x build: pip install 'opencv-python-headless<5'"
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no cv2.CascadeClassifier (removed in OpenCV 5); {fix}")
    data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(data_dir or "") / HAAR_CASCADE_FILE
    if not data_dir or not path.is_file():
        raise RuntimeError(f"OpenCV {cv2.__version__} ships no {HAAR_CASCADE_FILE} (looked in {data_dir!r}); {fix}")
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load {path}; {fix}")
    return cascade


class FacenetDetector:
    """``facenet_pytorch.MTCNN`` (optional dependency) behind the :class:`Detector` interface."""

    name = "facenet"

    def __init__(self, device: torch.device | str = "cpu", min_face: int = 20) -> None:
        try:
            from facenet_pytorch import MTCNN as FacenetMTCNN
        except ImportError as err:
            raise ImportError(
                "detector='facenet' needs facenet-pytorch: pip install --no-deps facenet-pytorch (its 2.6 release pins torch<2.3; --no-deps keeps your torch; it also needs a torchvision matching your torch) "
                "(or use detector='mtcnn', lrfer's own port with the same weights)"
            ) from err
        self.device = torch.device(device)
        self._mtcnn = FacenetMTCNN(min_face_size=min_face, keep_all=True, device=self.device)

    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """Run facenet-pytorch's MTCNN image by image (it needs equal sizes to batch)."""
        results = []
        for img in check_images(images, self.device):
            stop_if_cancelled()
            boxes, probs, points = self._mtcnn.detect(img.permute(1, 2, 0), landmarks=True)
            if boxes is None:
                results.append(Detections.empty(self.device))
                continue
            boxes, probs, points = (_float_tensor(v) for v in (boxes, probs, points))
            found = Detections.from_boxes(boxes, probs, points.reshape(-1, NUM_LANDMARKS, 2), device=self.device)
            results.append(found.select(has_area(found.boxes)))
        return results


def has_area(boxes: torch.Tensor) -> torch.Tensor:
    """(K,) bool: which ``x1, y1, x2, y2`` boxes have a positive width and height. A box turned inside
    out (by a regression past its opposite side) is not a face, and annotate refuses it; NaN is dropped too.

    >>> has_area(torch.tensor([[0., 0., 4., 4.], [4., 0., 2., 4.], [0., 3., 4., 3.]])).tolist()
    [True, False, False]
    """
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _float_tensor(values: Any) -> torch.Tensor:
    """facenet-pytorch returns float or object numpy arrays depending on the input; normalise them."""
    return torch.tensor(np.asarray(values).tolist(), dtype=torch.float32)


class CombinedDetector:
    """BlazeFace for the faces it can see, MTCNN for the smaller ones: pose-robust, searching down to ``min_face``.

    BlazeFace (full range) looks at the whole photo through a 192 px input, so it finds profile and
    looking-down faces that MTCNN misses, with fewer false faces, but nothing smaller than about 1/30
    of the photo's long side. MTCNN searches only faces smaller than :data:`SMALL_FACE_FRACTION` of the
    long side (its pyramid stops there) and adds those it is confident about that BlazeFace did not find;
    ``small_faces=False`` skips that pass (detector ``"blazeface"``: several times faster on large
    photos, for faces larger than about 1/25 of the long side). BlazeFace's faces get their five landmarks from MTCNN's O-Net: BlazeFace's own keypoints are
    coarser (10-50 px off MTCNN's on 200 px faces, against 1-10 px for O-Net on BlazeFace's boxes),
    and the alignment template was measured with MTCNN's landmarks.
    """

    def __init__(
        self, device: torch.device | str = "cpu", min_face: int = 20, small_faces: bool = True, pnet_precision: str = "fp32",
        close_ups: bool = True,
    ) -> None:
        from lrfer.faces.blazeface import BlazeFace
        from lrfer.faces.mtcnn import MTCNN

        self.device = torch.device(device)
        self.small_faces = bool(small_faces)
        self.name = "auto" if self.small_faces else "blazeface"
        self.blazeface = BlazeFace(min_face=min_face, device=self.device, close_ups=close_ups)
        self.mtcnn = MTCNN(min_face=min_face, device=self.device, max_face_fraction=SMALL_FACE_FRACTION,
                          pnet_precision=pnet_precision)

    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """One :class:`Detections` per ``(3, H, W)`` uint8 RGB image: BlazeFace's faces, then MTCNN's additions."""
        from lrfer.faces.align import cpu_image_groups

        images = check_images(images, self.device)
        return [d for group in cpu_image_groups(images) for d in self._detect_group(group)]

    def _detect_group(self, images: list[torch.Tensor]) -> list[Detections]:
        from lrfer.faces.mtcnn import MipVolume

        stop_if_cancelled()
        volume = MipVolume(images)  # one stacked copy of the images for BlazeFace, P-Net and both O-Net passes
        large = self.mtcnn.place_landmarks(images, self.blazeface.detect(images, volume), volume)
        if not self.small_faces:
            return large
        small = self.mtcnn.detect(images, volume)
        return merge_small_faces_per_image(large, small, [max(img.shape[-2:]) for img in images])


def merge_small_faces(large: Detections, small: Detections, long_side: int) -> Detections:
    """``large`` plus the faces of ``small`` that are small, confident and not already in ``large``.

    >>> big = Detections.from_boxes(torch.tensor([[0., 0., 100., 100.]]))
    >>> little = Detections.from_boxes(torch.tensor([[10., 10., 30., 30.], [500., 500., 520., 520.]]))
    >>> merge_small_faces(big, little, 1000).boxes.tolist()
    [[0.0, 0.0, 100.0, 100.0], [500.0, 500.0, 520.0, 520.0]]
    """
    return merge_small_faces_per_image([large], [small], [long_side])[0]


def merge_small_faces_per_image(large: list[Detections], small: list[Detections], long_sides: list[int]) -> list[Detections]:
    """:func:`merge_small_faces` for each image, all images at once: each image's ``large`` faces,
    then its ``small`` faces that are kept, in their order."""
    from lrfer.faces.mtcnn import pairwise_overlap

    big, big_image = concat_per_image(large)
    little, little_image = concat_per_image(small)
    limit = SMALL_FACE_MERGE_FRACTION * to_device(long_sides, little.boxes.device, little.boxes.dtype)
    width = little.boxes[:, 2] - little.boxes[:, 0]
    keep = (width < limit[little_image]) & (little.scores >= SMALL_FACE_MIN_SCORE)
    covered = pairwise_overlap(big.boxes, little.boxes, mode="min") >= SMALL_FACE_MAX_OVERLAP
    keep &= ~(covered & (big_image[:, None] == little_image[None, :])).any(dim=0)
    merged = Detections.cat([big, little.select(keep)])
    return split_by_image(merged, torch.cat([big_image, little_image[keep]]), len(large))


def concat_per_image(detections: list[Detections]) -> tuple[Detections, torch.Tensor]:
    """All images' faces in one :class:`Detections` (image by image) and each face's image index; the
    detections must be on one device."""
    device = detections[0].device
    counts = [len(d) for d in detections]
    faces = Detections.cat(detections)
    image = torch.repeat_interleave(torch.arange(len(counts), device=device), to_device(counts, device),
                                    output_size=sum(counts))
    return faces, image


def check_min_face(min_face: object) -> None:
    """ValueError unless ``min_face`` is a whole number of pixels >= :data:`MIN_FACE_PX`, for every detector alike."""
    # typeshed's numbers.Real declares no __ge__, though every real number has one
    if isinstance(min_face, bool) or not isinstance(min_face, numbers.Real) or not min_face >= MIN_FACE_PX:  # type: ignore[operator]
        raise ValueError(f"min_face must be a number of pixels >= {MIN_FACE_PX} (the zoo's smallest faces); "
                         f"got {min_face!r}")
    # 20.5 was taken, and read as 20 by the Haar cascade (its minSize is whole pixels) and as 20.5 by the others,
    # while `lrfer predict --min-face 20.5` was refused; a whole float (20.0) is the number it names
    if not isinstance(min_face, numbers.Integral) and not float(min_face).is_integer():
        raise ValueError(f"min_face must be a whole number of pixels, as `lrfer predict --min-face` takes; "
                         f"got {min_face!r}")


@overload
def make_detector(
    name: str, device: torch.device | str = "cpu", min_face: int = 20, pnet_precision: str = "fp32",
    close_ups: bool = True,
) -> Detector: ...
@overload
def make_detector(
    name: None, device: torch.device | str = "cpu", min_face: int = 20, pnet_precision: str = "fp32",
    close_ups: bool = True,
) -> None: ...
@overload
def make_detector(
    name: str | None, device: torch.device | str = "cpu", min_face: int = 20, pnet_precision: str = "fp32",
    close_ups: bool = True,
) -> Detector | None: ...
def make_detector(
    name: str | None, device: torch.device | str = "cpu", min_face: int = 20, pnet_precision: str = "fp32",
    close_ups: bool = True,
) -> Detector | None:
    """Build a face detector by name: ``"auto"``, ``"blazeface"``, ``"mtcnn"``, ``"haar"``, ``"facenet"``,
    or ``None`` (pre-cropped input). ``pnet_precision`` (``"fp32"`` or ``"bf16"``): MTCNN's P-Net
    dtype in ``"auto"`` and ``"mtcnn"`` (see :class:`~lrfer.faces.mtcnn.MTCNN`). ``close_ups``:
    BlazeFace's zoomed-out second look at photos without a face (``"auto"``, ``"blazeface"``).

    >>> det = make_detector("mtcnn", "cpu", min_face=20)
    >>> det.detect([torch.zeros(3, 64, 64, dtype=torch.uint8)])[0].boxes.shape
    torch.Size([0, 4])
    """
    if name is None:
        return None
    if not isinstance(name, str) or name.lower() not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; use one of {DETECTORS} or None (faces already cropped)")
    check_min_face(min_face)
    name = name.lower()
    if name == "auto":
        return CombinedDetector(device=device, min_face=min_face, pnet_precision=pnet_precision, close_ups=close_ups)
    if name == "blazeface":
        return CombinedDetector(device=device, min_face=min_face, small_faces=False, close_ups=close_ups)
    if name == "mtcnn":
        from lrfer.faces.mtcnn import MTCNN

        return MTCNN(min_face=min_face, device=device, pnet_precision=pnet_precision)
    if name == "haar":
        return HaarDetector(device=device, min_face=min_face)
    return FacenetDetector(device=device, min_face=min_face)
