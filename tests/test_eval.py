"""Evaluation metrics (lrfer.train.evaluate): temperature scaling, ECE, macro-F1/recall, tables, plot."""
from __future__ import annotations

import math
import re
from typing import Any
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfer.constants import CLASSES, GRAY_MEAN, GRAY_STD
from lrfer.models import build_model
from lrfer.train.datasets import FaceSet
from lrfer.train.evaluate import (
    Scores,
    check_classes,
    detail_table,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    markdown_table,
    plot_accuracy,
    score,
)
from lrfer.train.recipes import accuracy, normalize, normalizer, predict_logits
from lrfer.zoo import load_model, save_weights


pytestmark = pytest.mark.usefixtures("one_thread")


def calibrated_logits(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Logits of a perfectly calibrated model: labels are drawn from softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 7, generator=g) * 2
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    return logits, labels.numpy()


@pytest.mark.parametrize("true_t", [2.0, 0.5])
def test_fit_temperature_recovers_known_temperature(true_t: float) -> None:
    logits, labels = calibrated_logits(4000, seed=0)
    fitted = fit_temperature(logits * true_t, labels)
    assert fitted == pytest.approx(true_t, rel=0.1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_fit_temperature_accepts_inference_mode_logits() -> None:
    """predict_logits runs under torch.inference_mode(); its logits must still be calibratable."""
    logits, labels = calibrated_logits(2000, seed=2)
    with torch.inference_mode():
        frozen = logits * 2
    assert frozen.is_inference()
    assert fit_temperature(frozen, labels) == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("scale, signal, seed", [(0.3, 0.5, 0), (0.1, 0.2, 1), (0.2, 0.3, 2)])
def test_fit_temperature_on_under_confident_logits_finds_the_grid_optimum(scale: float, signal: float,
                                                                          seed: int) -> None:
    """Small logits of a weak model (20-35 % accuracy): the fitted T is finite, positive and the NLL minimum."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, (3000,), generator=g)
    logits = torch.randn(3000, 7, generator=g) * scale
    logits[torch.arange(3000), y] += signal * scale * torch.rand(3000, generator=g) * 3
    assert 0.2 <= (logits.argmax(1) == y).float().mean() <= 0.35
    grid = torch.logspace(-2, 2, 4001, dtype=torch.float64)
    nll = torch.stack([F.cross_entropy(logits.double() / t, y) for t in grid])
    best = grid[nll.argmin()].item()

    fitted = fit_temperature(logits, y.numpy())
    assert math.isfinite(fitted) and fitted > 0
    assert fitted == pytest.approx(best, rel=0.01)
    assert F.cross_entropy(logits.double() / fitted, y).item() <= nll.min().item() + 1e-9


def test_temperature_scaling_lowers_ece_of_overconfident_model() -> None:
    logits, labels = calibrated_logits(6000, seed=1)
    over = logits * 3
    t = fit_temperature(over, labels)
    raw = score(over, labels, 16).ece
    scaled = score(over, labels, 16, temperature=t)
    assert scaled.ece < raw / 2
    assert scaled.accuracy == score(over, labels, 16).accuracy  # a temperature never changes the argmax


def test_ece_zero_for_confident_correct_predictions() -> None:
    labels = np.array([0, 3, 6, 2, 2])
    probs = np.eye(7)[labels]
    assert expected_calibration_error(probs, labels) == 0.0


def test_ece_positive_for_overconfident_wrong_predictions() -> None:
    labels = np.array([0, 3, 6, 2])
    probs = np.eye(7)[(labels + 1) % 7]  # all wrong at confidence 1
    assert expected_calibration_error(probs, labels) == pytest.approx(1.0)
    # half right at confidence 0.9: |0.5 - 0.9| = 0.4
    probs = np.full((4, 7), 0.1 / 6)
    predicted = np.array([0, 3, 5, 5])
    probs[np.arange(4), predicted] = 0.9
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_score_on_hand_made_confusion() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])
    predicted = np.array([0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 0])
    logits = torch.from_numpy(np.eye(7)[predicted] * 10).float()
    s = score(logits, labels, 12)
    assert s.resolution == 12
    assert s.accuracy == pytest.approx(12 / 14)
    # F1: angry P=1/2 R=1/2 -> 0.5; disgust P=2/3 R=1 -> 0.8; neutral P=1 R=1/2 -> 2/3; the other four 1
    assert s.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3 + 4) / 7)
    assert list(s.recall) == list(CLASSES)
    assert s.recall == pytest.approx({"angry": 0.5, "disgust": 1.0, "fear": 1.0, "happy": 1.0, "sad": 1.0,
                                      "surprise": 1.0, "neutral": 0.5})
    assert 0 <= s.ece <= 1
    row = s.as_row()
    assert row["resolution"] == 12 and row["recall_neutral"] == pytest.approx(0.5)


def test_score_recall_nan_for_absent_class() -> None:
    labels = np.array([0, 1, 1])
    logits = torch.from_numpy(np.eye(7)[[0, 1, 0]] * 5).float()
    s = score(logits, labels, 16)
    assert math.isnan(s.recall["happy"])
    assert s.recall["disgust"] == pytest.approx(0.5)


def test_macro_f1_averages_the_classes_that_occur() -> None:
    """scikit-learn's convention: classes in neither the labels nor the predictions do not count."""
    labels = np.array([0, 0, 3, 3, 6, 6])
    assert score(torch.from_numpy(np.eye(7)[labels] * 5).float(), labels, 16).macro_f1 == pytest.approx(1.0)
    predicted = np.array([0, 0, 3, 3, 6, 2])  # F1: angry 1, happy 1, neutral 2/3, fear (predicted only) 0
    s = score(torch.from_numpy(np.eye(7)[predicted] * 5).float(), labels, 16)
    assert s.macro_f1 == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert math.isnan(s.recall["fear"]) and math.isnan(s.recall["sad"])


def _scores(resolution: int, accuracy: float) -> Scores:
    return Scores(resolution, accuracy, accuracy - 0.1, {c: 0.25 for c in CLASSES}, 0.05)


def test_markdown_table() -> None:
    table = markdown_table({"gmenet-x-16px": [_scores(8, 0.5), _scores(16, 0.75)], "other": [_scores(16, 0.8)]})
    lines = table.splitlines()
    assert lines[0] == "| model | 8 px | 16 px |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| gmenet-x-16px | 50.0 | 75.0 |"
    assert lines[3].startswith("| other |") and lines[3].endswith("| 80.0 |")
    assert len(lines) == 4
    f1 = markdown_table({"m": [_scores(8, 0.5)]}, metric="macro_f1")
    assert f1.splitlines()[2] == "| m | 40.0 |"


def test_detail_table() -> None:
    table = detail_table([_scores(8, 0.5), _scores(16, 0.75)])
    lines = table.splitlines()
    assert lines[0] == "| px | accuracy | macro-F1 | ECE | " + " | ".join(CLASSES) + " |"
    assert lines[1].count("---:") == 4 + len(CLASSES)
    assert lines[2] == "| 8 | 50.0 | 40.0 | 5.0 | " + " | ".join(["25.0"] * 7) + " |"
    assert lines[3].startswith("| 16 | 75.0 | 65.0 | 5.0 |")
    assert len(lines) == 4


def test_detail_table_shows_the_recall_of_a_class_without_faces_as_a_dash() -> None:
    """The recall of a class with no faces in the data (nan) was printed as 'nan' in lrfer eval --details."""
    labels = np.array([0, 1, 1])
    logits = torch.from_numpy(np.eye(7)[[0, 1, 0]] * 5).float()
    rows = [score(logits, labels, 16)]
    line = detail_table(rows).splitlines()[2]
    assert "nan" not in line
    cells = [c.strip() for c in line.strip("|").split("|")]
    recall = dict(zip(CLASSES, cells[4:]))
    assert recall["angry"] == "100.0" and recall["disgust"] == "50.0"
    assert all(recall[c] == "-" for c in CLASSES[2:])
    assert markdown_table({"m": rows}).splitlines()[2] == "| m | 66.7 |"
    undefined = Scores(8, math.nan, math.nan, {c: math.nan for c in CLASSES}, math.nan)
    assert markdown_table({"m": [undefined]}, metric="macro_f1").splitlines()[2] == "| m | - |"


def test_evaluate_every_resolution() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 256, (21, 48, 48), dtype=np.uint8), np.arange(21) % 7, "tiny")
    model = build_model("baseline", width=8, input_size=16).eval()
    rows = evaluate(model, 16, faces, [8, 12, 16, 24, 48])
    assert [s.resolution for s in rows] == [8, 12, 16, 24, 48]
    for s in rows:
        assert 0 <= s.accuracy <= 1 and 0 <= s.macro_f1 <= 1 and 0 <= s.ece <= 1


