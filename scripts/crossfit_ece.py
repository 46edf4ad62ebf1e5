#!/usr/bin/env python
"""Cross-fitted calibration error of the bundled models on FER2013 PublicTest.

The manifest's temperatures were fitted on PublicTest and its ECE was measured on the same faces
(in-sample). This script splits PublicTest into two halves A and B (a seeded permutation), fits the
temperature on the raw logits of one half with lrfer's ``fit_temperature``, measures the ECE on the other
half with lrfer's ``score`` (``expected_calibration_error``), both ways, and prints a markdown table
beside the in-sample figures. The logits are those of ``lrfer eval`` at the native resolution: the served
(fp16) weights loaded by ``load_model``, the faces degraded by ``predict_logits``::

    python scripts/crossfit_ece.py --data ../shared/datasets/fer2013
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrfer.train.datasets import FaceSet, load_faces  # noqa: E402
from lrfer.train.evaluate import check_classes, fit_temperature, score  # noqa: E402
from lrfer.train.recipes import predict_logits  # noqa: E402
from lrfer.zoo import load_manifest, load_model  # noqa: E402

log = logging.getLogger("crossfit_ece")


@dataclass(frozen=True)
class CrossFit:
    """One model's temperatures and ECEs; pairs are (fitted on A, fitted on B), each ECE measured on
    the other half (``eces``) and on the same half (``same_half_eces``: how much of the gap to the
    in-sample figure is the halves' size)."""

    name: str
    manifest_temperature: float
    in_sample_ece: float
    temperatures: tuple[float, float]
    eces: tuple[float, float]
    same_half_eces: tuple[float, float]

    @property
    def ece(self) -> float:
        return float(np.mean(self.eces))

    @property
    def same_half_ece(self) -> float:
        return float(np.mean(self.same_half_eces))


def bundled_models() -> list[str]:
    return [name for name, spec in load_manifest().models.items() if spec.source.get("kind") == "bundled"]


def halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of halves A and B of ``range(count)``: ``default_rng(seed).permutation``, split in two."""
    order = np.random.default_rng(seed).permutation(count)
    return order[:count // 2], order[count // 2:]


def raw_logits(name: str, faces: FaceSet) -> tuple[torch.Tensor, float, int]:
    """Temperature-1 logits of ``name`` at its native resolution, as ``lrfer eval`` computes them, with
    the manifest's temperature and the native resolution."""
    model = load_model(name)
    check_classes(model)
    spec = model.pretrained_cfg
    return predict_logits(model, faces.images, spec.resolution), spec.temperature, spec.resolution


def cross_fit(name: str, faces: FaceSet, seed: int) -> CrossFit:
    logits, temperature, resolution = raw_logits(name, faces)
    labels = faces.labels
    in_sample = score(logits, labels, resolution, temperature).ece
    a, b = halves(len(labels), seed)
    fitted, eces, same = [], [], []
    for fit_on, test_on in ((a, b), (b, a)):
        t = fit_temperature(logits[fit_on], labels[fit_on])
        fitted.append(t)
        eces.append(score(logits[test_on], labels[test_on], resolution, t).ece)
        same.append(score(logits[fit_on], labels[fit_on], resolution, t).ece)
    return CrossFit(name, temperature, in_sample, (fitted[0], fitted[1]), (eces[0], eces[1]), (same[0], same[1]))


def markdown(rows: list[CrossFit], seed: int) -> str:
    lines = ["| model | T (manifest) | ECE in-sample (%) | T fitted on A | T fitted on B | ECE on B (%) "
             "| ECE on A (%) | ECE cross-fit, mean (%) | ECE same half, mean (%) |",
             "| --- |" + " ---: |" * 8]
    for r in rows:
        lines.append(f"| {r.name} | {r.manifest_temperature:.4f} | {100 * r.in_sample_ece:.2f} "
                     f"| {r.temperatures[0]:.4f} | {r.temperatures[1]:.4f} | {100 * r.eces[0]:.2f} "
                     f"| {100 * r.eces[1]:.2f} | {100 * r.ece:.2f} | {100 * r.same_half_ece:.2f} |")
    lines.append(f"\nFER2013 PublicTest, halves from numpy default_rng({seed}).permutation; "
                 "ECE: lrfer's expected_calibration_error (15 equal-width bins).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with fer2013-publictest.npz (or the file)")
    parser.add_argument("--models", nargs="+", default=None, help="zoo names (default: every bundled model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the A/B split (default: 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = args.data if args.data.suffix == ".npz" else args.data / "fer2013-publictest.npz"
    faces = load_faces(data)
    rows = []
    for name in args.models or bundled_models():
        log.info("%s ...", name)
        rows.append(cross_fit(name, faces, args.seed))
        log.info("%s: in-sample ECE %.4f, cross-fit ECE %.4f", name, rows[-1].in_sample_ece, rows[-1].ece)
    print(markdown(rows, args.seed))


if __name__ == "__main__":
    main()
