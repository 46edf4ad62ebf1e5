"""Torch calls the host makes per step of ``predict`` on the GPU's code path, with and without CUDA graphs.

    python benchmarks/host_calls.py [--width 480] [--photos 256,64] [--device cpu|cuda]

On a GPU each torch call costs the host microseconds (a kernel launch; a cuDNN convolution more), and
stop 20's profile found ``lrfer predict`` on 480 px photos bound by the host. This counts the calls
(torch operators other than views, through ``TorchDispatchMode``) in one ``predict`` step of N shared
photos, ``--width`` px wide, by the stage of lrfer that made them, once with :mod:`lrfer.graphs` off
and once on. Without a GPU (``--device cpu``, the default there) it runs the GPU's code path on the
CPU, and a recorded call is an :class:`lrfer.graphs.EagerReplay` whose insides count as nothing: what
a GPU's host would still launch, without a GPU. On CUDA the replays are real graphs. Each replay
counts as one call (a graph's launch), its copies in and out as the calls they are. On the CPU the
upload counts one call per photo (CPU tensors are views of the arrays; on CUDA a step goes up in one copy).
"""
from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine, run_main  # noqa: E402
from pipeline import decode, photos  # noqa: E402

import lrfer  # noqa: E402
from lrfer import graphs  # noqa: E402
from lrfer.faces import align  # noqa: E402

#: Operators that only make views (no kernel): not counted.
VIEWS = frozenset({"view", "_unsafe_view", "as_strided", "expand", "permute", "t", "transpose", "unsqueeze", "squeeze",
                   "select", "slice", "alias", "detach", "reshape", "unbind", "split", "split_with_sizes", "chunk"})


class CountedCalls(TorchDispatchMode):
    """Counts non-view operators by the innermost lrfer function that made them (``paused`` stops counting)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_place: collections.Counter[str] = collections.Counter()
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and func.overloadpacket.__name__ not in VIEWS:
            self.by_place[where_in_lrfer()] += 1
        return func(*args, **(kwargs or {}))


def where_in_lrfer() -> str:
    frames = [f for f in traceback.extract_stack(limit=40) if "/lrfer/" in f.filename and "/benchmarks/" not in f.filename]
    if not frames:
        return "?"
    return f"{frames[-1].filename.rsplit('/lrfer/', 1)[1]}:{frames[-1].name}"


def counting_capture(counter: CountedCalls):
    """A capture whose replays count as one call each, their insides as none."""

    class CountedReplay(graphs.EagerReplay):
        def replay(self) -> None:
            counter.paused = True
            try:
                super().replay()
            finally:
                counter.paused = False

    def capture(net, inputs):
        counter.paused = True  # the recording itself is made once per shape, not per step
        try:
            graph = CountedReplay(net, inputs)
        finally:
            counter.paused = False
        return graph, graph.outputs

    return capture


def counting_replays(counter: CountedCalls, replay):
    """``lrfer.graphs._replay`` counting each replay as one call (a graph's one launch); its copies in and
    out count as the operators they are."""

    def counted(recorded, x):
        counter.by_place["graph replay"] += 1
        return replay(recorded, x)

    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--photos", default="256,64", help="photos per step, comma list")
    parser.add_argument("--top", type=int, default=12, help="places of lrfer listed per count")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs the shared photos at {SHARED / 'images'}")
    counter = CountedCalls()
    if args.device == "cpu":
        align.cpu_tuned = lambda tensor: False  # the GPU's code path
        graphs.DEVICE_TYPES = frozenset({"cpu"})
        graphs.capture_cuda = counting_capture(counter)
    graphs._replay = counting_replays(counter, graphs._replay)
    sources = decode(photos(args.width))
    rec = lrfer.load(device=args.device)
    print(f"# machine: {machine()}\n")
    print(f"torch calls in one `predict` step of the shared photos at {args.width} px ({rec.spec.name}, {args.device}"
          f"{', the GPU code path' if args.device == 'cpu' else ''}), CUDA graphs off and on\n")
    print("| photos per step | graphs off | graphs on | on / off |")
    print("| ---: | ---: | ---: | ---: |")
    details = []
    for n in (int(s) for s in args.photos.split(",")):
        step = [sources[i % len(sources)] for i in range(n)]
        totals = []
        for on in (False, True):
            graphs.enable(on)
            rec._predict_step(step, 256)  # recordings (and cuDNN's plans) made before counting
            counter.by_place.clear()
            with counter:
                rec._predict_step(step, 256)
            totals.append(sum(counter.by_place.values()))
            details.append((n, on, counter.by_place.most_common(args.top)))
        print(f"| {n} | {totals[0]:,} | {totals[1]:,} | {totals[1] / totals[0]:.2f} |", flush=True)
    graphs.enable(False)
    for n, on, places in details:
        print(f"\n{n} photos, graphs {'on' if on else 'off'}: " + ", ".join(f"{place} {count}" for place, count in places))


if __name__ == "__main__":
    run_main(main)
