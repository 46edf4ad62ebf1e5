"""Result type: one :class:`Face` per detected face, plus flat rows for CSV/JSONL/pandas."""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd  # optional: without pandas (or its stubs) type checkers read Any

Box = tuple[float, float, float, float]
Landmarks = tuple[tuple[float, float], ...]
#: The ``files`` of :func:`faces_to_rows`: a name or path per image, or one for one image.
FileNames = Union[Sequence[Union[str, os.PathLike[str]]], str, os.PathLike[str], None]

#: Columns of a flat row before the per-class probability columns (CSV/JSONL/pandas).
ROW_PREFIX: tuple[str, ...] = ("file", "face", "x1", "y1", "x2", "y2", "face_px", "det_score", "label")
#: Columns a row of a video frame adds after ``file``: the frame index (from 0) and its time in seconds.
VIDEO_COLUMNS: tuple[str, ...] = ("frame", "time_s")
#: The one NaN of results and the landmarks of a face without any. NaN equals nothing, not even
#: itself, but Python compares tuple items by identity first: results holding these very objects
#: compare (and hash) equal, also after a pickle or a copy, which rebuilds them through __init__.
NAN = float("nan")
NO_LANDMARKS: Landmarks = tuple((NAN, NAN) for _ in range(5))


def _shared_nan(value: float) -> float:
    return NAN if isinstance(value, float) and math.isnan(value) else value


def _field_values(result: Any) -> tuple[Any, ...]:
    return tuple(getattr(result, f.name) for f in dataclasses.fields(result))


def _rebuilt(result: Any) -> tuple[Any, ...]:
    """``__reduce__`` of a result: rebuilt through ``__init__`` from every field (a subclass's too)."""
    return type(result), _field_values(result)


def _same_fields(result: Any, other: Any) -> Any:
    """``__eq__`` of a result: its fields compared as one tuple (identity first, so the shared NaN
    equals itself), as dataclasses compared before Python 3.13, which compares field by field."""
    if other.__class__ is not result.__class__:
        return NotImplemented
    return _field_values(result) == _field_values(other)


