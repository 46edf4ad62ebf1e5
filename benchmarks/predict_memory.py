"""Peak memory of ``lrfer predict`` on a folder of 10k vs 100k images (must stay flat).

    python benchmarks/predict_memory.py [--sizes 10000,100000] [--detector none] [--workers 2] [--streams 1,2]

Writes N small synthetic face JPEGs into a temporary folder, runs ``lrfer predict FOLDER --out
x.csv`` in a fresh process for each N, and prints that process's peak RSS (and its decoding
workers'), wall time and rows written; ``--streams`` runs each size with each number of image
batches scored at once (default: the command's own). ``--detector none`` scores the files as face crops (the
streaming loader, classification and CSV writer are what is measured); ``--detector mtcnn`` runs
the full pipeline on 160x160 images.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMPORT_PEAK_RSS, machine  # noqa: E402

# The workers' peak: ru_maxrss of the waited-for children, which fork (no exec) started from this
# process, so theirs is their own peak (shared pages included), as VmHWM would give.
CHILD = IMPORT_PEAK_RSS + """
import resource
from lrfer.cli import main
code = main(sys.argv[1:])
me = peak_rss_mb()
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"PEAK {me:.1f} {kids:.1f}", file=sys.stderr)
sys.exit(code)
"""


def write_images(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(64)]
    encoded = [cv2.imencode(".jpg", t)[1].tobytes() for t in tiles]
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}.jpg").write_bytes(encoded[i % len(encoded)])


def run(folder: Path, out: Path, args: argparse.Namespace, streams: str) -> tuple[float, float, float, int]:
    cmd = [sys.executable, "-c", CHILD, "predict", str(folder), "--out", str(out), "--detector", args.detector,
           "--quiet", "--batch-size", str(args.batch_size)]
    if streams:
        cmd += ["--streams", streams]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    me, kids = (float(v) for v in proc.stderr.split("PEAK ")[1].split()[:2])
    rows = sum(1 for _ in out.open()) - 1
    return me, kids, seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--detector", default="none")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--streams", default="", help="comma list of --streams values (default: the command's)")
    args = parser.parse_args()
    size = 48 if args.detector == "none" else 160
    print(f"# machine: {machine()}\n")
    print("| images | streams | main peak RSS MB | worker peak RSS MB | seconds | images/s | rows |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "images"
            folder.mkdir()
            write_images(folder, n, size)
            for streams in args.streams.split(","):
                me, kids, seconds, rows = run(folder, Path(tmp) / "out.csv", args, streams)
                print(f"| {n:,} | {streams or 'default'} | {me:,.0f} | {kids:,.0f} | {seconds:.1f} | {n / seconds:,.0f} "
                      f"| {rows:,} |", flush=True)


if __name__ == "__main__":
    main()