def test_plot_accuracy_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "acc.png"
    plot_accuracy({"a": [_scores(8, 0.4), _scores(16, 0.6)], "b": [_scores(8, 0.3), _scores(48, 0.7)]}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_plot_accuracy_labels_the_axis_with_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    labels: list[str] = []
    set_ylabel = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel", lambda ax, text, *a, **k: labels.append(text) or set_ylabel(ax, text, *a, **k))
    plot_accuracy({"a": [_scores(8, 0.4), _scores(16, 0.6)]}, tmp_path / "raf.png", "rafdb-test")
    plot_accuracy({"a": [_scores(8, 0.4)]}, tmp_path / "unnamed.png")
    assert labels == ["rafdb-test accuracy (%)", "accuracy (%)"]


def save_tiny(path: Path, classes: tuple[str, ...] = CLASSES, mean: float = GRAY_MEAN, std: float = GRAY_STD) -> Path:
    """A random 16 px baseline saved like a zoo model with the given classes and normalisation."""
    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16, num_classes=len(classes))
    entry = {"name": f"baseline-{path.stem}-16px", "arch": "baseline", "config": {"width": 8}, "dataset": path.stem,
             "resolution": 16, "in_chans": 1, "classes": list(classes), "mean": [mean], "std": [std],
             "license": {"code": "MIT", "weights": "test only", "data": "synthetic"}}
    save_weights(model.state_dict(), path, entry)
    return path


