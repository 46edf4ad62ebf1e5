"""``predict_crops`` on CPU with and without in-place additions and multiplications (lrfer.inplace).

    python benchmarks/in_place.py [--models gmenet-fer2013-16px,...] [--rounds 20] [--batch 1024]

Two Recognizers per model in one process: one as ``lrfer.load`` builds it (float32 on CPU: the
network computes its sums and products in place), one with the BatchNorm-folded network before that
pass. They score the same 48x48 crops in turn, round after round (``_common.interleaved_seconds``),
so the machine's drifting speed hits both alike; printed are the median faces/s of each and the median and
quartiles of the per-round ratio. The probabilities are checked to be equal first.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import fx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_seconds, machine, run_main  # noqa: E402
from throughput import crops  # noqa: E402

import lrfer  # noqa: E402
from lrfer.recognizer import fold_batchnorm  # noqa: E402


def in_place_count(network: torch.nn.Module) -> int:
    """Sums and products the network computes in place (0 for an eager model: no graph to rewrite)."""
    if not isinstance(network, fx.GraphModule):
        return 0
    return sum(1 for n in network.graph.nodes if n.op == "call_method" and n.target in ("add_", "mul_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gmenet-fer2013-16px,gmenet-fast-fer2013-16px,gmenet-tiny-fer2013-16px,"
                        "gmenet-small-fer2013-16px,resnet18-fer2013-48px")
    parser.add_argument("--rounds", type=int, default=20, help="at least 2 (the table gives quartiles)")
    parser.add_argument("--batch", type=int, default=1024, help="crops per predict_crops call")
    args = parser.parse_args()
    print(f"# machine: {machine()}\n")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the table gives the quartiles of the per-round ratios")
    print(f"predict_crops on {args.batch} crops of 48x48, CPU, float32; {args.rounds} rounds, the two in turn\n")
    print("| model | sums and products in place | faces/s without | faces/s with | per-round ratio: median | quartiles |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    data = crops(args.batch)
    for name in args.models.split(","):
        with_pass = lrfer.load(name, device="cpu", detector=None)
        without = lrfer.load(name, device="cpu", detector=None)
        without._network = fold_batchnorm(without.model)
        assert np.array_equal(with_pass.predict_crops(data), without.predict_crops(data)), name
        rewritten = in_place_count(with_pass._network)
        calls = {"without": lambda: without.predict_crops(data, batch_size=args.batch),
                 "with": lambda: with_pass.predict_crops(data, batch_size=args.batch)}
        seconds = interleaved_seconds(calls, torch.device("cpu"), rounds=args.rounds)
        before, after = ([args.batch / s for s in seconds[key]] for key in ("without", "with"))
        ratios = [a / b for a, b in zip(after, before)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"| {name} | {rewritten} | {statistics.median(before):,.0f} | {statistics.median(after):,.0f} | "
              f"{statistics.median(ratios):.2f}x | {q1:.2f}-{q3:.2f} |", flush=True)


if __name__ == "__main__":
    run_main(main)
