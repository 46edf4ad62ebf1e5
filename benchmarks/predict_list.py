"""Photos/s of ``Recognizer.predict`` on a list of files, one step at a time against several at once.

    python benchmarks/predict_list.py [--width 480] [--count 300] [--device cpu|cuda] [--streams 1,auto] [--rounds 3]

Writes ``count`` JPEGs (the shared group photos resized to ``width`` px, as ``predict_folder.py``
writes them) into a temporary folder, loads the default model once, then times ``rec.predict(paths,
streams=N)`` for each ``--streams`` in turn (``auto``: ``streams=None``, the default), ``--rounds`` times: decoding in the calling thread, the
steps (at most 32 photos on CPU, evened out: 30 for 300 photos on 2 streams) scored N at once on threads of their own, the caller's torch threads shared
among them. A warm-up call on a few files comes first. Also says whether each setting found the same
faces and labels as the first.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine, run_main, sync  # noqa: E402
from predict_folder import write_photos  # noqa: E402

import lrfer  # noqa: E402
from lrfer.overlap import auto_streams  # noqa: E402


def labels(results: list[list[lrfer.Face]]) -> list[list[str]]:
    return [[face.label for face in faces] for faces in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--streams", default="1,auto", help="comma list of numbers or auto, timed in turn in each round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    settings: list[int | None] = [None if s == "auto" else int(s) for s in args.streams.split(",")]
    rec = lrfer.load(device=args.device)
    print(f"# machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        write_photos(Path(tmp), args.width, args.count)
        paths = sorted(str(p) for p in Path(tmp).rglob("*.jpg"))
        rec.predict(paths[:32])  # warm-up
        seconds: dict[int | None, list[float]] = {s: [] for s in settings}
        found: dict[int | None, list[list[str]]] = {}
        for _ in range(args.rounds):
            for streams in settings:
                start = time.perf_counter()
                results = rec.predict(paths, streams=streams)
                sync(rec.device)
                seconds[streams].append(time.perf_counter() - start)
                found.setdefault(streams, labels(results))
    first = found[settings[0]]
    print(f"`rec.predict` on {args.count} photos of {args.width} px, {rec.spec.name}, device {rec.device}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| streams | seconds per round | photos/s (best) | same faces and labels |")
    print("| ---: | --- | ---: | --- |")
    for streams in settings:
        runs = ", ".join(f"{s:.2f}" for s in seconds[streams])
        label = f"auto ({auto_streams(rec.device)})" if streams is None else streams
        print(f"| {label} | {runs} | {args.count / min(seconds[streams]):,.1f} | {found[streams] == first} |")


if __name__ == "__main__":
    run_main(main)