def random_faces(n: int = 21, seed: int = 0) -> FaceSet:
    rng = np.random.default_rng(seed)
    return FaceSet(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), np.arange(n) % 7, "random")


@pytest.mark.parametrize("classes", [("neg", "neu", "pos"), (*CLASSES, "contempt"), CLASSES[::-1]],
                         ids=["three", "eight", "reordered"])
def test_evaluate_refuses_a_model_with_other_classes(tmp_path: Path, classes: tuple[str, ...]) -> None:
    """The data is labelled in CLASSES order: a model with other classes would get mislabelled recalls."""
    model = load_model(save_tiny(tmp_path / "other.safetensors", classes))
    message = f"model 'baseline-other-16px' predicts the classes {list(classes)} but the data is labelled with " \
              f"{list(CLASSES)}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_classes(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(model, 16, random_faces(), [8, 16])
    check_classes(load_model(save_tiny(tmp_path / "same.safetensors")))  # the zoo's classes: accepted
    check_classes(build_model("baseline", width=8, input_size=16))  # no spec (being trained): accepted


def test_predict_logits_normalises_with_the_model_spec(tmp_path: Path) -> None:
    """A loaded model is fed (x - spec.mean) / spec.std, as the recognizer feeds it, not the recipe's constants."""
    model = load_model(save_tiny(tmp_path / "ms.safetensors", mean=0.6, std=0.5)).eval()
    faces = random_faces()
    x = torch.from_numpy(faces.images).unsqueeze(1).float().div(255)
    x = F.interpolate(x, size=16, mode="area")  # 48 -> 16 px: what predict_logits does at the native size
    with torch.inference_mode():
        expected, constants = model((x - 0.6) / 0.5), model(normalize(x))
    logits = predict_logits(model, faces.images, 16)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert not torch.allclose(logits, constants, atol=1e-2)
    assert accuracy(model, faces, 16) == float((expected.argmax(1).numpy() == faces.labels).mean())
    rows = evaluate(model, 16, faces, [16])
    assert rows[0].accuracy == pytest.approx(float((expected.argmax(1).numpy() == faces.labels).mean()))


def test_spec_normalisation_of_zoo_models_is_the_recipes(tmp_path: Path) -> None:
    """Zoo models (and what lrfer train exports) carry the recipe's mean/std: their numbers do not change."""
    x = torch.rand(4, 1, 16, 16)
    model = load_model(save_tiny(tmp_path / "zoo.safetensors"))
    assert model.pretrained_cfg.mean == (GRAY_MEAN,) and model.pretrained_cfg.std == (GRAY_STD,)
    assert torch.equal(normalizer(model)(x), normalize(x))
    assert normalizer(build_model("baseline", width=8, input_size=16)) is normalize