@dataclass(frozen=True)
class Face:
    """One face found in an image and its expression.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in image pixels (not clipped: a face cut by the image's edge has
            a box reaching past it).
        landmarks: five ``(x, y)`` points (left eye, right eye, nose, mouth left, mouth right);
            NaN when the detector gives none (Haar, ``detector=None``).
        det_score: detector confidence (1.0 when the image itself is the face).
        face_px: face width in pixels (``x2 - x1``): how low-resolution the face is.
        label: the most probable class.
        probs: ``{class: probability}`` in the model's class order (calibrated, sums to 1).

    >>> f = Face((0, 0, 10, 10), ((math.nan, math.nan),) * 5, 1.0, 10.0, "happy", {"happy": 1.0})
    >>> f.to_dict()["label"], f.score
    ('happy', 1.0)
    """

    box: Box
    landmarks: Landmarks
    det_score: float
    face_px: float
    label: str
    probs: dict[str, float] = field(hash=False)

    def __post_init__(self) -> None:
        if any(math.isnan(v) for point in self.landmarks for v in point):
            object.__setattr__(self, "landmarks", tuple(tuple(_shared_nan(v) for v in point) for point in self.landmarks))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self)

    @property
    def score(self) -> float:
        """Probability of :attr:`label`."""
        return self.probs[self.label]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists instead of tuples, NaN landmarks as ``None``)."""
        return {
            "box": [float(v) for v in self.box],
            "landmarks": [[_nan_to_none(x), _nan_to_none(y)] for x, y in self.landmarks],
            "det_score": float(self.det_score),
            "face_px": float(self.face_px),
            "label": self.label,
            "probs": {k: float(v) for k, v in self.probs.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Face:
        """The face :meth:`to_dict` gave ``data`` for, also after a JSON round trip (lists back to
        tuples, ``None`` landmarks back to NaN): equal to it, and hashable as it is.

        >>> f = Face((0.0, 0.0, 8.0, 8.0), NO_LANDMARKS, 1.0, 8.0, "sad", {"sad": 1.0})
        >>> import json; Face.from_dict(json.loads(json.dumps(f.to_dict()))) == f
        True
        """
        _check_dict(data, FACE_DICT_KEYS, "Face")
        if len(data["box"]) != 4:
            raise ValueError(f"Face.from_dict: 'box' must be four numbers (x1, y1, x2, y2); got {data['box']!r}")
        return cls(tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]  # four numbers
                   tuple((_none_to_nan(x), _none_to_nan(y)) for x, y in data["landmarks"]),
                   float(data["det_score"]), float(data["face_px"]), str(data["label"]),
                   {str(k): float(v) for k, v in data["probs"].items()})

    def to_row(self, file: str | os.PathLike[str] = "", index: int = 0) -> dict[str, Any]:
        """Flat row: file (a path as its ``str``), face index, box, face_px, det_score, label, one
        column per class.

        >>> Face((0, 1, 2, 3), (), 0.9, 2.0, "sad", {"sad": 1.0}).to_row("a.jpg")["y2"]
        3.0
        """
        x1, y1, x2, y2 = (float(v) for v in self.box)
        row: dict[str, Any] = {
            "file": file_name(file), "face": index, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "face_px": float(self.face_px), "det_score": float(self.det_score), "label": self.label,
        }
        row.update({k: float(v) for k, v in self.probs.items()})
        return row

    def to_pandas(self) -> pd.DataFrame:
        """This face as a one-row ``pandas.DataFrame`` (needs ``pip install pandas``)."""
        return faces_to_pandas([self])


def file_name(file: Any) -> Any:
    """A row's ``file``: a path as its ``str`` (a ``Path`` in a row was no JSON, and an object column in
    pandas), anything else as given.

    >>> from pathlib import Path; file_name(Path("photos/a.jpg")), file_name("b.jpg")
    ('photos/a.jpg', 'b.jpg')
    """
    return os.fspath(file) if isinstance(file, os.PathLike) else file


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


#: The keys of :meth:`Face.to_dict` and :meth:`VideoFrame.to_dict`, which their ``from_dict`` read back.
FACE_DICT_KEYS: tuple[str, ...] = ("box", "landmarks", "det_score", "face_px", "label", "probs")
FRAME_DICT_KEYS: tuple[str, ...] = ("index", "time_s", "faces")


def _check_dict(data: Any, keys: Sequence[str], kind: str) -> None:
    """TypeError for a ``from_dict`` argument that is no mapping (a JSON line not yet parsed), ValueError
    naming the keys it lacks, such as a flat row's (:meth:`Face.to_row`, ``lrfer predict``'s CSV and
    JSONL), which has no landmarks and keeps the box and the probabilities in columns of their own."""
    if not isinstance(data, Mapping):
        parse = " (parse a JSON line with json.loads first)" if isinstance(data, (str, bytes)) else ""
        raise TypeError(f"{kind}.from_dict takes the dict {kind}.to_dict gives; got {type(data).__name__}{parse}")
    missing = [k for k in keys if k not in data]
    if not missing:
        return
    flat = {"x1", "y1", "x2", "y2"} <= set(data)
    row = (" (a flat row, as Face.to_row and lrfer predict's CSV and JSONL write, is not to_dict's form: it has "
           "no landmarks, and its box and probabilities are columns of their own)") if flat else ""
    raise ValueError(f"{kind}.from_dict: missing key(s) {missing} of {kind}.to_dict's {list(keys)}{row}")


def _none_to_nan(v: float | None) -> float:
    return NAN if v is None else float(v)


def row_columns(classes: Sequence[str], video: bool = False) -> list[str]:
    """Column names of :meth:`Face.to_row` for a model with these ``classes`` (of
    :meth:`VideoFrame.to_rows` with ``video=True``: ``frame`` and ``time_s`` after ``file``).

    >>> row_columns(["happy"], video=True)[:4]
    ['file', 'frame', 'time_s', 'face']
    """
    return [ROW_PREFIX[0], *(VIDEO_COLUMNS if video else ()), *ROW_PREFIX[1:], *classes]


@dataclass(frozen=True)
class VideoFrame:
    """The faces found in one frame of a video (:meth:`~lrfer.recognizer.Recognizer.predict_video`).

    Attributes:
        index: frame number in the video, from 0.
        time_s: ``index / fps``, in seconds (NaN when the video gives no frame rate).
        faces: one :class:`Face` per face, as :meth:`~lrfer.recognizer.Recognizer.predict` gives for an image.

    >>> VideoFrame(5, 0.2, []).to_rows("clip.mp4")
    []
    """

    index: int
    time_s: float
    faces: list[Face] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_s", _shared_nan(self.time_s))

    def __eq__(self, other: object) -> bool:  # the dataclass's __hash__ is kept (frozen, eq)
        return _same_fields(self, other)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict: ``index``, ``time_s`` (``None`` if unknown), ``faces`` (:meth:`Face.to_dict` each)."""
        return {"index": self.index, "time_s": _nan_to_none(self.time_s), "faces": [face.to_dict() for face in self.faces]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoFrame:
        """The frame :meth:`to_dict` gave ``data`` for, also after a JSON round trip (:meth:`Face.from_dict`
        for its faces, ``None`` time as NaN): equal to it.

        >>> VideoFrame.from_dict({"index": 3, "time_s": None, "faces": []}) == VideoFrame(3, math.nan, [])
        True
        """
        _check_dict(data, FRAME_DICT_KEYS, "VideoFrame")
        return cls(int(data["index"]), _none_to_nan(data["time_s"]), [Face.from_dict(f) for f in data["faces"]])

    def to_rows(self, file: str | os.PathLike[str] = "") -> list[dict[str, Any]]:
        """One flat row per face (columns of ``row_columns(classes, video=True)``)."""
        time_s = _nan_to_none(self.time_s)
        return [{"file": file_name(file), "frame": self.index, "time_s": time_s, **face.to_row(file, j)}
                for j, face in enumerate(self.faces)]


def frames_to_pandas(frames: Iterable[VideoFrame | tuple[VideoFrame, Any]], file: str | os.PathLike[str] = "",
                     classes: Sequence[str] | None = None) -> pd.DataFrame:
    """The faces of video frames (``predict_video``'s, or ``predict_video_frames``' pairs) as a
    ``pandas.DataFrame``, one row per face (columns of
    :meth:`VideoFrame.to_rows`, ``time_s`` NaN when the frame rate is unknown; needs ``pip install
    pandas``). With no face at all, no rows but the same columns (``classes``: the model's, default
    :data:`~lrfer.constants.CLASSES`).

    >>> frames_to_pandas(rec.predict_video("clip.mp4", every=5), "clip.mp4")  # doctest: +SKIP
    """
    rows = [row for frame in frames for row in _video_frame(frame).to_rows(file)]
    table = _table("frames_to_pandas", rows, classes, video=True)
    table["time_s"] = table["time_s"].astype(float)  # rows hold None for an unknown time (JSON's null)
    return table


def _video_frame(item: Any) -> VideoFrame:
    """A :class:`VideoFrame`, also from ``predict_video_frames``'s ``(VideoFrame, pixels)`` pairs;
    TypeError naming what was given otherwise."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], VideoFrame):
        return item[0]
    if not isinstance(item, VideoFrame):
        raise TypeError(f"frames_to_pandas takes the VideoFrames of predict_video (or predict_video_frames' "
                        f"(VideoFrame, pixels) pairs); got {type(item).__name__}")
    return item


def faces_to_rows(faces: Iterable[Face] | Iterable[Iterable[Face]],
                  files: FileNames = None) -> list[dict[str, Any]]:
    """Flatten faces of one image (``list[Face]``) or of many (``list[list[Face]]``) into rows.

    ``files``: one name or path per image for the rows' ``file`` column, paths as their ``str``
    (ValueError when the counts differ), or one ``str`` or path for one image; default ``"0"``,
    ``"1"``, ... for several images and ``""`` for one.
    TypeError for anything but such faces (``predict_video``'s frames: :func:`frames_to_pandas`)."""
    return _rows("faces_to_rows", faces, files)


def _rows(what: str, faces: Any, files: FileNames) -> list[dict[str, Any]]:
    groups = _face_groups(what, faces)
    if isinstance(files, (str, os.PathLike)):  # a str is a Sequence[str] too: "ab" named two photos "a" and "b"
        files = [os.fspath(files)]
    names = list(files) if files is not None else [str(i) if len(groups) > 1 else "" for i in range(len(groups))]
    if len(names) != len(groups):
        raise ValueError(f"got {len(names)} file names for {len(groups)} images")
    return [face.to_row(name, j) for name, group in zip(names, groups) for j, face in enumerate(group)]


def _face_groups(what: str, faces: Any) -> list[list[Face]]:
    """One image's faces (``list[Face]``) or several images' (``list[list[Face]]``, told apart by the
    first item) as groups; TypeError naming what was given otherwise: predict_video's frames, one
    Face or ``to_dict()``'s dicts got "'VideoFrame' object is not iterable" or "'dict' object has no
    attribute 'to_row'"."""
    items = list(_iterable(what, faces))
    groups = [items] if not items or isinstance(items[0], Face) else [list(_iterable(what, g)) for g in items]
    for face in itertools.chain.from_iterable(groups):
        if not isinstance(face, Face):
            raise _not_faces(what, face)
    return groups


def _iterable(what: str, obj: Any) -> Iterable[Any]:
    if not isinstance(obj, Iterable) or isinstance(obj, (str, bytes, Mapping)):  # a dict: to_dict()'s
        raise _not_faces(what, obj)
    return obj


def _not_faces(what: str, item: Any) -> TypeError:
    hint = {VideoFrame: "; for predict_video's frames use frames_to_pandas",
            Face: "; pass one image's faces as a list ([face])"}.get(type(item), "")
    return TypeError(f"{what} takes predict's faces: a list of Face (one image) or a list of such lists "
                     f"(several images); got {type(item).__name__}{hint}")


def faces_to_pandas(faces: Iterable[Face] | Iterable[Iterable[Face]],
                    files: FileNames = None,
                    classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Faces as a ``pandas.DataFrame``, one row per face (columns of :meth:`Face.to_row`). With no
    face, no rows but the same columns (``classes``: the model's, default :data:`~lrfer.constants.CLASSES`).

    >>> faces_to_pandas(rec.predict("group.jpg"))  # doctest: +SKIP
    """
    return _table("faces_to_pandas", _rows("faces_to_pandas", faces, files), classes, video=False)


def _table(what: str, rows: list[dict[str, Any]], classes: Sequence[str] | None, video: bool) -> pd.DataFrame:
    from lrfer.constants import CLASSES

    columns = list(rows[0]) if rows else row_columns(CLASSES if classes is None else classes, video)
    return _pandas(what).DataFrame(rows, columns=columns)


def _pandas(what: str) -> Any:
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError(f"{what} needs pandas: pip install pandas (or pip install 'lrfer[pandas]')") from e
    return pd
