"""Video files: frame reading, the read-ahead thread, Recognizer.predict_video and `lrfer predict` on
videos. The videos are made in the test with OpenCV's writer (MPEG-4 Part 2, ``mp4v``)."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest

import lrfer
from lrfer import video as video_mod
from lrfer.cli import main
from lrfer.results import VideoFrame, row_columns

FPS = 10.0
FRAMES = 12
SIZE = (48, 64)  # height, width


def frame_color(i: int) -> tuple[int, int, int]:
    """Frame ``i``'s flat RGB colour: red rises with ``i``, green stays low, blue stays high."""
    return 20 * i, 30, 200


def write_video(path: Path, frames: int = FRAMES, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SIZE[1], SIZE[0]))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    for i in range(frames):
        writer.write(np.full((*SIZE, 3), frame_color(i)[::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def rec(tiny_path: Path) -> lrfer.Recognizer:
    return lrfer.load(tiny_path, device="cpu", detector=None)


# ------------------------------------------------------------------------------------------ reading
def test_read_frames_gives_rgb_frames_with_times(clip: Path) -> None:
    frames = list(video_mod.read_frames(clip))
    assert [index for index, _, _ in frames] == list(range(FRAMES))
    assert [t for _, t, _ in frames] == pytest.approx([i / FPS for i in range(FRAMES)])
    for index, _, pixels in frames:
        assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.uint8
        assert np.abs(pixels.reshape(-1, 3).mean(0) - frame_color(index)).max() < 8, index  # RGB, not BGR
    info = video_mod.video_info(clip)
    assert (info.fps, info.frame_count, info.height, info.width) == (FPS, FRAMES, *SIZE)


def test_read_frames_every_nth(clip: Path) -> None:
    frames = list(video_mod.read_frames(clip, every=5))
    assert [index for index, _, _ in frames] == [0, 5, 10]
    assert frames[1][1] == pytest.approx(0.5)
    assert np.abs(frames[2][2].reshape(-1, 3).mean(0) - frame_color(10)).max() < 8


def test_unreadable_videos_raise_value_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    for path, message in [(tmp_path / "missing.mp4", "no such file"), (fake, "cannot read video")]:
        with pytest.raises(ValueError, match=message):
            list(video_mod.read_frames(path))
        with pytest.raises(ValueError, match=message):
            video_mod.video_info(path)
    for every in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every must be an int >= 1"):
            video_mod.check_every(every)  # type: ignore[arg-type]


def test_a_video_without_read_permission_says_so(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV called it "not a video OpenCV can decode", after a warning of its own on stderr."""
    real_open = open

    def denying_open(file: Any, *args: Any, **kwargs: Any) -> Any:  # chmod 000 does not stop root
        if isinstance(file, (str, os.PathLike)) and Path(file) == clip:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denying_open)
    with pytest.raises(ValueError, match=r"cannot read video .*clip\.mp4': Permission denied"):
        video_mod.video_info(clip)


def test_predict_video_refuses_a_still_image_whatever_its_suffix(rec: lrfer.Recognizer, tmp_path: Path) -> None:
    """OpenCV opens a photo as a video of one frame: predict_video("photo.jpg"), or a JPEG named
    .mp4, gave one frame's results instead of saying that the file is a still image."""
    photo = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(photo), np.full((*SIZE, 3), 128, np.uint8))
    renamed = tmp_path / "photo.mp4"
    renamed.write_bytes(photo.read_bytes())
    for path, how in [(photo, r"score it with Recognizer.predict\(path\) or `lrfer predict`"),
                      (renamed, r"rename it with its image suffix \(.jpg, .png\) and score it with Recognizer.predict")]:
        with pytest.raises(ValueError, match=rf"'{path}' is a still image, not a video; {how}"):
            rec.predict_video(path)  # at the call
        with pytest.raises(ValueError, match="is a still image"):
            video_mod.video_info(path)


def test_a_stream_of_jpegs_is_still_read_as_a_video(tmp_path: Path) -> None:
    """Guards the still-image check: a raw MJPEG stream starts as a JPEG does, and has 3 frames."""
    stream = tmp_path / "camera.mjpeg"
    stream.write_bytes(b"".join(cv2.imencode(".jpg", np.full((*SIZE, 3), 40 * i, np.uint8))[1].tobytes() for i in range(3)))
    assert [index for index, _, _ in video_mod.read_frames(stream)] == [0, 1, 2]


def test_predict_video_says_a_corrupt_or_truncated_image_is_unreadable_not_a_still_image(
        rec: lrfer.Recognizer, tmp_path: Path) -> None:
    """A file with an image's signature that decodes neither as a video nor as an image (a truncated
    JPEG, whatever its suffix) was "a still image, not a video; score it with Recognizer.predict",
    which then refused it as unreadable: cv2.haveImageReader reads the signature alone."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    jpeg, png = (cv2.imencode(ext, pixels)[1].tobytes() for ext in (".jpg", ".png"))
    files = {"cut.jpg": jpeg[:20], "half.jpg": jpeg[:len(jpeg) // 2], "cut.mp4": jpeg[:20], "cut.png": png[:30]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"'{tmp_path / name}' is a corrupt or unreadable image file, not a video \(") as err:
            rec.predict_video(tmp_path / name)
        assert "still image" not in str(err.value)
    (tmp_path / "noise.mp4").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=rf"cannot read video: '{tmp_path / 'noise.mp4'}' is not a video OpenCV can decode"):
        rec.predict_video(tmp_path / "noise.mp4")
    (tmp_path / "photo.png").write_bytes(png)  # whole: still a still image
    with pytest.raises(ValueError, match=rf"'{tmp_path / 'photo.png'}' is a still image, not a video"):
        rec.predict_video(tmp_path / "photo.png")


def test_predict_video_says_what_a_path_that_is_no_video_file_is(rec: lrfer.Recognizer, clip: Path, tmp_path: Path) -> None:
    """A folder was "no such file", an empty file "not a video OpenCV can decode (corrupt or unsupported
    format)", and a name given as bytes "is not a file path ... (for a webcam or a stream ...)"."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path, message in [(tmp_path, rf"'{tmp_path}' is a folder, not a video file"),
                          (tmp_path / "empty.mp4", rf"empty file '{tmp_path / 'empty.mp4'}'"),
                          (os.fsencode(clip), r".* is bytes; .* pass the file's path as a str or a pathlib.Path")]:
        with pytest.raises(ValueError, match=f"cannot read video: {message}"):
            rec.predict_video(path)  # type: ignore[arg-type]
    assert len(list(rec.predict_video(str(clip), every=6))) == len(list(rec.predict_video(clip, every=6))) == 2


def test_cli_skips_a_still_image_named_as_a_video_and_says_how_to_score_it(
        tiny_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`lrfer predict photo.mp4` (a JPEG) wrote a row for "frame 0" of it, with exit status 0."""
    renamed = tmp_path / "photo.mp4"
    assert cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((*SIZE, 3), 128, np.uint8))
    renamed.write_bytes((tmp_path / "photo.jpg").read_bytes())
    out = tmp_path / "faces.csv"
    assert main(["predict", str(renamed), "--model", str(tiny_path), "--detector", "none", "--quiet", "--out", str(out)]) == 1
    assert "skipped: cannot read video" in caplog.text and "is a still image, not a video; rename it" in caplog.text
    assert len(out.read_text().splitlines()) == 1  # the header alone


def test_read_ahead_keeps_order_and_a_bounded_lead() -> None:
    produced: list[int] = []
    consumed = 0
    lead = 0

    def source() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    for i in video_mod.read_ahead(source(), depth=3):
        assert i == consumed
        consumed += 1
        lead = max(lead, len(produced) - consumed)
    assert consumed == 50
    assert lead <= 3 + 1, "at most depth items queued and one in the producer's hands"


def test_read_ahead_raises_the_producers_error_in_order() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("frame 3 is corrupt")

    got = []
    with pytest.raises(ValueError, match="frame 3 is corrupt"):
        for item in video_mod.read_ahead(source(), depth=4):
            got.append(item)
    assert got == [1, 2]


def test_closing_read_ahead_stops_the_producer_and_closes_its_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    ahead = video_mod.read_ahead(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed.wait(timeout=5)
    assert not any(t.name == "lrfer-read-ahead" and t.is_alive() for t in threading.enumerate())


class _ClosableFrames:
    """An iterator of frames with a close() (like a reader holding a file), which no garbage collection calls."""

    def __init__(self, count: int) -> None:
        self.items = iter(range(count))
        self.closed = threading.Event()

    def __iter__(self) -> "_ClosableFrames":
        return self

    def __next__(self) -> int:
        return next(self.items)

    def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("stop_early", [False, True])
def test_read_ahead_closes_a_source_that_is_not_a_generator(stop_early: bool) -> None:
    """Guards read_ahead's explicit close of its source, at the end of the items and when the consumer
    stops early: a source that is not a generator is not closed by being dropped."""
    source = _ClosableFrames(5)
    ahead = video_mod.read_ahead(source, depth=2)
    if stop_early:
        assert next(ahead) == 0
        ahead.close()
    else:
        assert list(ahead) == [0, 1, 2, 3, 4]
    assert source.closed.wait(timeout=5)



# ------------------------------------------------------------------------------------------- predict
def test_predict_video_matches_predict_on_the_frames(rec: lrfer.Recognizer, clip: Path) -> None:
    results = list(rec.predict_video(clip, every=2))
    assert all(isinstance(r, VideoFrame) for r in results)
    assert [r.index for r in results] == list(range(0, FRAMES, 2))
    assert [r.time_s for r in results] == pytest.approx([i / FPS for i in range(0, FRAMES, 2)])
    frames = [pixels for _, _, pixels in video_mod.read_frames(clip, every=2)]
    expected = rec.predict(frames)
    for result, faces in zip(results, expected):
        assert len(result.faces) == 1  # detector=None: the frame is the face
        assert result.faces[0].probs == pytest.approx(faces[0].probs, abs=1e-6)


def record_captures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of each ``cv2.VideoCapture`` opened from now on."""
    opened: list[str] = []
    real_capture = cv2.VideoCapture

    def counting(*args: Any) -> Any:
        opened.append(args[0])
        return real_capture(*args)

    monkeypatch.setattr(cv2, "VideoCapture", counting)
    return opened


def record_step_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of frames of each step predict_video cuts from now on, in the video's order: taken as
    ``overlapped`` takes the steps, not as they start scoring (which of two streams' threads starts its
    step first is a race: under load [1, 10, 1] was recorded for the steps [1, 1, 10], a flaky failure)."""
    import lrfer.overlap

    sizes: list[int] = []
    overlapped = lrfer.overlap.overlapped

    def recorded(work: Any, steps: Any, *args: Any, **kwargs: Any) -> Any:
        return overlapped(work, (sizes.append(len(step)) or step for step in steps), *args, **kwargs)

    monkeypatch.setattr(lrfer.overlap, "overlapped", recorded)
    return sizes


def test_predict_video_in_several_steps_reads_lazily(rec: lrfer.Recognizer, clip: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of a few frames: the same results as one step, and the first result comes before the
    video is read to its end (memory stays flat on long videos). What may have been read by then is
    bounded by what holds frames, not by timing: the steps taken (one stream: one; more: overlapped
    starts the next step before it hands out a result, so streams + 1), the read-ahead queue (one
    step) and one frame in the decoder's hand. The bound of 2 streams was 2 steps + queue + 1 = 10
    frames of 3: under load the third step was taken first, 11 read, a flaky failure in CI."""
    import lrfer.recognizer as recognizer

    whole = [r.faces[0].probs for r in rec.predict_video(clip)]
    read: list[int] = []
    real_read_frames = video_mod.read_frames

    def counting(path: Path, every: int = 1, on_info: Any = None) -> Iterator[tuple[int, float, np.ndarray]]:
        for item in real_read_frames(path, every, on_info):
            read.append(item[0])
            yield item

    monkeypatch.setattr(video_mod, "read_frames", counting)
    for streams, step in ((1, 3), (2, 2)):
        most = (streams + (streams > 1)) * step + step + 1  # steps taken, the queue (one step), one in hand
        monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", step)
        read.clear()
        frames = rec.predict_video(clip, streams=streams)
        first = next(frames)
        assert first.index == 0 and len(read) <= most < FRAMES
        rest = list(frames)
        assert [r.faces[0].probs for r in [first, *rest]] == [pytest.approx(p, abs=1e-6) for p in whole]


def test_predict_video_on_several_streams_gives_the_frames_of_one(rec: lrfer.Recognizer, clip: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 3 frames scored two at a time on kept threads: the same frames, in order, as one at a time."""
    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)
    scorers: set[int] = set()
    predict_step = rec._predict_step
    lock, running, most = threading.Lock(), [0], [0]

    def recorded(*args: object) -> object:
        scorers.add(threading.get_ident())
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return predict_step(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(rec, "_predict_step", recorded)
    one = [(f.index, f.faces[0].probs) for f in rec.predict_video(clip, streams=1)]
    assert scorers == {threading.get_ident()}
    scorers.clear()
    two = [(f.index, f.faces[0].probs) for f in rec.predict_video(clip, streams=2)]
    # at most 2 steps at once, on kept threads (more of them than 2 when an earlier call asked for more)
    assert threading.get_ident() not in scorers and scorers and 1 <= most[0] <= 2
    assert [i for i, _ in two] == [i for i, _ in one] == list(range(FRAMES))
    assert [p for _, p in two] == [pytest.approx(p, abs=1e-6) for _, p in one]
    with pytest.raises(ValueError, match="streams must be an integer >= 1"):
        rec.predict_video(clip, streams=0)  # at the call


def test_cli_scores_a_video_on_several_streams_as_on_one(tiny_path: Path, clip: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)  # 12 frames: 4 steps
    threads = torch.get_num_threads()
    texts = {}
    for streams in ("1", "2"):
        out = tmp_path / f"{streams}.csv"
        assert main(["predict", str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet",
                     "--streams", streams, "--out", str(out)]) == 0
        texts[streams] = out.read_text()
        assert torch.get_num_threads() == threads  # restored
    assert texts["2"] == texts["1"] and len(texts["1"].splitlines()) == 1 + FRAMES


def test_cli_and_predict_video_give_a_short_clip_the_same_steps(tiny_path: Path, clip: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The number of streams was capped in two places: `lrfer predict --streams 2` cut a 12-frame clip
    to 1 stream (a step of 12) before predict_video_frames evened it out into 2 steps of 6."""
    sizes: list[int] = []
    predict_step = lrfer.Recognizer._predict_step

    def recorded(self: lrfer.Recognizer, arrays: list[np.ndarray], batch_size: int) -> object:
        sizes.append(len(arrays))
        return predict_step(self, arrays, batch_size)

    monkeypatch.setattr(lrfer.Recognizer, "_predict_step", recorded)
    rec = lrfer.load(tiny_path, device="cpu", detector=None)
    assert len(list(rec.predict_video(clip, streams=2))) == FRAMES
    assert sizes == [6, 6]
    sizes.clear()
    assert main(["predict", str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet", "--streams", "2",
                 "--out", str(tmp_path / "faces.csv")]) == 0
    assert sizes == [6, 6]


def test_cli_opens_a_video_once_for_its_header(tiny_path: Path, clip: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`lrfer predict clip.mp4` on 2 streams opened the file three times: for the progress bar's frame
    count, to decode it, and again in predict_video_frames for the frame count of its even steps; then
    twice (video_info for the progress bar, then the decoder). The decoder's header serves them all."""
    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)  # 12 frames: 4 steps, 2 streams kept
    opened = record_captures(monkeypatch)
    out = tmp_path / "faces.csv"
    assert main(["predict", str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet", "--streams", "2",
                 "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + FRAMES
    assert opened == [str(clip)]  # its header and its frames, from one capture


def test_predict_video_frames_gives_its_header_before_it_returns(rec: lrfer.Recognizer, clip: Path) -> None:
    """The header of the decoder's one opening of the file, for a caller's progress bar or annotated copy
    (`lrfer predict` opened the file a second time with video_info for it)."""
    headers: list[video_mod.VideoInfo] = []
    frames = rec.predict_video_frames(clip, every=2, on_info=headers.append)
    try:
        assert headers == [video_mod.video_info(clip)]
        assert headers[0].frame_count == FRAMES
    finally:
        frames.close()


def test_stopping_predict_video_early_releases_the_video(rec: lrfer.Recognizer, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_video(tmp_path / "long.mp4", frames=150)  # more than a step and the read-ahead queue hold
    readers: list[Iterator[tuple[int, float, np.ndarray]]] = []
    real_read_frames = video_mod.read_frames

    def recorded(path: Path, every: int = 1, on_info: Any = None) -> Iterator[tuple[int, float, np.ndarray]]:
        readers.append(real_read_frames(path, every, on_info))
        return readers[-1]

    monkeypatch.setattr(video_mod, "read_frames", recorded)
    frames = rec.predict_video(clip)
    assert next(frames).index == 0
    frames.close()
    assert len(readers) == 1 and readers[0].gi_frame is None  # closed before its end: its capture released


def test_predict_video_checks_its_arguments_at_the_call(rec: lrfer.Recognizer, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        rec.predict_video(tmp_path / "missing.mp4")  # not only when iterated
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        rec.predict_video(clip, every=0)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        rec.predict_video(clip, batch_size=0)
    with pytest.raises(ValueError, match="is a video; score it with Recognizer.predict_video"):
        rec.predict(str(clip))


def test_predict_video_takes_every_as_a_numpy_integer(rec: lrfer.Recognizer, clip: Path) -> None:
    """``every=np.int64(2)`` (a step worked out with NumPy from the frame rate) was a ValueError saying
    'every must be an int >= 1; got np.int64(2)', while batch_size and streams take NumPy integers."""
    results = list(rec.predict_video(clip, every=np.int64(2), streams=np.int64(2)))  # type: ignore[arg-type]
    assert [r.index for r in results] == list(range(0, FRAMES, 2))
    frames = video_mod.read_frames(clip, every=np.int64(5))  # type: ignore[arg-type]
    assert [index for index, _, _ in frames] == [0, 5, 10]
    assert type(video_mod.check_every(np.int64(5))) is int  # type: ignore[arg-type]


def test_predict_video_fails_at_the_call_on_a_video_without_frames(rec: lrfer.Recognizer, tmp_path: Path) -> None:
    """A file OpenCV opens (its header is whole) but decodes no frame from: ValueError at the call too."""
    avi = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE[1], SIZE[0]))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(FRAMES):
        writer.write(np.full((*SIZE, 3), frame_color(i), np.uint8))
    writer.release()
    data = avi.read_bytes()
    headless = tmp_path / "header-only.avi"
    headless.write_bytes(data[: data.index(b"movi") + 4])  # the frames' chunk list cut off
    assert cv2.VideoCapture(str(headless)).isOpened()
    with pytest.raises(ValueError, match="no frame of .*header-only.avi' could be decoded"):
        rec.predict_video(headless)


def test_video_frame_rows() -> None:
    from lrfer.results import Face

    face = Face((1, 2, 3, 4), ((math.nan, math.nan),) * 5, 0.9, 2.0, "happy", {"happy": 0.7, "sad": 0.3})
    rows = VideoFrame(7, 0.7, [face, face]).to_rows("clip.mp4")
    assert [list(r) for r in rows] == [row_columns(["happy", "sad"], video=True)] * 2
    assert [(r["frame"], r["time_s"], r["face"]) for r in rows] == [(7, 0.7, 0), (7, 0.7, 1)]
    assert VideoFrame(0, math.nan, [face]).to_rows()[0]["time_s"] is None


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_scores_videos_and_images_together(tiny_path: Path, clip: Path, tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((30, 30, 3), 128, np.uint8))
    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    args = ["predict", str(clip), str(image), "--model", str(tiny_path), "--detector", "none", "--quiet",
            "--every", "4", "--out", str(out), "--annotate", str(annotated)]
    assert main(args) == 0
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == row_columns(lrfer.load(tiny_path, detector=None).classes, video=True)
    assert [(r["file"], r["frame"], r["time_s"]) for r in rows] == [
        (str(image), "", ""), (str(clip), "0", "0.0"), (str(clip), "4", "0.4"), (str(clip), "8", "0.8")]
    written = video_mod.video_info(annotated / "clip.mp4")
    assert written.frame_count == 3 and written.fps == pytest.approx(FPS / 4)
    assert (annotated / "still.png").is_file()


def test_cli_jsonl_rows_have_the_same_keys_for_images_and_videos(tiny_path: Path, clip: Path, tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((30, 30, 3), 128, np.uint8))
    out = tmp_path / "faces.jsonl"
    args = ["predict", str(image), str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet",
            "--every", "6", "--out", str(out)]
    assert main(args) == 0
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    columns = row_columns(lrfer.load(tiny_path, detector=None).classes, video=True)
    assert [list(r) for r in rows] == [columns] * 3
    assert (rows[0]["frame"], rows[0]["time_s"]) == (None, None) and rows[2]["frame"] == 6


def test_cli_unreadable_video_is_skipped_with_exit_1(tiny_path: Path, clip: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    out = tmp_path / "faces.jsonl"
    args = ["predict", str(broken), str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet",
            "--every", "6", "--out", str(out)]
    assert main(args) == 1
    assert "broken.mp4" in caplog.text and "cannot read video" in caplog.text
    assert len(out.read_text().splitlines()) == 2  # frames 0 and 6 of the good clip


def truncated_avi(path: Path, frames: int = 40, keep: float = 0.6) -> Path:
    """A Motion-JPEG AVI of ``frames`` noise frames cut after ``keep`` of its bytes: its header still
    announces every frame, but only the first ones decode."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE[1], SIZE[0]))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_a_truncated_video_is_scored_as_far_as_it_decodes_with_a_warning(
        tiny_path: Path, clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It was scored partially without a word, and ``lrfer predict`` exited 0."""
    cut = truncated_avi(tmp_path / "cut.avi")
    decoded = len(list(video_mod.read_frames(cut)))
    assert 0 < decoded < 40
    assert f"decoded {decoded} of the 40 frames its header announces" in caplog.text
    assert f"the results stop at frame {decoded - 1}" in caplog.text  # frames count from 0
    caplog.clear()
    assert len(list(video_mod.read_frames(clip))) == FRAMES and "announces" not in caplog.text  # a whole video: no warning
    out = tmp_path / "faces.jsonl"
    for every in (3, 20):  # 20: the frames decoded after the last one scored are not seen by the caller
        caplog.clear()
        args = ["predict", str(cut), str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet",
                "--every", str(every), "--out", str(out)]
        assert main(args) == 1
        assert "1 video(s) ended before the frames their header announces" in caplog.text
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == math.ceil(decoded / every) + math.ceil(FRAMES / every)  # scored as far as it decodes


@pytest.mark.parametrize("decoded, announced, early", [(40, 40, False), (39, 40, False), (38, 40, True),
                                                       (24, 40, True), (5, 0, False), (990, 1000, False),
                                                       (989, 1000, True)])
def test_ended_early_allows_one_percent_of_an_estimated_count(decoded: int, announced: int, early: bool) -> None:
    assert video_mod.ended_early(decoded, announced) is early


def test_frames_read_ahead_are_one_step_within_a_memory_bound() -> None:
    import torch

    from lrfer.recognizer import frames_ahead

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no GPU needed: only the step rules
    assert [frames_ahead(cpu, h, w) for w, h in [(480, 270), (1920, 1080), (3840, 2160)]] == [32, 32, 10]
    assert [frames_ahead(cuda, h, w) for w, h in [(480, 270), (1920, 1080), (3840, 2160)]] == [256, 32, 8]
    assert frames_ahead(cpu, 1 << 20, 1 << 20) == 1


def test_video_frame_to_dict_and_pandas(rec: lrfer.Recognizer, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import sys

    frames = list(rec.predict_video(clip, every=6))
    d = frames[1].to_dict()
    json.dumps(d, allow_nan=False)
    assert d["index"] == 6 and d["time_s"] == pytest.approx(0.6) and d["faces"] == [f.to_dict() for f in frames[1].faces]
    assert VideoFrame(0, math.nan, []).to_dict() == {"index": 0, "time_s": None, "faces": []}
    pytest.importorskip("pandas")
    df = lrfer.frames_to_pandas(frames, "clip.mp4")
    assert list(df.columns) == row_columns(rec.classes, video=True)
    assert df["frame"].tolist() == [0, 6] and set(df["file"]) == {"clip.mp4"}
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="frames_to_pandas needs pandas: pip install pandas"):
        lrfer.frames_to_pandas(frames)


def test_cli_finds_videos_in_folders_and_mirrors_them_when_annotating(tiny_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    (root / "day2").mkdir(parents=True)
    write_video(root / "day2" / "cam.avi", frames=4)
    write_video(root / "a.mp4", frames=2)
    cv2.imwrite(str(root / "still.png"), np.full((30, 30, 3), 128, np.uint8))
    (root / "notes.txt").write_text("ignored")
    assert [str(rel) for _, rel in video_mod.iter_video_files([root])] == ["a.mp4", "day2/cam.avi"]
    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    assert main(["predict", str(root), "--model", str(tiny_path), "--detector", "none", "--quiet",
                 "--out", str(out), "--annotate", str(annotated)]) == 0
    with open(out, newline="") as fh:
        rows = [(r["file"], r["frame"]) for r in csv.DictReader(fh)]
    assert rows == [(str(root / "still.png"), ""), (str(root / "a.mp4"), "0"), (str(root / "a.mp4"), "1"),
                    *[(str(root / "day2" / "cam.avi"), str(i)) for i in range(4)]]
    assert video_mod.video_info(annotated / "day2" / "cam.mp4").frame_count == 4
    assert (annotated / "a.mp4").is_file() and (annotated / "still.png").is_file()


def test_video_with_a_name_that_is_not_utf8_is_skipped_not_a_crash(tiny_path: Path, clip: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """OpenCV's VideoCapture and VideoWriter end the process (a segmentation fault) on such a name.
    Run in a subprocess so that a crash fails the test rather than the test run."""
    import os
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "names"
    folder.mkdir()
    shutil.copy(clip, os.path.join(os.fsencode(folder), b"caf\xe9.mp4"))
    shutil.copy(clip, folder / "ok.mp4")
    out = tmp_path / "faces.csv"
    script = "import sys\nfrom lrfer.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([sys.executable, "-c", script, "predict", str(folder), "--model", str(tiny_path),
                           "--detector", "none", "--quiet", "--every", "6", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 1, proc.stderr
    assert "not valid UTF-8" in proc.stderr
    with open(out, newline="") as fh:
        assert [(Path(r["file"]).name, r["frame"]) for r in csv.DictReader(fh)] == [("ok.mp4", "0"), ("ok.mp4", "6")]
    with pytest.raises(ValueError, match="not valid UTF-8"):
        video_mod.AnnotatedVideoWriter(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xe9.mp4")), 10).write(
            np.zeros((48, 64, 3), np.uint8), [])


def test_predict_video_refuses_a_name_that_is_not_utf8_before_opencv_sees_it(clip: Path, tmp_path: Path) -> None:
    """VideoCapture ends the process (a segmentation fault) on such a name: run in a subprocess so that
    a crash fails the test rather than the test run."""
    import shutil
    import subprocess
    import sys

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp4")
    shutil.copy(clip, name)
    script = ("import os, sys\nfrom lrfer import video\n"
              "for read in (video.video_info, lambda p: next(video.read_frames(p))):\n"
              "    try:\n        read(os.fsdecode(sys.argv[1].encode('utf-8', 'surrogateescape')))\n"
              "    except ValueError as err:\n        print(err)\n")
    proc = subprocess.run([sys.executable, "-c", script, os.fsdecode(name)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cannot read video: the name of") == 2 and "is not valid UTF-8" in proc.stdout


def test_cli_annotating_into_a_folder_whose_name_is_not_utf8_skips_the_video_before_its_rows(
        tiny_path: Path, clip: Path, tmp_path: Path) -> None:
    """The annotated copy's name was refused (it would crash OpenCV's writer) at the first frame, after
    that frame's rows: the video was reported skipped with one frame's rows in the output, and the
    writer made its folder first. In a subprocess so that a crash fails the test, not the test run."""
    import subprocess
    import sys

    annotated = os.path.join(os.fsencode(tmp_path), b"annot\xe9")
    out = tmp_path / "faces.csv"
    script = "import sys\nfrom lrfer.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([sys.executable, "-c", script, "predict", str(clip), "--model", str(tiny_path), "--detector", "none",
                           "--quiet", "--every", "6", "--out", str(out), "--annotate", os.fsdecode(annotated)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 1, proc.stderr
    assert "skipped: cannot write video: the name of" in proc.stderr and "is not valid UTF-8" in proc.stderr
    # a copy not written, not a file not read (the summary said "1 file(s) or folder(s) could not be read")
    assert "1 annotated file(s) could not be written" in proc.stderr and "could not be read" not in proc.stderr
    assert len(out.read_text().splitlines()) == 1  # the header alone
    inner = os.path.join(annotated, b"sub")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        video_mod.AnnotatedVideoWriter(os.fsdecode(os.path.join(inner, b"a.mp4")), 10)
    assert not os.path.exists(inner)  # refused at once, no folder made


def test_cli_skips_a_video_whose_annotated_copy_opencv_cannot_open_before_its_rows(
        tiny_path: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Pins down that the annotated frame is written before the frame's rows: a writer OpenCV cannot open
    (a codec it lacks) is found at the first frame, and the video is skipped with no row of it in the
    output, counted as a copy not written (rows written first left one frame's rows of a skipped video)."""
    class UnopenableWriter:
        fourcc = staticmethod(cv2.VideoWriter.fourcc)

        def __init__(self, *args: Any) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoWriter", UnopenableWriter)
    out = tmp_path / "faces.csv"
    assert main(["predict", str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet", "--every", "6",
                 "--out", str(out), "--annotate", str(tmp_path / "annotated")]) == 1
    assert "skipped: OpenCV cannot write the video" in caplog.text
    assert "1 annotated file(s) could not be written" in caplog.text and "could not be read" not in caplog.text
    assert len(out.read_text().splitlines()) == 1  # the header alone


@pytest.mark.parametrize("fps", [1000 / 3, 0.0001, 480 / 7])
def test_annotated_video_at_a_rate_mpeg4_cannot_encode_is_written_at_a_near_one(fps: float, tmp_path: Path) -> None:
    """--annotate writes at the input's fps / --every: FFmpeg's mp4v refused e.g. 333.33 or 0.0001 fps,
    and the RuntimeError ended the whole run."""
    path = tmp_path / "a.mp4"
    with video_mod.AnnotatedVideoWriter(path, fps) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8), [])
    assert video_mod.video_info(path).frame_count == 1


def test_annotate_inside_an_input_folder_never_replaces_an_input(tiny_path: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """--annotate cl/zz on the folder cl: the copy of cl/a.mp4 went to cl/zz/a.mp4, an input not read yet."""
    root = tmp_path / "cl"
    (root / "zz").mkdir(parents=True)
    write_video(root / "a.mp4", frames=2)
    write_video(root / "zz" / "a.mp4", frames=6)
    before = (root / "zz" / "a.mp4").read_bytes()
    out = tmp_path / "faces.csv"
    assert main(["predict", str(root), "--model", str(tiny_path), "--detector", "none", "--quiet",
                 "--out", str(out), "--annotate", str(root / "zz")]) == 0
    assert (root / "zz" / "a.mp4").read_bytes() == before
    with open(out, newline="") as fh:
        frames = [r["frame"] for r in csv.DictReader(fh) if r["file"] == str(root / "zz" / "a.mp4")]
    assert frames == [str(i) for i in range(6)]
    assert (root / "zz" / "a-2.mp4").is_file()


def test_broken_link_to_a_video_in_a_folder_is_reported(tiny_path: Path, clip: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").symlink_to(tmp_path / "missing.mp4")
    (folder / "ok.mp4").symlink_to(clip)
    out = tmp_path / "faces.csv"
    assert main(["predict", str(folder), "--model", str(tiny_path), "--detector", "none", "--quiet",
                 "--every", "6", "--out", str(out)]) == 1
    assert "broken symbolic link" in caplog.text and "broken.mp4" in caplog.text


def test_annotated_video_keeps_the_frames_colours(tmp_path: Path) -> None:
    """Guards the RGB -> BGR hand-over to OpenCV's writer: a red frame is red when read back, not blue."""
    path = tmp_path / "annotated.mp4"
    red = np.zeros((*SIZE, 3), np.uint8)
    red[...] = (200, 30, 20)
    with video_mod.AnnotatedVideoWriter(path, FPS) as writer:
        for _ in range(3):
            writer.write(red, [])
    frames = list(video_mod.read_frames(path))
    assert len(frames) == 3
    assert np.abs(frames[0][2].reshape(-1, 3).mean(0) - (200, 30, 20)).max() < 12



def test_closing_prepend_closes_the_rest_even_while_it_is_still_referenced() -> None:
    """Guards prepend's close of ``rest`` (a video reader: its file is released then, not when the
    garbage collector gets to it)."""
    released: list[bool] = []

    def frames() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            released.append(True)

    rest = frames()
    first = next(rest)
    both = video_mod.prepend(first, rest)
    assert next(both) == 0
    both.close()
    assert released == [True]


def test_frames_to_pandas_takes_predict_video_frames_pairs(rec: lrfer.Recognizer, clip: Path) -> None:
    """``frames_to_pandas(rec.predict_video_frames(...))`` raised AttributeError: 'tuple' object has no
    attribute 'to_rows'."""
    pytest.importorskip("pandas")
    expected = lrfer.frames_to_pandas(rec.predict_video(clip, every=4), "clip.mp4")
    got = lrfer.frames_to_pandas(rec.predict_video_frames(clip, every=4), "clip.mp4")
    assert got.equals(expected) and got["frame"].tolist() == [0, 4, 8]
    with pytest.raises(TypeError, match="frames_to_pandas takes the VideoFrames of predict_video.*got int"):
        lrfer.frames_to_pandas([3])


def test_predict_video_names_webcams_and_urls(rec: lrfer.Recognizer) -> None:
    """A webcam index (cv2.VideoCapture(0)'s habit) raised pathlib's TypeError; a URL was reported as
    'no such file' with its '//' collapsed ('rtsp:/host/stream')."""
    with pytest.raises(ValueError, match="0 is not a file path; predict_video reads video files"):
        rec.predict_video(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'rtsp://127\.0\.0\.1/stream' is a URL"):
        rec.predict_video("rtsp://127.0.0.1/stream")


def test_predict_video_of_frames_names_them_briefly(rec: lrfer.Recognizer) -> None:
    """An array (or a list of frames) given as the video was shown whole in the message: thousands of lines."""
    frame = np.zeros((320, 480, 3), np.uint8)
    with pytest.raises(ValueError, match=r"numpy\.ndarray of shape \(320, 480, 3\) and dtype uint8 is not a file path") as err:
        rec.predict_video(frame)  # type: ignore[arg-type]
    assert len(str(err.value)) < 300
    with pytest.raises(ValueError, match="is not a file path") as err:
        rec.predict_video([frame] * 6)  # type: ignore[arg-type]
    assert len(str(err.value)) < 600 and "\n" not in str(err.value)


def test_several_streams_even_out_a_clips_steps_and_share_the_callers_threads(
        rec: lrfer.Recognizer, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """12 frames in steps of at most 8 on 2 streams: 6 and 6, not 8 and a last 4 alone on one thread;
    each step on half the caller's torch threads, the caller's own count untouched. Two streams are the
    default for a caller with 2 threads on CPU."""
    import torch

    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 8)
    seen: list[tuple[int, int]] = []
    predict_step = rec._predict_step

    def recorded(arrays: list[np.ndarray], batch_size: int) -> object:
        seen.append((len(arrays), torch.get_num_threads()))
        return predict_step(arrays, batch_size)

    monkeypatch.setattr(rec, "_predict_step", recorded)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = [f.faces[0].probs for f in rec.predict_video(clip, streams=1)]
        assert seen == [(8, 2), (4, 2)]
        seen.clear()
        two = [f.faces[0].probs for f in rec.predict_video(clip, streams=2)]
        assert torch.get_num_threads() == 2
        assert seen == [(6, 1), (6, 1)]
        seen.clear()
        assert [f.faces[0].probs for f in rec.predict_video(clip)] == two  # the default on CPU with 2 threads
        assert seen == [(6, 1), (6, 1)]
    finally:
        torch.set_num_threads(before)
    assert two == [pytest.approx(p, abs=1e-6) for p in one]


def test_cli_shares_the_threads_it_sets_for_videos_among_the_streams(
        tiny_path: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lrfer predict VIDEO --streams 2`` on a machine of 4 cores, called in-process with 2 threads: the
    block's 4 threads (``host_threads``) are shared, 2 per stream; they were taken from the count the
    main thread had before the block (on CUDA: torch's default, not ``GPU_HOST_THREADS``)."""
    import torch

    import lrfer.recognizer as recognizer

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(recognizer, "cpu_threads", lambda: 4)
    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)  # 12 frames: 4 steps of 3
    seen: set[int] = set()
    predict_step = recognizer.Recognizer._predict_step

    def recorded(self: lrfer.Recognizer, arrays: list[np.ndarray], batch_size: int) -> object:
        seen.add(torch.get_num_threads())
        return predict_step(self, arrays, batch_size)

    monkeypatch.setattr(recognizer.Recognizer, "_predict_step", recorded)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["predict", str(clip), "--model", str(tiny_path), "--detector", "none", "--quiet",
                     "--streams", "2", "--out", str(tmp_path / "rows.csv")]) == 0
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == {2}


@pytest.mark.parametrize("announced, steps", [(2, [1, 1, 10]), (7, [4, 3, 5]), (0, [12]), (40, [12])])
def test_a_header_that_undercounts_the_frames_evens_out_only_the_announced_ones(
        rec: lrfer.Recognizer, clip: Path, monkeypatch: pytest.MonkeyPatch, announced: int, steps: list[int]) -> None:
    """12 frames whose header announces ``announced``, on 2 streams (steps of at most 32 on CPU): the
    announced frames in even steps, the rest in steps of the usual size, not all 12 in steps of 1 (2
    announced: a frame per step for the whole video, 1.5x slower at 480x270); same frames, same order."""
    from dataclasses import replace

    one = [(f.index, f.time_s, f.faces[0].probs) for f in rec.predict_video(clip, streams=1)]
    real_info = video_mod.capture_info  # the header predict_video's decoder reads
    monkeypatch.setattr(video_mod, "capture_info", lambda capture: replace(real_info(capture), frame_count=announced))
    sizes = record_step_sizes(monkeypatch)
    two = [(f.index, f.time_s, f.faces[0].probs) for f in rec.predict_video(clip, streams=2)]
    assert sizes == steps
    assert [(i, t) for i, t, _ in two] == [(i, t) for i, t, _ in one]
    assert [p for _, _, p in two] == [pytest.approx(p, abs=1e-6) for _, _, p in one]


def test_two_streams_leave_new_threads_the_callers_torch_thread_count(rec: lrfer.Recognizer, clip: Path) -> None:
    """Each stream's ``torch.set_num_threads(1)`` also set the count torch gives any thread that first
    uses it later (its process-wide default): after ``predict_video`` on 2 streams (the default for a
    caller with 2 threads), a new thread ran torch on 1 thread for good (a web server's request threads)."""
    import torch

    def in_a_new_thread() -> int:
        counts: list[int] = []
        thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return counts[0]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(list(rec.predict_video(clip))) == FRAMES  # 2 streams: each step on 1 thread
        assert torch.get_num_threads() == 2 and in_a_new_thread() == 2
        frames = rec.predict_video(clip, streams=2)
        next(frames)
        frames.close()  # stopped early too
        assert torch.get_num_threads() == 2 and in_a_new_thread() == 2
    finally:
        torch.set_num_threads(before)


def test_an_error_reading_the_video_comes_after_the_frames_read_before_it(
        rec: lrfer.Recognizer, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 3, the reader failing at frame 9: frames 0-8 come before the error on 2 streams as on one.
    On 2 streams only 0-2 came: taking the step after the next result (its frames read ahead) raised
    at once, and the steps of frames 3-5 and 6-8, scored or being scored, were dropped."""
    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)
    real_read_frames = video_mod.read_frames

    def failing(path: Path, every: int = 1, on_info: Any = None) -> Iterator[tuple[int, float, np.ndarray]]:
        for item in real_read_frames(path, every, on_info):
            if item[0] == 9:
                raise RuntimeError("frame 9 cannot be converted")
            yield item

    monkeypatch.setattr(video_mod, "read_frames", failing)
    for streams in (1, 2):
        got: list[int] = []
        with pytest.raises(RuntimeError, match="frame 9 cannot be converted"):
            for frame in rec.predict_video(clip, streams=streams):
                got.append(frame.index)
        assert got == list(range(9)), streams


def test_predict_video_on_two_streams_opens_the_video_once(rec: lrfer.Recognizer, clip: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict_video(clip, streams=2)`` opened the file twice: once to decode it, and once more for
    the frame count in its header (the even steps). The decoder now reports the header it read."""
    opened = record_captures(monkeypatch)
    sizes = record_step_sizes(monkeypatch)
    assert [f.index for f in rec.predict_video(clip, streams=2)] == list(range(FRAMES))
    assert opened == [str(clip)]
    assert sizes == [6, 6]  # the 12 frames of the header read there, evened out over the 2 streams


def test_a_header_that_cannot_be_read_releases_the_video_at_once(
        rec: lrfer.Recognizer, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder read the header before its ``try``: when that failed, the file already open was
    released only when the capture was collected (it was read a second time, after the first frame,
    and that failure left the decoder open until the traceback was dropped)."""
    released: list[bool] = []
    real_capture = cv2.VideoCapture

    class Tracked:
        def __init__(self, *args: Any) -> None:
            self._capture = real_capture(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._capture, name)

        def release(self) -> None:
            released.append(True)
            self._capture.release()

    def unreadable(capture: Any) -> object:
        raise ValueError("cannot read the header")

    monkeypatch.setattr(cv2, "VideoCapture", Tracked)
    monkeypatch.setattr(video_mod, "capture_info", unreadable)
    with pytest.raises(ValueError, match="cannot read the header"):
        rec.predict_video_frames(clip, streams=2)
    assert released == [True]
