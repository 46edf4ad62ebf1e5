"""Videos: frames/s of ``Recognizer.predict_video`` against its parts, and peak memory of ``lrfer
predict`` on a short and a 10x longer video (must stay flat).

    python benchmarks/video.py [--device cpu] [--width 480] [--frames 96] [--codec MJPG] [--streams 2]
                               [--memory-frames 2000] [--memory-width 160] [--memory-detector none]

Speed: a video made of the shared group photos (``../shared/images``; synthetic noise frames when
absent) at ``--width`` px, each photo shifted a little from frame to frame (``--codec``). Side by
side in one process, every ``--rounds`` round timing each in turn:
- ``decode``: :func:`lrfer.video.read_frames` alone;
- ``model``: ``Recognizer.predict`` on the same frames already decoded, in the same steps;
- ``predict_video``: both, one step at a time (``streams=1``), decoding in the read-ahead thread
  while the model runs. Without the overlap it would take ``decode + model``;
- ``no read-ahead``: ``predict_video`` decoding in the model's thread (the read-ahead replaced by
  plain iteration);
- ``N streams``: ``predict_video(..., streams=N)`` (``--streams``), N steps of frames scored at once,
  with the calling thread's torch CPU threads shared among them (2 is the default on CPU).

Memory: ``lrfer predict VIDEO --detector none --out x.csv`` in a fresh process on a 160 px video of
``--memory-frames`` and 10x as many frames (``--memory-width``, ``--memory-detector``); prints each
process's own peak RSS (``VmHWM``: a child's ``ru_maxrss`` starts at the benchmark's own size).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMPORT_PEAK_RSS, SHARED, machine, run_main  # noqa: E402

import lrfer  # noqa: E402
from lrfer.recognizer import in_steps  # noqa: E402
import lrfer.video  # noqa: E402
from lrfer.video import read_frames  # noqa: E402

CHILD = IMPORT_PEAK_RSS + """
from lrfer.cli import main
code = main(sys.argv[1:])
print(f"PEAK {peak_rss_mb():.1f}", file=sys.stderr)
sys.exit(code)
"""


def source_frames(width: int) -> list[np.ndarray]:
    """The shared photos at ``width`` px and 16:9 (RGB), or four noise frames where they are absent."""
    height = width * 9 // 16
    photos = sorted((SHARED / "images").glob("*.jpg"))
    if not photos:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    frames = []
    for path in photos:
        img = lrfer.load_image(path)
        scaled = cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(scaled[:height]))
    return frames


def write_video(path: Path, sources: list[np.ndarray], frames: int, codec: str = "MJPG", fps: float = 25.0) -> Path:
    height, width = sources[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        sys.exit(f"this OpenCV build cannot write {codec} video")
    for i in range(frames):
        writer.write(np.roll(sources[(i // 8) % len(sources)], 2 * (i % 8), axis=1)[..., ::-1].copy())
    writer.release()
    return path


def speed(args: argparse.Namespace, folder: Path) -> None:
    rec = lrfer.load(device=args.device)
    video = write_video(folder / "speed.avi", source_frames(args.width), args.frames, args.codec)
    decoded = [pixels for _, _, pixels in read_frames(video)]

    def decode() -> None:
        for _ in read_frames(video):
            pass

    def model() -> None:
        for step in in_steps(decoded, rec.device, lambda array: array):
            rec.predict(step, streams=1)  # one step at a time, as predict_video(..., streams=1) scores

    def predict_video() -> None:
        for _ in rec.predict_video(video, streams=1):
            pass

    def without_read_ahead() -> None:
        real = lrfer.video.read_ahead
        lrfer.video.read_ahead = lambda items, depth: iter(items)  # decoding in the model's thread
        try:
            predict_video()
        finally:
            lrfer.video.read_ahead = real

    def on_streams() -> None:  # predict_video shares the caller's torch threads among the streams
        for _ in rec.predict_video(video, streams=args.streams):
            pass

    runs = {"decode": decode, "model": model, "predict_video": predict_video, "no read-ahead": without_read_ahead,
            f"{args.streams} streams": on_streams}
    predict_video()  # warm-up: weights, detector, thread pools
    model()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if rec.device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    per_frame = {name: statistics.median(values) / args.frames * 1000 for name, values in seconds.items()}
    print(f"\n{args.frames} frames of {args.width}x{args.width * 9 // 16} ({args.codec}), {rec.spec.name}, "
          f"detector auto, {rec.device}; median of {args.rounds} rounds")
    print(f"{'step':<16}{'ms/frame':>10}{'frames/s':>10}")
    for name, ms in per_frame.items():
        print(f"{name:<16}{ms:>10.2f}{1000 / ms:>10.1f}")
    serial = per_frame["decode"] + per_frame["model"]
    print(f"{'decode + model':<16}{serial:>10.2f}{1000 / serial:>10.1f}   (no overlap)")


def memory(args: argparse.Namespace, folder: Path) -> None:
    sources = source_frames(args.memory_width)
    print(f"\nlrfer predict VIDEO --detector {args.memory_detector}, {args.memory_width} px frames: peak RSS of the process")
    print(f"{'frames':>8}{'peak MB':>10}{'seconds':>9}{'rows':>8}")
    peaks = []
    for frames in (args.memory_frames, 10 * args.memory_frames):
        video = write_video(folder / f"memory-{frames}.avi", sources, frames)
        out = folder / f"memory-{frames}.csv"
        cmd = [sys.executable, "-c", CHILD, "predict", str(video), "--detector", args.memory_detector, "--quiet", "--out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        peak = float(proc.stderr.split("PEAK ")[1].split()[0])
        peaks.append(peak)
        rows = sum(1 for _ in out.open()) - 1
        print(f"{frames:>8}{peak:>10.1f}{time.perf_counter() - t0:>9.1f}{rows:>8}")
    print(f"growth from {args.memory_frames} to {10 * args.memory_frames} frames: {100 * (peaks[1] / peaks[0] - 1):+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--codec", default="MJPG", help="fourcc of the speed video: MJPG or mp4v (MPEG-4 Part 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=2, help="steps of frames scored at once in the last row")
    parser.add_argument("--memory-frames", type=int, default=2000, help="0: skip the memory part")
    parser.add_argument("--memory-width", type=int, default=160, help="frame width of the memory part's videos")
    parser.add_argument("--memory-detector", default="none", help="the memory part's --detector (auto: the whole pipeline)")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        speed(args, Path(tmp))
        if args.memory_frames:
            memory(args, Path(tmp))


if __name__ == "__main__":
    run_main(main)