def test_plot_accuracy_gives_every_series_its_own_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eleven models went through matplotlib's ten colours: the first and the eleventh looked the same."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    styles: list[tuple] = []
    plot = Axes.plot

    def recording(ax: Axes, *args: Any, **kwargs: Any) -> Any:
        styles.append((kwargs.get("color"), kwargs.get("marker"), kwargs.get("linestyle")))
        return plot(ax, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    plot_accuracy({f"m{k}": [_scores(8, 0.4), _scores(16, 0.6)] for k in range(11)}, tmp_path / "acc.png")
    assert len(styles) == 11 and len(set(styles)) == 11
    assert len({color for color, _, _ in styles}) == 11


def test_crossfit_ece_script_fits_on_one_half_and_measures_on_the_other(tiny_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/crossfit_ece.py: the out-of-sample calibration error the README reports beside the
    bundled models' in-sample one."""
    import importlib.util
    import sys

    from lrfer.train.datasets import FaceSet
    from lrfer.train.evaluate import fit_temperature, score

    spec = importlib.util.spec_from_file_location("crossfit_ece", Path(__file__).resolve().parents[1] / "scripts" / "crossfit_ece.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "crossfit_ece", script)  # its dataclass looks its module up
    spec.loader.exec_module(script)
    a, b = script.halves(11, seed=0)
    assert len(a) == 5 and len(b) == 6 and sorted([*a, *b]) == list(range(11))
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 256, (60, 48, 48), dtype=np.uint8), rng.integers(0, 7, 60), "noise")
    result = script.cross_fit(str(tiny_path), faces, seed=0)
    logits, _, resolution = script.raw_logits(str(tiny_path), faces)
    a, b = script.halves(60, seed=0)
    assert result.temperatures[0] == fit_temperature(logits[a], faces.labels[a])
    assert result.eces[0] == score(logits[b], faces.labels[b], resolution, result.temperatures[0]).ece
    assert result.same_half_eces[0] == score(logits[a], faces.labels[a], resolution, result.temperatures[0]).ece
    assert result.in_sample_ece == score(logits, faces.labels, resolution, 1.5).ece  # the file's temperature
    assert f"| {tiny_path} | 1.5000 |" in script.markdown([result], seed=0)


def test_ece_weighs_each_bin_by_its_share_of_the_faces() -> None:
    """Three faces at confidence 0.9 (all right: gap 0.1) and one at 0.5 (wrong: gap 0.5): ECE is
    3/4 * 0.1 + 1/4 * 0.5 = 0.2, not the unweighted mean of the two bins' gaps (0.3)."""
    probs = np.full((4, 7), 0.1 / 6)
    probs[:3, 0] = 0.9
    probs[3] = 0.5 / 6
    probs[3, 1] = 0.5
    assert expected_calibration_error(probs, np.array([0, 0, 0, 2])) == pytest.approx(0.2)


def test_evaluate_scores_each_resolution_at_the_given_temperature() -> None:
    """Each row is the model's score on the faces degraded to its resolution, with the temperature
    applied: rows scored at the native size, or without the temperature, had the right labels and ranges."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 256, (21, 48, 48), dtype=np.uint8), np.arange(21) % 7, "tiny")
    model = build_model("baseline", width=8, input_size=16).eval()
    rows = evaluate(model, 16, faces, [8, 16, 48], temperature=0.2)
    for s in rows:
        logits = predict_logits(model, faces.images, 16, eval_resolution=s.resolution)
        assert s == score(logits, faces.labels, s.resolution, temperature=0.2)
    assert rows[0].ece != score(predict_logits(model, faces.images, 16), faces.labels, 8, temperature=0.2).ece
    assert rows[1].ece != score(predict_logits(model, faces.images, 16), faces.labels, 16).ece


def test_plot_accuracy_draws_each_line_from_small_to_large_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lrfer eval --resolutions 48,8,16 --plot` joined 48 -> 8 -> 16: a line doubling back on itself."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    lines: list[tuple[list[int], list[float]]] = []
    plot = Axes.plot

    def recording(ax: Axes, x: list[int], y: list[float], *args: Any, **kwargs: Any) -> Any:
        lines.append((list(x), list(y)))
        return plot(ax, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    plot_accuracy({"a": [_scores(48, 0.7), _scores(8, 0.3), _scores(16, 0.6)]}, tmp_path / "acc.png")
    assert lines == [([8, 16, 48], [30.0, 60.0, 70.0])]
