"""Turn a finished training run into a zoo entry and fp16 weights (the manifest's single source of truth)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lrfer.constants import CLASSES, GRAY_MEAN, GRAY_STD
from lrfer.train.datasets import FaceSet
from lrfer.train.evaluate import Scores, fit_temperature, score
from lrfer.train.recipes import Recipe, predict_logits

PAPERS: dict[str, str] = {
    "resnet18": "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (adapted to 48x48 grayscale)",
    "gmenet": "GME-Net: Global Multiple Extraction Network for low-resolution facial expression recognition (2025)",
    "baseline": "Ablation of GME-Net: the student backbone without attention, global module or distillation",
    "fsrfer": "Feature super-resolution based facial expression recognition for low-resolution images (FSR-FER)",
    "manet": "Zhao et al., Learning deep global multi-scale and local attention features for FER in the wild, IEEE TIP 2021",
}
DESCRIPTIONS: dict[str, str] = {
    "resnet18": "High-resolution teacher (48 px); also the upscale reference for low-resolution faces",
    "gmenet": "GME-Net at native {res} px, distilled from the 48 px teacher",
    "baseline": "Plain {res} px CNN trained on low-resolution faces alone (ablation)",
    "fsrfer": "FSR-FER: GAN feature super-resolution of the fixed 48 px teacher, {res} px input",
    "manet": "MA-Net (local attention over 4 patches + multi-scale global branch), 48 px",
}
FER2013_LICENSE = "FER2013 (Goodfellow et al. 2013, Kaggle): research use only"
RESEARCH_ONLY_WEIGHTS = "research use only (trained on {data})"


def _teachers_of_other_data(recipe: Recipe, dataset: str, data_license: str) -> list[tuple[str, str]]:
    """(name, training data's licence) of each teacher of ``recipe`` trained on other data than
    ``dataset`` (whose licence is ``data_license``): a zoo model by its name and manifest licence; a file
    by its file name and the entry in its metadata, unless that names the same dataset and licence (a
    folder's name alone does not make two sets one; a file without an entry, such as a work dir's
    ``final.safetensors``, counts as other data)."""
    from lrfer.zoo import load_manifest

    models = load_manifest().models
    found = []
    for teacher in (recipe.teacher if recipe.uses_teacher else None, recipe.kd_teacher):
        if not teacher:
            continue
        zoo_model = models.get(teacher)
        if zoo_model is not None:
            if zoo_model.dataset != dataset:
                found.append((teacher, zoo_model.license["data"]))
            continue
        teacher_dataset, teacher_license = _file_training_data(Path(teacher))
        if (teacher_dataset, teacher_license) != (dataset, data_license):
            found.append((Path(teacher).name, teacher_license or "see the teacher's own training data"))
    return found


def _file_training_data(path: Path) -> tuple[str | None, str | None]:
    """(dataset, training data's licence) in a weights file's entry; None for what it does not say."""
    from lrfer.zoo import _read_embedded_entry, _read_metadata

    try:
        entry = _read_embedded_entry(path, _read_metadata(path))
    except (OSError, ValueError):  # deleted since training, or no entry (ManifestError is a ValueError)
        return None, None
    license_ = entry.get("license")
    return entry.get("dataset"), license_.get("data") if isinstance(license_, dict) else None


def build_entry(name: str, recipe: Recipe, dataset: str, temperature: float, metrics: dict[str, Any],
                command: str, file: str | None = None, weights_license: str | None = None,
                data_license: str | None = None) -> dict[str, Any]:
    """The manifest entry of a trained variant (``file``/``sha256``/``source`` added by the caller).

    Without ``weights_license``/``data_license`` the licences are placeholders: research use, and the
    data's name. A teacher trained on other data is named in both either way.
    """
    if data_license is None:
        data_license = FER2013_LICENSE if dataset == "fer2013" else f"{dataset}: see the dataset's own licence"
    if weights_license is None:
        weights_license = RESEARCH_ONLY_WEIGHTS.format(data=dataset)
    taught = _teachers_of_other_data(recipe, dataset, data_license)
    if taught:  # what a teacher learnt from reaches the student too
        data_license += "; taught by " + ", ".join(f"{name} ({licence})" for name, licence in taught)
        weights_license += ", taught by " + ", ".join(name for name, _ in taught)
    entry: dict[str, Any] = {
        "name": name,
        "arch": recipe.arch,
        "config": dict(recipe.config),
        "dataset": dataset,
        "resolution": recipe.resolution,
        "in_chans": 1,
        "classes": list(CLASSES),
        "mean": [GRAY_MEAN],
        "std": [GRAY_STD],
        "temperature": round(temperature, 4),
        "alignment": "fer2013",
        "license": {"code": "MIT", "weights": weights_license, "data": data_license},
        "metrics": metrics,
        "recipe": command,
        "seed": recipe.seed,
        "paper": PAPERS[recipe.arch],
        "description": DESCRIPTIONS[recipe.arch].format(res=recipe.resolution),
    }
    if recipe.kd_teacher:
        entry["description"] += f", with soft targets from {recipe.kd_teacher} on the same {recipe.resolution} px faces"
    if file is not None:
        entry["file"] = file
    return entry


def round_to_fp16_(model: nn.Module) -> nn.Module:
    """Round every floating parameter and buffer to fp16 precision (kept in its own dtype), in place."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return model


def check_finite(model: nn.Module, name: str) -> None:
    """ValueError naming the tensors of ``model`` that hold NaN or infinite values: a diverged run, or
    values beyond fp16's range (65504) that :func:`round_to_fp16_` made infinite. Such weights were
    shipped with chance-level metrics and the widest temperature, as if nothing were wrong."""
    bad = [key for key, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{name}: not exported: {listed} hold NaN or infinite values in fp16 (training diverged, "
                         "or values beyond fp16's 65504); the run's checkpoint is kept in its work dir")


def calibrate_and_score(model: nn.Module, recipe: Recipe, val: FaceSet, device: str = "cpu") -> tuple[float, Scores]:
    """Temperature fitted on ``val`` at the native resolution, and the calibrated scores there."""
    logits = predict_logits(model, val.images, recipe.resolution, device)
    temperature = fit_temperature(logits, val.labels)
    return temperature, score(logits, val.labels, recipe.resolution, temperature)


def metrics_from(scores: Scores, split: str) -> dict[str, Any]:
    return {f"{split}_accuracy": round(scores.accuracy, 4), f"{split}_macro_f1": round(scores.macro_f1, 4),
            f"{split}_ece": round(scores.ece, 4)}


def export(model: nn.Module, recipe: Recipe, name: str, dataset: str, val: FaceSet | None, out: Path,
           command: str, split: str = "publictest", weights_license: str | None = None,
           data_license: str | None = None) -> tuple[dict[str, Any], str]:
    """Write fp16 weights to ``out`` and calibrate on ``val`` (if given); return (entry, sha256).

    ``model`` is rounded to fp16 in place first, so the temperature and the metrics (and whatever the
    caller measures on ``model`` afterwards) describe the weights that are shipped.
    """
    from lrfer.zoo import save_weights

    round_to_fp16_(model)
    check_finite(model, name)
    temperature, metrics = 1.0, {}
    if val is not None:
        temperature, scores = calibrate_and_score(model, recipe, val)
        metrics = metrics_from(scores, split)
    entry = build_entry(name, recipe, dataset, temperature, metrics, command,
                        weights_license=weights_license, data_license=data_license)
    sha = save_weights(model.state_dict(), out, entry)
    return entry, sha
