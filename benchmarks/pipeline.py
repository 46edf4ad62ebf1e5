"""End-to-end ms per photo (decode + detect + align + classify) on the shared group photos.

    python benchmarks/pipeline.py [--model NAME] [--widths 1920,960,480] [--device cpu|cuda|all] [--batch 1,16]
                                  [--detector auto,blazeface,mtcnn] [--min-face 20] [--precision auto,bf16] [--tta off,on]

Photos from ``../shared/images`` resized to each width; each stage timed separately (median of
several runs after warm-up), both one photo per call (every photo in turn, the mean per photo) and a
batch of photos per call (the batched path detects and aligns all photos of the batch together).
Also prints the faces found per photo. ``--crowd 320,240,160`` adds 1920x1080 crowd scenes tiled
from the same photos (about 66, 110 and 220 faces found by ``auto``), with how many of the faces the
detector finds in the full-size photos it finds in the tiles. ``--detect-stages`` adds, for
each width at one photo per call, where detection spends its time (the functions of
``lrfer.faces`` named in :data:`DETECT_STAGES`, timed by wrappers; "other" is the rest of detect).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lrfer  # noqa: E402
from _common import SHARED, machine, run_main, sync  # noqa: E402
from lrfer.faces import blazeface, mtcnn  # noqa: E402
from lrfer.io import _decode_cv2, load_image, to_device_tensors  # noqa: E402

#: Detection stages for ``--detect-stages``: (label, owner, attribute). None of them calls another.
DETECT_STAGES = (
    ("BlazeFace", blazeface.BlazeFace, "detect"),
    ("P-Net pyramid resize", mtcnn.MipVolume, "resized"),
    ("P-Net", mtcnn.PNet, "forward"),  # run_pnet on CPU, propose_padded's canvases elsewhere: both call it
    ("R-/O-Net crops", mtcnn, "crop_boxes"),
    ("R-/O-Net", mtcnn, "run_chunked"),
    ("MTCNN NMS", mtcnn, "batched_nms"),
)


def photos(width: int) -> list[bytes]:
    """The shared photos resized to ``width`` px, JPEG-encoded (decoding is part of the pipeline)."""
    out = []
    for path in sorted((SHARED / "images").glob("group*.jpg")):
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        img = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    return out


def crowd(tile_width: int, size: tuple[int, int] = (1080, 1920)) -> tuple[bytes, list[tuple[int, float, int, int]]]:
    """A crowd scene: the shared photos, ``tile_width`` px wide, tiled row by row into a gray
    ``size`` frame as long as whole tiles fit, JPEG-encoded; and its tiles: (photo index in sorted
    order, scale, left, top) for each."""
    sources = [cv2.imread(str(p)) for p in sorted((SHARED / "images").glob("group*.jpg"))]
    canvas = np.full((*size, 3), 128, np.uint8)
    top, n, placed = 0, 0, []
    while True:
        tiles = []
        for _ in range(size[1] // tile_width):
            src = sources[n % len(sources)]
            tiles.append((n % len(sources), cv2.resize(src, (tile_width, round(src.shape[0] * tile_width / src.shape[1])),
                                                       interpolation=cv2.INTER_AREA)))
            n += 1
        height = max(t.shape[0] for _, t in tiles)
        if top + height > size[0]:
            return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes(), placed
        for i, (source, tile) in enumerate(tiles):
            canvas[top : top + tile.shape[0], i * tile_width : (i + 1) * tile_width] = tile
            placed.append((source, tile_width / sources[source].shape[1], i * tile_width, top))
        top += height


def full_size_faces(rec: "lrfer.Recognizer") -> list[torch.Tensor]:
    """The boxes (K, 4) ``rec`` finds in each full-size shared photo, in :func:`crowd`'s photo order."""
    return [torch.tensor([f.box for f in rec.predict(str(p))], dtype=torch.float32).view(-1, 4)
            for p in sorted((SHARED / "images").glob("group*.jpg"))]


