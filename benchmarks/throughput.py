"""predict_crops throughput (faces/s) for every bundled variant, side by side in one process.

    python benchmarks/throughput.py [--batches 1,64,1024] [--device cpu|cuda|all] [--compile] [--precision bf16] [--tta]

For each variant and batch size: the median over timed rounds (after warm-up) of
``Recognizer.predict_crops`` on 48x48 uint8 crops (the public path: gray conversion, resize,
degradation, normalisation, model, calibrated softmax), every variant timed in turn within a round so
that the machine's drifting speed hits them all alike; and of the model alone on native tensors.
The 48 px teacher is the upscale reference: every face is brought to 48 px and the HR network runs,
which is what an ordinary FER model does with a small face; the ``vs 48px`` column is the speed-up
of each variant over it, per round, median over rounds. On CUDA, fp32, fp16 and bf16 autocast and channels_last
are measured (and ``torch.compile`` with --compile, on CPU too). ``--tta`` adds a row ``NAME +tta`` under each
model: the same model with mirror-image test-time augmentation (``lrfer.load(..., tta=True)``), timed in
the same rounds.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lrfer  # noqa: E402
from lrfer.zoo import load_manifest  # noqa: E402
from _common import gpu_peak_mb, interleaved_seconds, machine, median_seconds, peak_rss_mb, reset_gpu_peak, run_main  # noqa: E402

REFERENCE = "resnet18-fer2013-48px"


def crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def cuda_modes(compile_too: bool) -> list[tuple[str, torch.dtype | None, bool, bool]]:
    modes = [("fp32", None, False, False), ("fp16", torch.float16, False, False), ("bf16", torch.bfloat16, False, False),
             ("fp16+channels_last", torch.float16, True, False)]
    if compile_too:
        modes.append(("fp16+compile", torch.float16, True, True))
    return modes


def cpu_modes(compile_too: bool) -> list[tuple[str, torch.dtype | None, bool, bool]]:
    modes = [("fp32", None, False, False), ("fp32+channels_last", None, True, False)]
    if compile_too:
        modes.append(("fp32+channels_last+compile", None, True, True))
    return modes


def bench_crops(recs: dict[str, "lrfer.Recognizer"], batch: int, device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds per ``predict_crops`` call of ``batch`` faces (the public path), every model timed in
    turn, round after round."""
    data = crops(batch)
    fns = {name: (lambda rec=rec: rec.predict_crops(data, batch_size=batch)) for name, rec in recs.items()}
    return interleaved_seconds(fns, device, rounds=rounds)


def peak_memory_mb(rec: "lrfer.Recognizer", batch: int, device: torch.device) -> float:
    """Peak memory of one ``predict_crops`` call: GPU memory on CUDA, else the process's peak RSS so far."""
    reset_gpu_peak(device)
    rec.predict_crops(crops(batch), batch_size=batch)
    return gpu_peak_mb(device) if device.type == "cuda" else peak_rss_mb()


def bench_model(model: torch.nn.Module, resolution: int, batch: int, device: torch.device,
                dtype: torch.dtype | None, channels_last: bool) -> float:
    """faces/s of the network alone on native tensors already on the device."""
    x = torch.rand(batch, 1, resolution, resolution, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def run() -> None:
        with torch.inference_mode(), autocast:
            model(x)

    return batch / median_seconds(run, device, runs=10 if batch > 64 else 30, min_seconds=0.5)


def model_cell(rec: "lrfer.Recognizer", batch: int, device: torch.device, dtype: torch.dtype | None,
               channels_last: bool, use_compile: bool) -> str:
    """One cell of the network-alone table: faces/s, or why ``torch.compile`` could not run."""
    model = rec.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if not use_compile:
        return f"{bench_model(model, rec.resolution, batch, device, dtype, channels_last):,.0f}"
    try:
        return f"{bench_model(torch.compile(model), rec.resolution, batch, device, dtype, channels_last):,.0f}"
    except Exception as err:  # noqa: BLE001 - a compiler failure is a figure to report, not a crash
        return f"compile failed ({type(err).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cuda when present)")
    parser.add_argument("--models", default=None, help="comma list (default: every bundled variant)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (on CPU: inductor, which needs a C++ compiler)")
    parser.add_argument("--compile-models", default=None, help="comma list of models to compile "
                        "(default: the manifest default; compiling takes tens of seconds per model)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (every model once a round)")
    parser.add_argument("--precision", default="auto", help="predict_crops precision: auto, fp32, bf16 or fp16 (CUDA)")
    parser.add_argument("--tta", action="store_true", help="also time each model with tta=True (rows 'NAME +tta')")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    batches = [int(b) for b in args.batches.split(",")]
    names = args.models.split(",") if args.models else lrfer.list_models()
    names = sorted(names, key=lambda n: n != REFERENCE)  # the reference's row first
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"# machine: {machine()}\n")
    for dev_name in devices:
        device = torch.device(dev_name)
        recs = {label: lrfer.load(name, device=device, detector=None, precision=args.precision, tta=tta)
                for name in names for label, tta in [(name, False)] + [(f"{name} +tta", True)] * args.tta}
        peaks = {name: peak_memory_mb(rec, batches[-1], device) for name, rec in recs.items()}
        seconds = {b: bench_crops(recs, b, device, args.rounds) for b in batches}
        print(f"## {dev_name}: predict_crops (48x48 uint8 crops in, calibrated probabilities out), "
              f"precision {args.precision}, faces/s\n")
        print(f"Median of {args.rounds} rounds; in each round every model is timed in turn. \"vs 48px\": the median "
              f"over rounds of the per-round speed-up over {REFERENCE} at batch {batches[-1]}.\n")
        print("| model | px | " + " | ".join(f"batch {b}" for b in batches) + " | vs 48px (largest batch) | peak MB |")
        print("| --- | ---: |" + " ---: |" * (len(batches) + 2))
        for name, rec in recs.items():
            cells = " | ".join(f"{b / statistics.median(seconds[b][name]):,.0f}" for b in batches)
            largest = seconds[batches[-1]]
            ratio = (f"{statistics.median(r / t for r, t in zip(largest[REFERENCE], largest[name])):.1f}x"
                     if REFERENCE in largest else "(no reference)")
            print(f"| {name} | {rec.resolution} | {cells} | {ratio} | {peaks[name]:,.0f} |", flush=True)
        print(f"\n## {dev_name}: network alone on native tensors (batch {batches[-1]}), faces/s\n")
        modes = cuda_modes(args.compile) if device.type == "cuda" else cpu_modes(args.compile)
        print("| model | " + " | ".join(m[0] for m in modes) + " |")
        print("| --- |" + " ---: |" * len(modes))
        compiled = set(args.compile_models.split(",")) if args.compile_models else {load_manifest().default}
        for name in names:
            rec = lrfer.load(name, device=device, detector=None)
            cells = []
            for _, dtype, channels_last, use_compile in modes:
                if use_compile and name not in compiled:
                    cells.append("-")
                    continue
                cells.append(model_cell(rec, batches[-1], device, dtype, channels_last, use_compile))
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        print()


if __name__ == "__main__":
    run_main(main)
