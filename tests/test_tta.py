"""Mirror-image test-time augmentation (``tta=True``): serving, evaluation and the two commands."""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import lrfer
from lrfer.cli import main
from lrfer.constants import CLASSES
from lrfer.train.datasets import FaceSet
from lrfer.train.evaluate import evaluate, score
from lrfer.train.recipes import predict_logits
from lrfer.tta import mean_over_mirror_images, with_mirror_images
from lrfer.zoo import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 16 px baseline (width 8) with a classifier 40x sharper than at initialisation, so that a
    face and its mirror image get clearly different probabilities (temperature 1.5)."""
    from lrfer.models import build_model
    from lrfer.zoo import save_weights

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(40)
    entry = {"name": "baseline-fer2013-16px", "arch": "baseline", "config": {"width": 8}, "dataset": "fer2013",
             "resolution": 16, "in_chans": 1, "classes": list(CLASSES), "mean": [0.5], "std": [0.25],
             "temperature": 1.5, "license": {"code": "MIT", "weights": "test only", "data": "synthetic"}}
    path = tmp_path_factory.mktemp("tta") / "sharp.safetensors"
    save_weights(model.state_dict(), path, entry)
    return path


def asymmetric_faces(n: int = 6, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Faces in 0..1 whose left and right halves differ: their mirror images are other inputs."""
    g = torch.Generator().manual_seed(seed)
    faces = torch.rand(n, 1, size, size, generator=g)
    faces[..., : size // 3] *= 0.3
    return faces


def test_mirror_images_follow_the_faces_and_their_mean_undoes_the_pairing() -> None:
    faces = asymmetric_faces(3)
    both = with_mirror_images(faces)
    assert both.shape == (6, 1, 48, 48)
    assert torch.equal(both[:3], faces) and torch.equal(both[3:], faces.flip(-1))
    logits = torch.arange(12.0).view(6, 2)
    assert mean_over_mirror_images(logits).tolist() == [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    with pytest.raises(ValueError, match="5 rows of logits"):
        mean_over_mirror_images(torch.zeros(5, 7))


def test_tta_probabilities_are_the_calibrated_softmax_of_the_mean_logits(model_path: Path) -> None:
    plain = lrfer.load(str(model_path), device="cpu", detector=None)
    mirrored = lrfer.load(str(model_path), device="cpu", detector=None, tta=True)
    faces = asymmetric_faces(size=16)  # native size: to_native leaves them as they are
    spec = plain.spec
    x = (faces - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        logits = (plain.model(x) + plain.model(x.flip(-1))) / 2
    expected = torch.softmax(logits / spec.temperature, 1)
    assert torch.allclose(mirrored.predict_tensor(faces), expected, atol=1e-5)
    assert not torch.allclose(plain.predict_tensor(faces), expected, atol=1e-3)


def test_with_tta_a_face_and_its_mirror_image_get_the_same_probabilities(model_path: Path) -> None:
    faces = asymmetric_faces()
    plain = lrfer.load(str(model_path), device="cpu", detector=None)
    mirrored = lrfer.load(str(model_path), device="cpu", detector=None, tta=True)
    assert torch.allclose(mirrored.predict_tensor(faces), mirrored.predict_tensor(faces.flip(-1)), atol=1e-5)
    assert not torch.allclose(plain.predict_tensor(faces), plain.predict_tensor(faces.flip(-1)), atol=1e-3)
    crops = (faces[:, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_allclose(mirrored.predict_crops(crops), mirrored.predict_crops(crops[:, :, ::-1].copy()), atol=1e-5)


def test_photos_and_pickled_recognizers_keep_tta(model_path: Path) -> None:
    """predict (each image is the face: detector=None) goes through the same classification."""
    image = (asymmetric_faces(1, 64)[0, 0] * 255).to(torch.uint8).numpy()
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    mirrored = lrfer.load(str(model_path), device="cpu", detector=None, tta=True)
    again = pickle.loads(pickle.dumps(mirrored))
    assert again.tta is True and "tta=True" in repr(again)
    probs = again.predict(rgb)[0].probs
    assert probs == pytest.approx(mirrored.predict(rgb[:, ::-1].copy())[0].probs, abs=1e-5)
    plain = lrfer.load(str(model_path), device="cpu", detector=None)
    assert plain.predict(rgb)[0].probs != pytest.approx(probs, abs=1e-3)


@pytest.mark.parametrize("value", ["flip", "no", 1, None])
def test_tta_must_be_a_bool(model_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match="tta must be True or False"):
        lrfer.load(str(model_path), device="cpu", detector=None, tta=value)  # type: ignore[arg-type]


def test_evaluation_scores_what_serving_with_tta_predicts(model_path: Path) -> None:
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 256, (21, 48, 48), dtype=np.uint8), np.arange(21) % 7, "random")
    model = load_model(str(model_path)).eval()
    logits = predict_logits(model, faces.images, 16, tta=True)
    mirrored = predict_logits(model, np.ascontiguousarray(faces.images[:, :, ::-1]), 16)
    assert torch.allclose(logits, (predict_logits(model, faces.images, 16) + mirrored) / 2, atol=1e-5)
    served = lrfer.load(str(model_path), device="cpu", detector=None, tta=True).predict_crops(faces.images)
    np.testing.assert_allclose(torch.softmax(logits / 1.5, 1).numpy(), served, atol=1e-4)
    rows = evaluate(model, 16, faces, [8, 16], temperature=1.5, tta=True)
    assert rows[1] == score(logits, faces.labels, 16, temperature=1.5)
    assert rows[0] == score(predict_logits(model, faces.images, 16, eval_resolution=8, tta=True), faces.labels, 8, 1.5)


def test_cli_predict_tta_writes_the_tta_probabilities(model_path: Path, tmp_path: Path) -> None:
    import cv2

    image = (asymmetric_faces(1, 48)[0, 0] * 255).to(torch.uint8).numpy()
    cv2.imwrite(str(tmp_path / "face.png"), image)
    rows = {}
    for flag in ([], ["--tta"]):
        out = tmp_path / f"rows{len(flag)}.csv"
        assert main(["predict", str(tmp_path / "face.png"), "--model", str(model_path), "--detector", "none",
                     "--device", "cpu", "--workers", "0", "--quiet", "--out", str(out), *flag]) == 0
        with out.open() as f:
            row = next(csv.DictReader(f))
        rows[bool(flag)] = [float(row[c]) for c in CLASSES]
    expected = lrfer.load(str(model_path), device="cpu", detector=None, tta=True).predict(str(tmp_path / "face.png"))[0]
    assert rows[True] == pytest.approx([expected.probs[c] for c in CLASSES], abs=1e-4)
    assert rows[False] != pytest.approx(rows[True], abs=1e-3)


def test_cli_eval_tta_says_so_and_scores_the_mean_logits(model_path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (70, 48, 48), dtype=np.uint8)
    labels = np.arange(70) % 7
    np.savez(tmp_path / "faces.npz", images=images, labels=labels, classes=np.array(CLASSES))
    assert main(["eval", "--model", str(model_path), "--data", str(tmp_path / "faces.npz"), "--resolutions", "16",
                 "--tta", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "70 faces, each with its mirror image (--tta)" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| baseline-fer2013-16px |"))
    logits = predict_logits(load_model(str(model_path)).eval(), images, 16, tta=True)
    assert float(row.strip("|").split("|")[1]) == pytest.approx(100 * float((logits.argmax(1).numpy() == labels).mean()), abs=0.05)


def test_faces_split_across_cpu_calls_keep_their_own_mirror_images(model_path: Path) -> None:
    """More rows than one CPU call takes: each face is still averaged with its own mirror image."""
    mirrored = lrfer.load(str(model_path), device="cpu", detector=None, tta=True)
    faces = asymmetric_faces(7, size=16)
    whole = mirrored.predict_tensor(faces)
    mirrored._cpu_chunk = 4  # 14 rows (7 faces, 7 mirror images) in calls of 4, 4, 4 and 2
    split = mirrored.predict_tensor(faces)
    assert torch.allclose(split, whole, atol=1e-6)
    assert torch.allclose(split, mirrored.predict_tensor(faces.flip(-1)), atol=1e-5)


def test_a_recognizer_pickled_before_tta_unpickles_without_it(model_path: Path) -> None:
    rec = lrfer.load(str(model_path), device="cpu", detector=None)
    state = rec.__getstate__()
    del state["tta"]  # as a Recognizer pickled by a version without tta
    old = lrfer.Recognizer.__new__(lrfer.Recognizer)
    old.__setstate__(state)
    assert old.tta is False and "tta=False" in repr(old)
    faces = asymmetric_faces(3)
    assert torch.equal(old.predict_tensor(faces), rec.predict_tensor(faces))


def test_cli_eval_tta_reaches_the_calibration_and_every_resolution(model_path: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The accuracy in the other eval test is the same with and without --tta (the random model gives
    every random face one class): here each predict_logits call is checked for tta=True."""
    import lrfer.train.evaluate as evaluate_module
    import lrfer.train.recipes as recipes_module

    calls: list[bool] = []
    real = recipes_module.predict_logits

    def spy(*args: object, tta: bool = False, **kwargs: object) -> torch.Tensor:
        calls.append(tta)
        return real(*args, tta=tta, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recipes_module, "predict_logits", spy)
    monkeypatch.setattr(evaluate_module, "predict_logits", spy)
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "faces.npz", images=rng.integers(0, 256, (14, 48, 48), dtype=np.uint8),
             labels=np.arange(14) % 7, classes=np.array(CLASSES))
    assert main(["eval", "--model", str(model_path), "--data", str(tmp_path / "faces.npz"), "--resolutions", "8,16",
                 "--calibrate-on", str(tmp_path / "faces.npz"), "--tta", "--device", "cpu"]) == 0
    assert calls == [True, True, True]  # the calibration faces, then 8 and 16 px


@pytest.mark.parametrize("value", ["no", "false", 1, None])
def test_evaluation_refuses_a_tta_that_is_not_a_bool(model_path: Path, value: object) -> None:
    """predict_logits and evaluate check tta as lrfer.load does: tta="no" was truthy, and averaged."""
    model = load_model(str(model_path)).eval()
    faces = FaceSet(np.zeros((2, 48, 48), np.uint8), np.arange(2), "zeros")
    with pytest.raises(ValueError, match="tta must be True or False"):
        predict_logits(model, faces.images, 16, tta=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tta must be True or False"):
        evaluate(model, 16, faces, [16], tta=value)  # type: ignore[arg-type]
