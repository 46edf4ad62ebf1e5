"""Peak memory and time of one ``predict`` call on one very large crowd photo.

    python benchmarks/photo_memory.py [--rows 24] [--cols 20] [--tile 240x160] [--detector auto,mtcnn] [--min-face 20,8]

The photo is a mosaic of the four shared group photos, each shrunk to ``--tile`` (24 x 20 tiles of
240x160: 4800x3840 px, about 1,300 faces of 15-25 px). Each detector runs in a fresh process, which
prints its peak RSS above what it held after loading the model, the seconds of the call and the
faces found. ``--threads`` sets torch's threads in those processes; ``--min-face`` a comma list
(one process per detector and value: below 12 px MTCNN searches an enlarged level of the photo).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMPORT_PEAK_RSS, SHARED, machine, print_child_row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import time
sys.path.insert(0, {root!r})
import cv2, numpy as np, torch
import lrfer
from lrfer.io import load_image

detector, rows, cols, width, height, threads, min_face = sys.argv[1], *map(int, sys.argv[2:8])
torch.set_num_threads(threads)
tiles = [cv2.resize(load_image(f"{images}/group{{i}}.jpg"), (width, height), interpolation=cv2.INTER_AREA)
         for i in (1, 2, 3, 4)]
mosaic = np.concatenate([np.concatenate([tiles[(r * cols + c) % 4] for c in range(cols)], axis=1)
                         for r in range(rows)], axis=0)
rec = lrfer.load(device="cpu", detector=detector, min_face=min_face)
rec.predict(np.zeros((64, 64, 3), np.uint8))
base = peak_rss_mb()
start = time.perf_counter()
faces = rec.predict(mosaic)
seconds = time.perf_counter() - start
peak = peak_rss_mb()
print(f"| {{detector}} | {{min_face}} | {{mosaic.shape[1]}}x{{mosaic.shape[0]}} | {{len(faces)}} | {{seconds:.1f}} | {{peak - base:,.0f}} |")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--tile", default="240x160", help="WIDTHxHEIGHT of each shrunk photo")
    parser.add_argument("--detector", default="auto,mtcnn", help="comma-separated detectors, one process each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-face", default="20", help="comma-separated min_face values, one process each")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    width, height = (int(v) for v in args.tile.lower().split("x"))
    child = IMPORT_PEAK_RSS + CHILD.format(root=str(ROOT), images=str(SHARED / "images"))
    print(f"# machine: {machine()}\n")
    print("| detector | min_face | photo | faces | seconds | peak MB above the loaded model |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for detector in args.detector.split(","):
        for min_face in args.min_face.split(","):
            command = [sys.executable, "-c", child, detector, str(args.rows), str(args.cols), str(width), str(height),
                       str(args.threads), min_face]
            print_child_row(command, f"{detector} (min_face {min_face})")


if __name__ == "__main__":
    main()
