"""What a new input shape costs the first time: ``predict`` on steps of a number of photos new to the process.

    python benchmarks/first_use.py [--device cuda] [--width 480] [--steps 64,32,256,192,96] [--gpu-path-on-cpu]

On CUDA, cuDNN makes an execution plan for each new input shape of a convolution, once per process
(:mod:`lrfer.shapes` pads batches to a few sizes so that a folder brings few new shapes). The number
of photos in a step sets the batch of BlazeFace, P-Net and (through the faces found) R-Net, O-Net and
the expression model. For each number of photos in ``--steps``, in order, this times ``predict`` on
a step of that many photos (the shared group photos in turn, ``--width`` px wide) the first time
and again right after (synchronised), and counts the convolution shapes that the first call was
the first to use (``torch.nn.functional.conv2d`` wrapped). "ms per new shape" is the difference
divided by that count: the first-use cost per shape on this machine. A first call on 8 photos pays
the start-up (CUDA context, cuDNN and cuBLAS handles) before the timed steps. On CPU the two calls
should take about the same time (no plans); ``--gpu-path-on-cpu`` runs the GPU's code path there
(padded batches, GPU step sizes) to count the shapes a GPU would meet, without a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine, run_main, sync  # noqa: E402
from pipeline import decode, photos  # noqa: E402

import lrfer  # noqa: E402
from lrfer import recognizer  # noqa: E402
from lrfer.faces import align  # noqa: E402


@contextlib.contextmanager
def new_conv_shapes() -> Iterator[list[int]]:
    """A list for counts of convolution shapes (input, weight, stride, padding, dilation, groups,
    dtype) used for the first time while the block runs: each new shape adds one to the list's last
    entry (append a 0 to start a count)."""
    seen: set[tuple] = set()
    counts: list[int] = []
    original = F.conv2d

    def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        key = (tuple(x.shape), tuple(weight.shape), str(stride), str(padding), str(dilation), groups, x.dtype)
        if key not in seen:
            seen.add(key)
            if counts:
                counts[-1] += 1
        return original(x, weight, bias, stride, padding, dilation, groups)

    F.conv2d = conv2d
    try:
        yield counts
    finally:
        F.conv2d = original


def timed_predict(rec: lrfer.Recognizer, step: list) -> float:
    sync(rec.device)
    start = time.perf_counter()
    rec.predict(step)
    sync(rec.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--steps", default="64,32,256,192,96", help="photos per call, in the order run")
    parser.add_argument("--gpu-path-on-cpu", action="store_true", help="on CPU, the GPU's code path and step sizes")
    args = parser.parse_args()
    if args.gpu_path_on_cpu:
        align.cpu_tuned = lambda tensor: False
        gpu_limits = recognizer.step_limits
        recognizer.step_limits = lambda device, enlargement=1.0: gpu_limits(torch.device("cuda"), enlargement)
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    sources = decode(photos(args.width))  # as the pipeline benchmark decodes them
    rec = lrfer.load(device=args.device)
    print(f"# machine: {machine()}\n")
    path = ", the GPU's code path" if args.gpu_path_on_cpu else ""
    print(f"`predict` on steps of {args.width} px photos ({rec.spec.name}, {args.device}{path}, detector auto), "
          "each number of photos new to the process\n")
    print("| photos per call | new conv shapes | first call ms | again ms | ms per new shape |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with new_conv_shapes() as counts:
        timed_predict(rec, [sources[i % len(sources)] for i in range(8)])  # start-up
        for n in (int(s) for s in args.steps.split(",")):
            step = [sources[i % len(sources)] for i in range(n)]
            counts.append(0)
            first = timed_predict(rec, step)
            again = timed_predict(rec, step)
            per_shape = f"{1e3 * (first - again) / counts[-1]:.1f}" if counts[-1] else "-"
            print(f"| {n} | {counts[-1]} | {1e3 * first:.1f} | {1e3 * again:.1f} | {per_shape} |", flush=True)


if __name__ == "__main__":
    run_main(main)