def crowd_recall(reference: list[torch.Tensor], tiles: list[tuple[int, float, int, int]], found: list) -> tuple[int, int, int]:
    """(reference faces, found faces matching one, found faces matching none) for a crowd scene:
    ``reference`` (:func:`full_size_faces`) scaled into the scene's ``tiles`` (:func:`crowd`); a
    match is an IoU above 0.4."""
    from lrfer.faces.mtcnn import pairwise_overlap

    truth = torch.cat([reference[source] * scale + torch.tensor([left, top, left, top]) for source, scale, left, top in tiles])
    boxes = torch.tensor([f.box for f in found], dtype=torch.float32).view(-1, 4)
    iou = pairwise_overlap(truth, boxes)
    best = iou.max(dim=0).values if len(truth) else torch.zeros(len(boxes))
    return len(truth), int((best > 0.4).sum()), int((best <= 0.4).sum())


def decode(jpegs: list[bytes]) -> list[np.ndarray]:
    """RGB arrays, decoded as ``lrfer.load_image`` decodes files (no OpenCV colour conversion: its
    thread pool would compete with torch's threads for the cores, about 20 ms per 1920 px photo)."""
    return [_decode_cv2(np.frombuffer(j, np.uint8)) for j in jpegs]


def stage_times(rec: "lrfer.Recognizer", calls: list[list[bytes]], runs: int) -> dict[str, float]:
    """Median over runs of the seconds per stage spent on ``calls`` (each a list of JPEGs handled in one call)."""
    samples: dict[str, list[float]] = {"decode": [], "upload": [], "detect": [], "align": [], "classify": []}
    for i in range(runs + 1):
        spent = np.zeros(len(samples))
        for jpegs in calls:
            spent += call_times(rec, jpegs)
        if i:  # first run is warm-up
            for k, v in zip(samples, spent):
                samples[k].append(float(v))
    return {k: float(np.median(v)) for k, v in samples.items()}


def call_times(rec: "lrfer.Recognizer", jpegs: list[bytes]) -> np.ndarray:
    """Seconds per stage (decode, upload, detect, align, classify) of one call on ``jpegs``."""
    device = rec.device
    t = [time.perf_counter()]
    arrays = [load_image(a) for a in decode(jpegs)]
    t.append(time.perf_counter())
    tensors = to_device_tensors(arrays, device)
    sync(device)
    t.append(time.perf_counter())
    with torch.inference_mode():
        detections = rec.detector.detect(tensors)
        sync(device)
        t.append(time.perf_counter())
        faces48 = rec.align(tensors, detections)
        sync(device)
        t.append(time.perf_counter())
    rec.classify(faces48)
    sync(device)
    t.append(time.perf_counter())
    return np.diff(t)


