"""Video files: frames decoded one at a time (memory stays flat however long the video), read ahead
of the consumer in a thread (OpenCV decodes without the GIL, so decoding overlaps detection), and
annotated copies written back as video.

Frame times are ``index / fps`` from the container's frame rate: exact for constant-frame-rate
video, approximate for variable-rate recordings.

>>> is_video_file("clip.MP4"), is_video_file("photo.jpg")
(True, False)
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import queue
import reprlib
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

#: Suffixes read as videos (lower case), by :func:`is_video_file` and ``lrfer predict``.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
#: Codec of annotated videos (MPEG-4 Part 2: every OpenCV FFmpeg build can write it).
ANNOTATED_FOURCC = "mp4v"

T = TypeVar("T")
logger = logging.getLogger(__name__)
#: Set on the log record of a video that ended before its announced frames (``lrfer predict`` counts them).
ENDED_EARLY = "lrfer_video_ended_early"


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video suffix (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def iter_video_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """The video files among ``paths`` and in their folders (recursively, sorted), as ``(path,
    relative_name)`` pairs like :func:`~lrfer.io.iter_image_files` (``relative_name``: the path
    inside its folder argument, the file name for file arguments), each file once as there.

    >>> iter_video_files(["examples"])
    []
    """
    from lrfer.io import first_of_each, walk_files  # lrfer.io imports this module

    found: list[tuple[Path, Path]] = []
    paths = list(paths)
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for raw_rel in walk_files(os.fsencode(p), VIDEO_EXTENSIONS):  # broken links too: reported when opened
                rel = Path(os.fsdecode(raw_rel))
                found.append((p / rel, rel))
        elif p.is_file() and is_video_file(p):
            found.append((p, Path(p.name)))
    if len(paths) > 1:
        found = [found[i] for i in first_of_each([os.fsencode(path) for path, _ in found])]
    return found


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames per second, number of frames (0 if unknown), frame size."""

    fps: float
    frame_count: int
    width: int
    height: int


def open_video(path: str | os.PathLike[str]) -> Any:  # -> cv2.VideoCapture
    """An opened ``cv2.VideoCapture``; ValueError naming the file when it is missing, a folder, empty or
    unreadable, or when it is an image (by its content, whatever its suffix: OpenCV opens a photo as a
    video of one frame): a still image, or a corrupt or truncated one."""
    import cv2

    p = checked_video_path(path)
    text = opencv_path(p, "read video")
    try:  # OpenCV says neither why (permissions) nor quietly: it tries the file as an image sequence too
        with open(p, "rb") as fh:
            empty = not fh.read(1)
    except OSError as err:
        raise ValueError(f"cannot read video {str(p)!r}: {err.strerror or err}") from None
    if empty:
        raise ValueError(f"cannot read video: empty file {str(p)!r}")
    capture = cv2.VideoCapture(text)
    # an image's signature (haveImageReader reads only that): a photo (which FFmpeg opens as 1 frame), a
    # corrupt or truncated image (which it may open too), or JPEGs one after another (MJPEG: a video)
    image = cv2.haveImageReader(text)
    if capture.isOpened() and not image:
        return capture
    video = capture.isOpened() and capture.grab() and capture.grab()
    capture.release()
    if video:
        return cv2.VideoCapture(text)  # from its first frame again
    if image:
        raise ValueError(image_message(p))
    raise ValueError(f"cannot read video: {str(p)!r} is not a video OpenCV can decode (corrupt or unsupported format)")


