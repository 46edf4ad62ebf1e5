"""Photos/s of ``lrfer predict`` on a folder of real photos: the streaming loader end to end.

    python benchmarks/predict_folder.py [--width 480] [--vary-width 0] [--count 2000] [--device cpu|cuda|all]
                                        [--image-batch 16,64] [--streams 1,2] [--workers 4] [--rounds 1]
                                        [--cuda-graphs 0,1]

Writes ``count`` JPEGs (the shared group photos resized to ``width`` px, each file distinct on disk)
into a temporary folder (``--vary-width PX``: widths spread over PX pixels, a folder of many
photo sizes), then runs ``lrfer predict FOLDER --out x.csv`` in this process for each
setting (each ``--image-batch`` with each ``--streams`` and each ``--cuda-graphs``, ``--rounds`` times
in turn; ``--cuda-graphs 0,1``: :mod:`lrfer.graphs` off and on, their recording in the warm-up run): decoding in
worker processes, detection, alignment and classification in the main one (with ``--streams`` N,
N image batches at once on threads and CUDA streams of their own), rows written to CSV. A warm-up
run on a few files comes first (model load, CUDA start-up); the timed run includes loading the
models, as a user's command does. ``--profile`` prints where the
main process spends the last timed run (cProfile: waiting for decoded batches shows as the data
loader's ``__next__``); ``--stages`` prints the seconds of every timed run in each stage of
:data:`PREDICT_STAGES` (synchronised timers), "other" being the rest (waiting for decoded batches,
writing rows, starting the workers): where a first run in the process loses its time against the
same run again; runs with more than one stream print none (their steps overlap, and a synchronised
timer would make them wait for each other). ``--torch-profile`` runs the last timed run under ``torch.profiler`` and prints the
main process's operators and CUDA runtime calls by self CPU time and, on CUDA, the kernels by GPU
time and the share of the run the GPU spent in kernels: whether the command waits on the GPU or the
GPU on the host.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine  # noqa: E402
from pipeline import timed_calls  # noqa: E402

from lrfer import graphs, recognizer  # noqa: E402
from lrfer.cli import main as lrfer_main  # noqa: E402

#: Stages of ``Recognizer.predict`` for ``--stages``: (label, owner, attribute); none calls another.
PREDICT_STAGES = (
    ("load", recognizer, "load_image"),
    ("upload", recognizer, "to_device_tensors"),
    ("detect", recognizer.Recognizer, "detect"),
    ("align", recognizer.Recognizer, "align"),
    ("classify", recognizer.Recognizer, "classify"),
    ("results", recognizer.Recognizer, "_to_faces"),
)

WARMUP_FILES = 32


def write_photos(folder: Path, width: int, count: int, vary: int = 0) -> None:
    """``count`` JPEGs of the shared photos in turn, ``width`` px wide, or with ``vary`` > 0 of widths
    spread over ``width .. width + vary - 1`` (a folder of photos of many sizes)."""
    sources = [cv2.imread(str(path)) for path in sorted((SHARED / "images").glob("group*.jpg"))]
    resized: dict[tuple[int, int], object] = {}
    for i in range(count):
        n, w = i % len(sources), width + (i * 7919) % vary if vary else width
        if (n, w) not in resized:
            h0, w0 = sources[n].shape[:2]
            resized[n, w] = cv2.resize(sources[n], (w, round(h0 * w / w0)), interpolation=cv2.INTER_AREA)
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{i:06d}.jpg"), resized[n, w], [cv2.IMWRITE_JPEG_QUALITY, 92])


def run(folder: Path, out: Path, device: str, image_batch: int, workers: int | None,
        profiler: cProfile.Profile | None = None, streams: int = 1) -> tuple[float, int]:
    argv = ["predict", str(folder), "--out", str(out), "--device", device, "--quiet", "--image-batch", str(image_batch),
            "--streams", str(streams)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    code = lrfer_main(argv)
    if profiler is not None:
        profiler.disable()
    if code != 0:
        sys.exit(f"lrfer {' '.join(argv)} failed")
    seconds = time.perf_counter() - start
    return seconds, sum(1 for _ in out.open()) - 1


def torch_profiler(device: str) -> torch.profiler.profile:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities)


def device_busy_us(events) -> float:
    """Microseconds the device spent in kernels and copies, from ``key_averages()``: the device events'
    own time, as the profiler's table sums its "Self CUDA time total". A host operator's
    ``self_device_time_total`` repeats the time of the kernels it launched (kineto links each kernel
    to its operator), so a sum over every event counts each kernel twice."""
    from torch.autograd import DeviceType

    return sum(getattr(e, SELF_DEVICE_TIME) for e in events
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False))


#: The profiler's own-device-time attribute (and table column): ``self_device_time_total`` since torch
#: 2.4 unified CUDA and other devices, ``self_cuda_time_total`` before.
SELF_DEVICE_TIME = ("self_device_time_total" if hasattr(torch.autograd.profiler_util.FunctionEvent,
                                                         "self_device_time_total") else "self_cuda_time_total")


def print_torch_profile(trace: torch.profiler.profile, device: str, seconds: float) -> None:
    """The main process's top host-side events and, on CUDA, the kernels' share of the run."""
    events = trace.key_averages()
    print(f"\n## torch.profiler, last run ({device}; profiling slowed it): host time by operator and CUDA runtime call\n")
    print(events.table(sort_by="self_cpu_time_total", row_limit=25))
    if not device.startswith("cuda"):
        return
    gpu_us = device_busy_us(events)
    print(f"GPU busy in kernels: {gpu_us / 1e6:.2f} s of the {seconds:.2f} s run ({100 * gpu_us / 1e6 / seconds:.0f} %)\n")
    print(events.table(sort_by=SELF_DEVICE_TIME, row_limit=15))


def print_stages(rows: list[tuple[str, int, int, dict[str, float], float]]) -> None:
    """Seconds per stage of each timed run of one stream, in the order run: (device, image batch,
    streams, seconds per stage label, total seconds)."""
    print("\n## seconds per stage of each run of one stream (synchronised timers)\n")
    print("| device | image batch | " + " | ".join(label for label, _, _ in PREDICT_STAGES) + " | other | total |")
    print("| --- | ---: |" + " ---: |" * (len(PREDICT_STAGES) + 2))
    for device, image_batch, streams, spent, seconds in rows:
        if streams == 1:
            cells = " | ".join(f"{spent.get(label, 0.0):.2f}" for label, _, _ in PREDICT_STAGES)
            print(f"| {device} | {image_batch} | {cells} | {seconds - sum(spent.values()):.2f} | {seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--vary-width", type=int, default=0, metavar="PX",
                        help="photo widths spread over WIDTH .. WIDTH+PX-1 (a folder of many sizes); 0: all WIDTH")
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cuda when present)")
    parser.add_argument("--image-batch", default="16,64", help="comma list of --image-batch values")
    parser.add_argument("--streams", default="1", help="comma list of --streams values (image batches scored at once)")
    parser.add_argument("--rounds", type=int, default=1, help="every setting this many times, in turn")
    parser.add_argument("--cuda-graphs", default=None, help="comma list of 0 (off) and 1 (on): lrfer.graphs for the "
                        "run (default: as LRFER_CUDA_GRAPHS says)")
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: lrfer's default)")
    parser.add_argument("--profile", action="store_true", help="profile the main process in the last timed run")
    parser.add_argument("--stages", action="store_true", help="seconds per stage of predict in every timed run")
    parser.add_argument("--torch-profile", action="store_true", help="torch.profiler over the last timed run: "
                        "operators and CUDA runtime calls by host time, kernels by GPU time")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"# machine: {machine()}\n")
    widths = f"{args.width}-{args.width + args.vary_width - 1}" if args.vary_width else f"{args.width}"
    print(f"`lrfer predict` on {args.count:,} photos {widths} px wide (the shared group photos, 3-4 faces each)\n")
    print("| device | image batch | streams | CUDA graphs | workers | seconds | photos/s | faces |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        folder, warm = Path(tmp) / "photos", Path(tmp) / "warm"
        write_photos(folder, args.width, args.count, args.vary_width)
        write_photos(warm, args.width, WARMUP_FILES)
        graph_settings = [g == "1" for g in args.cuda_graphs.split(",")] if args.cuda_graphs else [graphs.enabled()]
        settings = [(d, int(b), int(n), g) for _ in range(args.rounds) for d in devices for b in args.image_batch.split(",")
                    for n in args.streams.split(",") for g in graph_settings]
        profiler = cProfile.Profile() if args.profile else None
        stage_rows = []
        for i, (device, image_batch, streams, graphed) in enumerate(settings):
            graphs.enable(graphed)
            run(warm, Path(tmp) / "warm.csv", device, image_batch, args.workers, streams=streams)
            last = i == len(settings) - 1
            staged = (timed_calls(torch.device(device), list(PREDICT_STAGES)) if args.stages and streams == 1
                      else contextlib.nullcontext({}))
            traced = torch_profiler(device) if args.torch_profile and last else contextlib.nullcontext()
            with staged as spent, traced as trace:
                seconds, faces = run(folder, Path(tmp) / "out.csv", device, image_batch, args.workers,
                                     profiler if last else None, streams)
            workers = "default" if args.workers is None else args.workers
            print(f"| {device} | {image_batch} | {streams} | {'on' if graphed else 'off'} | {workers} | {seconds:.2f} "
                  f"| {args.count / seconds:,.0f} "
                  f"| {faces:,} |", flush=True)
            stage_rows.append((f"{device}, graphs" if graphed else device, image_batch, streams, dict(spent), seconds))
    if args.stages:
        print_stages(stage_rows)
    if trace is not None:
        print_torch_profile(trace, settings[-1][0], seconds)
    if profiler is not None:
        print(f"\n## main process, last run ({settings[-1][0]}, image batch {settings[-1][1]})\n")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