@contextlib.contextmanager
def timed_calls(device: torch.device, stages: list[tuple[str, object, str]]) -> Iterator[dict[str, float]]:
    """Seconds spent in each ``(label, owner, attribute)`` function while the block runs (inclusive,
    synchronised), the functions wrapped by timers and restored after."""
    spent: dict[str, float] = defaultdict(float)
    originals = [(owner, name, inspect.getattr_static(owner, name)) for _, owner, name in stages]

    def timer(label: str, fn):
        def timed(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            spent[label] += time.perf_counter() - start
            return out
        return timed

    for (label, owner, name), (_, _, fn) in zip(stages, originals):
        static = isinstance(fn, staticmethod)  # keep a static method static (it gets no self)
        wrapped = timer(label, fn.__func__ if static else fn)
        setattr(owner, name, staticmethod(wrapped) if static else wrapped)
    try:
        yield spent
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def print_detect_stages(rec: "lrfer.Recognizer", widths: list[int], runs: int) -> None:
    """ms per photo in each of :data:`DETECT_STAGES`, one photo per call, for each width (means
    over ``runs`` runs after a warm-up); "other" is the rest of the detector's time."""
    labels = [label for label, _, _ in DETECT_STAGES]
    print("| width | detect | " + " | ".join(labels) + " | other |")
    print("| ---: |" + " ---: |" * (len(labels) + 2))
    for width in widths:
        calls = [[jpeg] for jpeg in photos(width)]
        stage_times(rec, calls, 1)  # warm-up, untimed
        with timed_calls(rec.device, [("detect", type(rec.detector), "detect"), *DETECT_STAGES]) as spent:
            for _ in range(runs):
                for jpegs in calls:
                    call_times(rec, jpegs)
        ms = {label: 1000 * seconds / runs / len(calls) for label, seconds in spent.items()}
        cells = " | ".join(f"{ms.get(label, 0.0):.1f}" for label in labels)
        print(f"| {width} | {ms['detect']:.1f} | {cells} | {ms['detect'] - sum(ms.get(label, 0.0) for label in labels):.1f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the manifest default")
    parser.add_argument("--widths", default="1920,960,480")
    parser.add_argument("--device", default="all")
    parser.add_argument("--batch", default="1,16", help="photos per call")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-face", type=int, default=20)
    parser.add_argument("--detector", default="auto,blazeface,mtcnn", help="comma-separated detectors, side by side")
    parser.add_argument("--crowd", default="", help="tile widths (e.g. 320,240,160): also time 1920x1080 crowd scenes "
                        "tiled from the shared photos (whole tiles only), one scene per call")
    parser.add_argument("--precision", default="auto", help="comma-separated precisions (auto, fp32, bf16, fp16), side "
                        "by side; bf16 also runs MTCNN's P-Net in bf16")
    parser.add_argument("--tta", default="off", help="comma-separated off,on side by side: on = lrfer.load(..., tta=True), "
                        "each face's mirror image classified too")
    parser.add_argument("--detect-stages", action="store_true", help="also print ms per photo in each detection "
                        "stage (BlazeFace, P-Net's pyramid, P-Net, R-/O-Net crops and networks, NMS), one photo per call")
    args = parser.parse_args()
    if "none" in args.detector.split(","):
        parser.error("--detector none: this benchmark times detection; time crops with benchmarks/throughput.py")
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    torch.set_num_threads(os.cpu_count() or 1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    widths = [int(w) for w in args.widths.split(",")]
    print(f"# machine: {machine()}\n")
    if not set(args.tta.split(",")) <= {"off", "on"}:
        parser.error(f"--tta {args.tta}: a comma-separated list of off and on")
    runs = [(d, name, p, t) for d in devices for name in args.detector.split(",") for p in args.precision.split(",")
            for t in args.tta.split(",")]
    for dev, detector, precision, tta in runs:
        rec = lrfer.load(args.model, device=dev, detector=detector, min_face=args.min_face, precision=precision,
                         tta=tta == "on")
        print(f"## {dev}, {rec.spec.name}, detector={detector}, min_face={args.min_face}, precision={precision}, "
              f"tta={tta}: ms per photo\n")
        print("| width | photos/call | faces per photo | decode | upload | detect | align | classify | total ms/photo | photos/s |")
        print("| ---: | ---: | --- |" + " ---: |" * 7)
        for width in widths:
            base = photos(width)
            counts = [len(f) for f in rec.predict(decode(base))]
            for per_call in (int(b) for b in args.batch.split(",")):
                # One photo per call: every photo in turn; more: the photos repeated up to per_call, one call.
                calls = [base[i : i + 1] for i in range(len(base))] if per_call == 1 else [(base * (per_call // len(base) + 1))[:per_call]]
                photos_timed = sum(len(c) for c in calls)
                times = stage_times(rec, calls, args.runs)
                total = sum(times.values())
                cells = " | ".join(f"{1000 * v / photos_timed:.1f}" for v in times.values())
                print(f"| {width} | {per_call} | {counts} | {cells} | {1000 * total / photos_timed:.1f} | {photos_timed / total:.1f} |",
                      flush=True)
        recall: dict[int, tuple[int, int, int]] = {}
        tile_widths = [int(t) for t in args.crowd.split(",") if t]
        reference = full_size_faces(rec) if tile_widths else []
        for tile in tile_widths:
            jpeg, tiles = crowd(tile)
            scene = [jpeg]
            found = rec.predict(decode(scene))[0]
            recall[tile] = crowd_recall(reference, tiles, found)
            times = stage_times(rec, [scene], args.runs)
            cells = " | ".join(f"{1000 * v:.1f}" for v in times.values())
            print(f"| crowd of {tile} px tiles | 1 | [{len(found)}] | {cells} | {1000 * sum(times.values()):.1f} | {1 / sum(times.values()):.1f} |",
                  flush=True)
        print()
        for tile, (reference, matched, unmatched) in recall.items():
            print(f"Crowd of {tile} px tiles: {matched} of the {reference} faces found in the full-size photos, "
                  f"{unmatched} other detections.\n")
        if args.detect_stages and rec.detector is not None:
            print(f"### {dev}, detector={detector}: detection stages, ms per photo (one photo per call)\n")
            print_detect_stages(rec, widths, args.runs)


if __name__ == "__main__":
    run_main(main)