def checked_video_path(path: Any) -> Path:
    """``path`` as a Path to an existing file; ValueError saying what it is otherwise (not a path, bytes,
    a URL, a folder, missing, a broken link)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        raise ValueError(f"cannot read video: {short_repr(path)} is bytes; predict_video reads video files: pass the "
                         "file's path as a str or a pathlib.Path (os.fsdecode(name) for a name given as bytes)")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"cannot read video: {short_repr(path)} is not a file path; predict_video reads video files (for a "
                         "webcam or a stream, read frames with cv2.VideoCapture and pass lists of RGB frames to predict)")
    p = Path(path)
    if p.is_file():
        return p
    if isinstance(path, str) and "://" in path:  # Path("rtsp://h/s") is 'rtsp:/h/s'
        raise ValueError(f"cannot read video: {path!r} is a URL; predict_video reads video files (for a "
                         "stream, read frames with cv2.VideoCapture and pass lists of RGB frames to predict)")
    if p.is_dir():
        raise ValueError(f"cannot read video: {str(p)!r} is a folder, not a video file (`lrfer predict` scores "
                         "the videos in a folder)")
    what = "a broken symbolic link" if p.is_symlink() else "no such file"
    raise ValueError(f"cannot read video: {what} {str(p)!r}")


def image_message(path: Path) -> str:
    """The error for an image given as a video: :func:`still_image_message` when lrfer reads it as an
    image, else that it is a corrupt or unreadable image (its signature alone is an image's)."""
    from lrfer.io import decode_image_file  # lrfer.io imports this module

    try:
        decode_image_file(path)
    except ValueError as err:
        return f"cannot read video: {str(path)!r} is a corrupt or unreadable image file, not a video ({err})"
    return still_image_message(path)


def still_image_message(path: Path) -> str:
    """The error for a still image given as a video, with what scores it.

    >>> still_image_message(Path("a.png"))
    "cannot read video: 'a.png' is a still image, not a video; score it with Recognizer.predict(path) or `lrfer predict`"
    """
    if is_video_file(path):  # predict and `lrfer predict` take a file with a video suffix for a video
        how = ("rename it with its image suffix (.jpg, .png) and score it with Recognizer.predict(path) or "
               "`lrfer predict`, or pass its pixels to Recognizer.predict")
    else:
        how = "score it with Recognizer.predict(path) or `lrfer predict`"
    return f"cannot read video: {str(path)!r} is a still image, not a video; {how}"


def short_repr(obj: Any) -> str:
    """``repr`` cut short for an error message: an array's or a tensor's repr was thousands of lines.

    >>> short_repr(0), short_repr(np.zeros((320, 480, 3), np.uint8))
    ('0', 'numpy.ndarray of shape (320, 480, 3) and dtype uint8')
    """
    from lrfer.io import describe  # lrfer.io imports this module

    return describe(obj) if hasattr(obj, "shape") else reprlib.repr(obj)


def opencv_path(path: Path, action: str) -> str:
    """``str(path)`` for OpenCV's video functions, which crash the process (a segmentation fault) on a
    name that is not valid UTF-8 (os.fsdecode's surrogates): a ValueError naming the file instead."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"cannot {action}: the name of {text.encode('utf-8', 'backslashreplace').decode()!r} "
                         "is not valid UTF-8, which OpenCV's video functions cannot open; rename it") from None
    return text


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """:class:`VideoInfo` of a video file (ValueError if it cannot be opened)."""
    capture = open_video(path)
    try:
        return capture_info(capture)
    finally:
        capture.release()


def capture_info(capture: Any) -> VideoInfo:
    """:class:`VideoInfo` of an opened ``cv2.VideoCapture``."""
    import cv2

    return VideoInfo(
        fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )


def check_every(every: int) -> int:
    """``every`` as a frame step (an int >= 1; a NumPy integer too, as ``batch_size`` and ``streams``
    take), else ValueError.

    >>> check_every(np.int64(5))
    5
    """
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"every must be an int >= 1 (1 = every frame, 5 = every fifth frame); got {every!r}")
    return int(every)


def read_frames(path: str | os.PathLike[str], every: int = 1,
                on_info: Callable[[VideoInfo], object] | None = None) -> Generator[tuple[int, float, np.ndarray], None, None]:
    """``(frame index, time in seconds, RGB uint8 (H, W, 3))`` for every ``every``-th frame from the
    first, decoded one by one. Skipped frames are only grabbed (no colour conversion). ValueError
    when the file cannot be opened or yields no frame at all. ``on_info``: called with the file's
    :class:`VideoInfo` once it is opened, before the first frame (so the file is not opened a second
    time for its header).
    """
    import cv2

    every = check_every(every)
    capture = open_video(path)
    index = 0
    try:
        info = capture_info(capture)
        fps, announced = info.fps, info.frame_count
        if on_info is not None:
            on_info(info)
        while True:
            if index % every:
                if not capture.grab():
                    break
            else:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                yield index, index / fps if fps > 0 else math.nan, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError(f"cannot read video: no frame of {str(path)!r} could be decoded")
    if ended_early(index, announced):
        logger.warning("%s: decoded %d of the %d frames its header announces; the file is truncated or damaged, "
                       "so the results stop at frame %d", path, index, announced, index - 1,
                       extra={ENDED_EARLY: True})


def ended_early(decoded: int, announced: int) -> bool:
    """Whether a video decoded clearly fewer frames than its header announced (a truncated or damaged
    file). Some containers estimate the count from the duration, so 1 % of it (at least a frame) may
    be missing without a warning."""
    return announced > 0 and decoded + max(1, announced // 100) < announced


def prepend(first: T, rest: Generator[T, None, None]) -> Generator[T, None, None]:
    """``first``, then the items of ``rest``; closing this generator closes ``rest`` (a video's reader
    releases its file), even before ``rest`` was reached.

    >>> list(prepend(0, (i for i in (1, 2))))
    [0, 1, 2]
    """
    try:
        yield first
        yield from rest
    finally:
        rest.close()


def read_ahead(items: Iterable[T], depth: int) -> Generator[T, None, None]:
    """``items``, produced by a background thread at most ``depth`` items ahead of the consumer.

    An exception in the producer is raised in the consumer, at the point it happened. Closing the
    returned generator (or dropping it) stops the producer and closes ``items``.
    """
    done = object()
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            put((done, err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="lrfer-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


#: The frame rates MPEG-4 (mp4v) encodes: its time base has 16 bits, so above about 65 fps only whole
#: rates, and none below about 1/600 fps (FFmpeg refuses e.g. 1000/3 or 0.001 fps).
MIN_WRITTEN_FPS, MAX_FRACTIONAL_FPS = 0.01, 65.0


def writable_fps(fps: float) -> float:
    """The frame rate an annotated video is written at for a wanted ``fps`` (the input's over
    ``--every``): unknown (0, NaN) as 25, otherwise the nearest rate the mp4v writer accepts.

    >>> [writable_fps(f) for f in (0.0, float("nan"), 0.0001, 2.5, 1000 / 3)]
    [25.0, 25.0, 0.01, 2.5, 333.0]
    """
    if not fps > 0:
        return 25.0
    fps = max(fps, MIN_WRITTEN_FPS)
    return float(round(fps)) if fps >= MAX_FRACTIONAL_FPS else round(fps, 3)


class AnnotatedVideoWriter:
    """Writes RGB frames with their faces drawn (:func:`~lrfer.annotate.annotate`) to a video file;
    the frame size is taken from the first frame. Use as a context manager. ValueError at once (no
    folder made) for a name OpenCV cannot write (:func:`opencv_path`)."""

    def __init__(self, path: str | os.PathLike[str], fps: float) -> None:
        self.path = Path(path)
        self._name = opencv_path(self.path, "write video")
        self.fps = writable_fps(fps)
        self._writer: Any = None

    def write(self, image: np.ndarray, faces: Sequence[Any]) -> None:
        import cv2

        from lrfer.annotate import annotate

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(self._name, cv2.VideoWriter.fourcc(*ANNOTATED_FOURCC), self.fps, (width, height))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write the video {str(self.path)!r} ({ANNOTATED_FOURCC} codec)")
        self._writer.write(cv2.cvtColor(annotate(image, faces), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
