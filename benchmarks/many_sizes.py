"""Resident memory of a long ``Recognizer.predict`` run over photos of many sizes, against one size.

    python benchmarks/many_sizes.py [--photos 400] [--every 100] [--widths 200,1600] [--fixed 1000x750] [--trim on,off]

The shared group photos resized to random widths in ``--widths`` and aspect ratios 0.5-2 (``random``),
or all to ``--fixed`` (``fixed``), scored by the default model on CPU, alternately one photo at a time
and in lists of 8. Each run is a fresh process; it prints its resident memory (``/proc/self/statm``)
after the loaded model's first call and every ``--every`` photos, and its seconds. ``--trim off``
replaces :func:`lrfer.allocator.trim_if_grown` with a no-op (as before it existed). Linux only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine, print_child_row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import cv2, numpy as np, torch
import lrfer
import lrfer.recognizer
from lrfer.allocator import resident_bytes
from lrfer.io import load_image

mode, trim, photos, every, low, high, fixed_w, fixed_h, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:10])
torch.set_num_threads(threads)
if trim == "off":
    lrfer.recognizer.trim_if_grown = lambda: False
rng = np.random.default_rng(1)
sources = [load_image(f"{images}/group{{i}}.jpg") for i in (1, 2, 3, 4)]


def photo(i):
    if mode == "fixed":
        width, height = fixed_w, fixed_h
    else:
        width = int(rng.integers(low, high + 1))
        height = max(64, int(width / rng.uniform(0.5, 2.0)))
    return cv2.resize(sources[i % 4], (width, height), interpolation=cv2.INTER_AREA)


rec = lrfer.load(device="cpu")
rec.predict(np.zeros((64, 64, 3), np.uint8))
figures = [resident_bytes() >> 20]
done = faces = 0
start = time.perf_counter()
while done < photos:
    count = 1 if (done // 8) % 2 == 0 else 8
    found = rec.predict([photo(done + j) for j in range(count)])
    faces += sum(len(f) for f in found)
    if (done + count) // every != done // every:
        figures.append(resident_bytes() >> 20)
    done += count
seconds = time.perf_counter() - start
print(f"| {{mode}} | {{trim}} | " + " | ".join(f"{{mb:,}}" for mb in figures) + f" | {{faces}} | {{seconds:.0f}} |")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="photos between two memory figures")
    parser.add_argument("--widths", default="200,1600", help="LOW,HIGH widths of the random photos")
    parser.add_argument("--fixed", default="1000x750", help="WIDTHxHEIGHT of the one-size run")
    parser.add_argument("--trim", default="on,off", help="comma-separated: trim_if_grown on, off (a no-op)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    low, high = args.widths.split(",")
    fixed_w, fixed_h = args.fixed.lower().split("x")
    child = CHILD.format(root=str(ROOT), images=str(SHARED / "images"))
    marks = [str(n) for n in range(args.every, args.photos + 1, args.every)]
    print(f"# machine: {machine()}\n")
    print("| photos | trim | MB after loading | " + " | ".join(f"MB after {n}" for n in marks) + " | faces | seconds |")
    print("| --- | --- | " + " | ".join(["---:"] * (len(marks) + 3)) + " |")
    for mode in ("random", "fixed"):
        for trim in args.trim.split(","):
            command = [sys.executable, "-c", child, mode, trim, str(args.photos), str(args.every), low, high,
                       fixed_w, fixed_h, str(args.threads)]
            print_child_row(command, f"{mode} (trim {trim})")


if __name__ == "__main__":
    main()
