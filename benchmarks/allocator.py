"""CPU speed with glibc's default malloc options and with ``lrfer.keep_freed_memory()`` (opt-in).

"glibc defaults" is lrfer's default: no option set, but the adaptive thresholds raised by the block
that ``lrfer.load`` frees (``lrfer.allocator.raise_adaptive_thresholds``).

    python benchmarks/allocator.py [--rounds 6] [--what crops,photo,folder] [--folder-count 300]

Allocator options hold for a whole process, so each measurement is a fresh child process, the two
settings alternating round after round (the machine's drifting speed hits both alike). ``crops``:
``predict_crops`` of the default model on 1,024 48x48 crops (faces/s, median of 10 calls). ``photo``:
``predict`` on the shared group photos at 1920 px (``pipeline.photos``), one photo per call (ms per photo, median of 3
passes over the four photos). ``folder``: ``lrfer predict`` on a folder of the shared photos at 480
px (``predict_folder.write_photos``) (photos/s, models loaded and workers started included). Printed: the
medians of each setting and of the per-round ratio.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine  # noqa: E402
from predict_folder import write_photos  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, statistics, sys, time
sys.path[:0] = [{root!r}, {benchmarks!r}]
import lrfer
what, keep, folder, count = sys.argv[1], sys.argv[2] == "keep", sys.argv[3], int(sys.argv[4])
if keep:
    assert lrfer.keep_freed_memory(), "glibc malloc options not set (not glibc, or set by the environment)"
if what == "crops":
    from throughput import crops
    rec = lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)
    data = crops(1024)
    rec.predict_crops(data, batch_size=1024)
    rates = []
    for _ in range(10):
        start = time.perf_counter()
        rec.predict_crops(data, batch_size=1024)
        rates.append(1024 / (time.perf_counter() - start))
    print(statistics.median(rates))
elif what == "folder":
    from lrfer.cli import main
    start = time.perf_counter()
    assert main(["predict", folder, "--out", os.path.join(folder, "faces.csv"), "--quiet", "--device", "cpu"]) == 0
    print(count / (time.perf_counter() - start))
else:
    from pipeline import decode, photos
    rec = lrfer.load("gmenet-fer2013-16px", device="cpu")
    images = decode(photos(1920))
    rec.predict(images[0])
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for image in images:
            rec.predict(image)
        passes.append((time.perf_counter() - start) / len(images) * 1e3)
    print(statistics.median(passes))
"""


def measure(what: str, keep: bool, folder: str, count: int) -> float:
    code = CHILD.format(root=str(ROOT), benchmarks=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", code, what, "keep" if keep else "default", folder, str(count)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--what", default="crops,photo,folder", help="comma list of crops, photo, folder")
    parser.add_argument("--folder-count", type=int, default=300, help="photos in the folder for `folder`")
    args = parser.parse_args()
    print(f"# machine: {machine()}\n")
    print("| measure | glibc defaults | keep_freed_memory() | per-round ratio: median | range |")
    print("| --- | ---: | ---: | ---: | --- |")
    tmp = tempfile.TemporaryDirectory()
    for what in args.what.split(","):
        if what != "crops" and not (SHARED / "images").is_dir():
            print(f"| {what} | needs the shared photos at {SHARED / 'images'} | | | |")
            continue
        if what == "folder":
            write_photos(Path(tmp.name), 480, args.folder_count)
        default, kept = [], []
        for i in range(args.rounds):
            order = [(False, default), (True, kept)] if i % 2 == 0 else [(True, kept), (False, default)]
            for keep, values in order:
                values.append(measure(what, keep, tmp.name, args.folder_count))
        # Rates (higher is better) and ms per photo (lower is better): the ratio is "how much faster".
        ratios = [d / k for d, k in zip(default, kept)] if what == "photo" else [k / d for d, k in zip(default, kept)]
        unit = {"crops": "faces/s, predict_crops, default model", "photo": "ms per 1920 px photo, predict, auto",
                "folder": f"photos/s, lrfer predict, {args.folder_count} photos of 480 px"}[what]
        print(f"| {unit} | {statistics.median(default):,.1f} | {statistics.median(kept):,.1f} | "
              f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f} |", flush=True)


if __name__ == "__main__":
    main()
