"""Evaluation: accuracy, macro-F1, per-class recall and calibration, per resolution.

A face is evaluated at resolution ``s`` by area down-sampling its 48x48 crop to ``s`` px (the zoo's
degradation operator), then bringing it to the model's native size (bicubic up-sampling when ``s`` is
smaller, area down-sampling when larger). For the 48 px teacher this is the "upscale baseline": the
HR model applied to LR faces resized back up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrfer.constants import CLASSES
from lrfer.train.datasets import FaceSet
from lrfer.train.recipes import predict_logits

ECE_BINS = 15
#: The fitted temperature stays in this range (Guo et al. report 1-3 for over-confident networks).
TEMPERATURE_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class Scores:
    """Metrics of one model at one resolution. ``macro_f1`` averages the classes that occur in the
    labels or the predictions (scikit-learn's convention); ``recall`` is nan for a class without labels."""

    resolution: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    ece: float

    def as_row(self) -> dict[str, float]:
        return {"resolution": self.resolution, "accuracy": self.accuracy, "macro_f1": self.macro_f1, "ece": self.ece,
                **{f"recall_{k}": v for k, v in self.recall.items()}}


def fit_temperature(logits: torch.Tensor, labels: np.ndarray, steps: int = 60) -> float:
    """Temperature scaling (Guo et al. 2017): the T in :data:`TEMPERATURE_RANGE` that minimises the NLL of
    ``softmax(logits / T)``.

    The NLL is convex in 1/T, so it has one minimum over log T, which a golden-section search finds
    whatever the scale of the logits (a gradient method with a fixed step diverged on under-confident ones).
    """
    y = torch.as_tensor(labels, dtype=torch.long)
    z = logits.detach().double()

    def nll(log_t: float) -> float:
        return F.cross_entropy(z / math.exp(log_t), y).item()

    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    return math.exp(golden_section_min(nll, lo, hi, steps))


def golden_section_min(f: Callable[[float], float], lo: float, hi: float, steps: int) -> float:
    """The minimiser of a unimodal ``f`` on ``[lo, hi]``; each step shrinks the interval by 0.618."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return (lo + hi) / 2


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def score(logits: torch.Tensor, labels: np.ndarray, resolution: int, temperature: float = 1.0,
          classes: Sequence[str] = CLASSES) -> Scores:
    probs = F.softmax(logits / temperature, 1).numpy()
    predicted = probs.argmax(1)
    recall, f1 = {}, []
    for k, name in enumerate(classes):
        tp = np.sum((predicted == k) & (labels == k))
        support, chosen = np.sum(labels == k), np.sum(predicted == k)
        recall[name] = float(tp / support) if support else math.nan
        precision = tp / chosen if chosen else 0.0
        rec = tp / support if support else 0.0
        if support or chosen:  # a class in neither the labels nor the predictions has no F1
            f1.append(2 * precision * rec / (precision + rec) if precision + rec else 0.0)
    return Scores(resolution, float((predicted == labels).mean()), float(np.mean(f1)) if f1 else math.nan, recall,
                  expected_calibration_error(probs, labels))


def check_classes(model: nn.Module) -> None:
    """Refuse a model whose classes (``pretrained_cfg.classes``) are not the data's: the data sets lrfer
    reads are labelled in :data:`CLASSES` order, so its logit ``k`` would be scored as class ``CLASSES[k]``."""
    spec = getattr(model, "pretrained_cfg", None)
    if spec is not None and tuple(spec.classes) != CLASSES:
        raise ValueError(f"model {spec.name!r} predicts the classes {list(spec.classes)} but the data is labelled "
                         f"with {list(CLASSES)} (in this order); lrfer eval scores only models with the data's "
                         "classes in the data's order")


def evaluate(model: nn.Module, native: int, faces: FaceSet, resolutions: Sequence[int], temperature: float = 1.0,
             device: torch.device | str = "cpu", tta: bool = False) -> list[Scores]:
    """Scores of ``model`` (native input ``native`` px) at each resolution; a model with other classes
    than the data's is refused (:func:`check_classes`).

    ``temperature`` divides the logits before the softmax (it changes ``ece``, not ``accuracy``); it is
    not read from the model: pass ``model.pretrained_cfg.temperature`` to score a zoo model as its
    manifest metrics were (``lrfer eval`` does). ``tta``: each face's logits averaged with its mirror
    image's (:mod:`lrfer.tta`), as ``lrfer.load(..., tta=True)`` serves them."""
    from lrfer.tta import check_tta

    tta = check_tta(tta)
    check_classes(model)
    return [score(predict_logits(model, faces.images, native, device, eval_resolution=r, tta=tta), faces.labels, r,
                  temperature) for r in resolutions]


#: A table's cell for a metric the data does not define (the recall of a class without faces: nan).
UNDEFINED_CELL = "-"


def percent_cell(value: float) -> str:
    """``value`` in percent with one decimal, or :data:`UNDEFINED_CELL` for nan (it was printed as ``nan``).

    >>> percent_cell(0.5), percent_cell(float("nan"))
    ('50.0', '-')
    """
    return UNDEFINED_CELL if math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(results: dict[str, list[Scores]], metric: str = "accuracy") -> str:
    """One row per model, one column per resolution, values in percent (``-`` where nan)."""
    resolutions = sorted({s.resolution for rows in results.values() for s in rows})
    lines = ["| model | " + " | ".join(f"{r} px" for r in resolutions) + " |",
             "| --- |" + " ---: |" * len(resolutions)]
    for name, rows in results.items():
        by_res = {s.resolution: getattr(s, metric) for s in rows}
        cells = [percent_cell(by_res[r]) if r in by_res else "" for r in resolutions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(rows: list[Scores]) -> str:
    """Accuracy, macro-F1, ECE and per-class recall of one model, one row per resolution, in percent; a class
    without faces in the data has no recall: ``-``."""
    head = ["px", "accuracy", "macro-F1", "ECE"] + list(rows[0].recall) if rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for s in rows:
        cells = [str(s.resolution)] + [percent_cell(v) for v in (s.accuracy, s.macro_f1, s.ece, *s.recall.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PLOT_LINESTYLES = ("-", "--", ":")


def plot_path(path: Path) -> Path:
    """Where :func:`plot_accuracy` will write ``path`` (``.png`` added to a name without a suffix),
    checked before any evaluation: ImportError without matplotlib, ValueError for a format it cannot
    write."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'lrfer[plot]'") from exc
    if not path.suffix:
        return path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(f"--plot {path}: matplotlib cannot write {path.suffix!r} files; use one of "
                         + ", ".join(f".{f}" for f in sorted(formats)))
    return path


def plot_accuracy(results: dict[str, list[Scores]], path: Path, data_name: str | None = None) -> None:
    """Accuracy-vs-resolution PNG (needs matplotlib: ``pip install lrfer[plot]``); the y-axis reads
    "<data_name> accuracy (%)", or "accuracy (%)" without a name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'lrfer[plot]'") from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # a ListedColormap; get_cmap is typed Colormap
    for k, (name, rows) in enumerate(results.items()):  # a style per series: 10 colours repeat from the 11th
        rows = sorted(rows, key=lambda s: s.resolution)  # --resolutions 48,8,16 drew a zigzag
        ax.plot([s.resolution for s in rows], [100 * s.accuracy for s in rows], label=name,
                color=colors[(2 * k) % 20 + (k // 10) % 2], marker=PLOT_MARKERS[k % len(PLOT_MARKERS)],
                linestyle=PLOT_LINESTYLES[(k // len(PLOT_MARKERS)) % len(PLOT_LINESTYLES)])
    ax.set_xlabel("face width (px)")
    ax.set_ylabel(f"{data_name} accuracy (%)" if data_name else "accuracy (%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({s.resolution for rows in results.values() for s in rows}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
