"""The streaming loader of ``lrfer predict`` alone: decoding workers handing photos to the main process.

    python benchmarks/loader.py [--width 480] [--count 2000] [--image-batch 64] [--workers 2]
                                [--decode-batch 0,32] [--slot-bytes 0,1048576] [--score-ms 1.0]

Writes ``count`` JPEGs of the shared group photos (``width`` px wide) into a temporary folder, then
iterates :func:`lrfer.cli.iter_decoded` over them once per ``--decode-batch`` value, side by side in
this process. The consumer stands in for the models: it reads every page of each photo (as the
upload to a device does) and sleeps ``--score-ms`` per photo, so that the workers can run ahead.
``--decode-batch 0`` is the loader as it was before decode batches (stop 14): one worker decodes a
whole image batch and hands every photo over as its own tensor. ``--slot-bytes 0`` is the loader
as it was before reusable slots (stop 33): a new shared-memory segment per decode batch, which the
main process maps, faults in and frees. Printed per setting:

- the seconds until the first image batch (start-up included: the workers start and decode);
- the seconds for the whole folder and photos/s;
- the main thread's milliseconds per photo inside the loader (``next()``), after the first image
  batch: what receiving decoded photos costs the process that also drives the models;
- the largest decoding worker's peak resident memory (``VmHWM``, Linux), shared memory included.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine  # noqa: E402
from predict_folder import write_photos  # noqa: E402

from lrfer import cli  # noqa: E402
from lrfer.io import ImageFileDataset, ImageFiles, iter_image_files  # noqa: E402


def worker_peak_mb() -> float:
    """The largest peak RSS (``VmHWM``) among this process's live children, in MB (0 if unknown)."""
    peak = 0.0
    for child in multiprocessing.active_children():
        try:
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            pass
    return peak


def per_photo_tensors(files: ImageFiles, workers: int, image_batch: int) -> Iterator[list[tuple[int, Any]]]:
    """The loader before decode batches: a worker per image batch, a shared-memory tensor per photo."""
    from torch.utils.data import DataLoader

    loader = DataLoader(ImageFileDataset(files), batch_size=image_batch, num_workers=workers, collate_fn=list,
                        prefetch_factor=2 if workers else None)
    return ([(index, image if isinstance(image, str) else image.numpy()) for index, image in batch] for batch in loader)


def run(folder: Path, image_batch: int, workers: int, score_ms: float, decode_batch: int,
        slot_bytes: int) -> dict[str, float]:
    files = iter_image_files([folder])
    start = time.perf_counter()
    if decode_batch:
        cli.DECODE_BATCH, cli.DECODE_SLOT_BYTES = decode_batch, slot_bytes
        batches = cli.iter_decoded(files, workers, image_batch)
    else:
        batches = per_photo_tensors(files, workers, image_batch)
    step = next(batches)
    first = time.perf_counter() - start
    inside, after_first, peak = 0.0, 0, 0.0
    while step is not None:
        for _, image in step:
            np.asarray(image).reshape(-1)[::4096].sum()  # one byte per page: the pages are mapped in
        time.sleep(score_ms * len(step) / 1e3)
        peak = max(peak, worker_peak_mb())
        t0 = time.perf_counter()
        step = next(batches, None)
        inside += time.perf_counter() - t0
        after_first += len(step) if step is not None else 0
    total = time.perf_counter() - start
    return {"first": first, "total": total, "rate": len(files) / total,
            "inside_ms": 1e3 * inside / max(1, after_first), "worker_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--image-batch", type=int, default=64, help="photos per image batch (lrfer predict --image-batch)")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    parser.add_argument("--decode-batch", default=f"0,{cli.DECODE_BATCH}",
                        help="comma list of photos per worker batch; 0: the loader before decode batches")
    parser.add_argument("--slot-bytes", default=f"0,{cli.DECODE_SLOT_BYTES}",
                        help="comma list of bytes per photo of the workers' reusable slots; 0: a new segment per batch")
    parser.add_argument("--score-ms", type=float, default=1.0, help="the consumer's sleep per photo (stands in for the models)")
    parser.add_argument("--rounds", type=int, default=2, help="every setting this many times, alternating")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    print(f"# machine: {machine()}\n")
    print(f"{args.count:,} photos {args.width} px wide, image batch {args.image_batch}, {args.workers} workers, "
          f"consumer {args.score_ms} ms per photo\n")
    print("| decode batch | slot bytes per photo | first image batch s | total s | photos/s | main thread in loader, ms/photo | worker peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    slot_sizes = [int(v) for v in args.slot_bytes.split(",")]
    settings = [(d, b) for d in (int(v) for v in args.decode_batch.split(",")) for b in (slot_sizes if d else [0])]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        write_photos(folder, args.width, args.count)
        for _ in range(args.rounds):
            for decode_batch, slot_bytes in settings:
                r = run(folder, args.image_batch, args.workers, args.score_ms, decode_batch, slot_bytes)
                print(f"| {decode_batch or 'before: a tensor per photo'} | {slot_bytes or 'no slots'} | {r['first']:.2f} | "
                      f"{r['total']:.2f} | {r['rate']:,.0f} | {r['inside_ms']:.3f} | {r['worker_mb']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
