"""Public API: lrfer.load, Recognizer.predict / predict_crops / predict_tensor, Face. Fast and synthetic."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lrfer
from lrfer.constants import CLASSES
from lrfer.results import Face, faces_to_pandas, faces_to_rows, row_columns

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rec(tiny_path: Path) -> lrfer.Recognizer:
    return lrfer.load(tiny_path, device="cpu", detector=None)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)


def check_faces(faces: list[Face], classes: tuple[str, ...]) -> None:
    assert isinstance(faces, list)
    for face in faces:
        assert isinstance(face, Face)
        assert tuple(face.probs) == classes
        assert math.isclose(sum(face.probs.values()), 1.0, abs_tol=1e-5)
        assert face.label == max(face.probs, key=face.probs.get)
        x1, y1, x2, y2 = face.box
        assert x2 > x1 and y2 > y1 and face.face_px == pytest.approx(x2 - x1)
        assert len(face.landmarks) == 5 and all(len(p) == 2 for p in face.landmarks)


# ------------------------------------------------------------------------------------------ loading
def test_load_exposes_spec(rec: lrfer.Recognizer) -> None:
    assert rec.classes == CLASSES
    assert rec.resolution == 16 == rec.spec.resolution
    assert rec.spec.temperature == 1.5
    assert rec.device == torch.device("cpu")
    assert "baseline-fer2013-16px" in repr(rec)


def test_load_auto_device_and_bad_detector(tiny_path: Path) -> None:
    auto = lrfer.load(tiny_path, device="auto", detector="none")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown detector"):
        lrfer.load(tiny_path, detector="dlib")


# ------------------------------------------------------------------------------------------ predict
def _as_input(kind: str, rgb: np.ndarray, tmp_path: Path):
    gray = rgb[..., 0]
    if kind.startswith("pil_"):
        Image = pytest.importorskip("PIL.Image")
        return Image.fromarray(rgb if kind == "pil_rgb" else gray)
    return {
        "numpy_rgb": rgb,
        "numpy_gray": gray,
        "numpy_gray_hw1": gray[..., None],
        "numpy_rgba": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2),
        "tensor_chw": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
        "tensor_hwc": torch.from_numpy(rgb),
        "path_str": str(_save_png(rgb, tmp_path / "img.png")),
        "path_obj": _save_png(rgb, tmp_path / "img2.png"),
    }[kind]


def _save_png(rgb: np.ndarray, path: Path) -> Path:
    import cv2

    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


INPUT_KINDS = ["numpy_rgb", "numpy_gray", "numpy_gray_hw1", "numpy_rgba", "pil_rgb", "pil_gray",
               "tensor_chw", "tensor_hwc", "path_str", "path_obj"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_predict_accepts_each_input_type(rec: lrfer.Recognizer, rgb: np.ndarray, tmp_path: Path, kind: str) -> None:
    faces = rec.predict(_as_input(kind, rgb, tmp_path))
    check_faces(faces, rec.classes)
    assert len(faces) == 1  # detector=None: the image's centred square is the face
    assert faces[0].box == (0.0, 5.0, 30.0, 35.0)
    assert faces[0].det_score == 1.0


@pytest.mark.parametrize("kind", ["numpy_rgba", "pil_rgb", "tensor_chw", "tensor_hwc", "path_str"])
def test_input_types_agree(rec: lrfer.Recognizer, rgb: np.ndarray, tmp_path: Path, kind: str) -> None:
    ref = rec.predict(rgb)[0].probs
    got = rec.predict(_as_input(kind, rgb, tmp_path))[0].probs
    assert got == pytest.approx(ref, abs=1e-6)


def test_predict_list_returns_list_of_lists(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    images = [rgb, rgb[:20], torch.from_numpy(rgb[..., 1])]
    out = rec.predict(images)
    assert isinstance(out, list) and len(out) == 3
    for faces in out:
        check_faces(faces, rec.classes)
        assert len(faces) == 1
    assert out[0][0].probs == pytest.approx(rec.predict(rgb)[0].probs, abs=1e-6)
    assert rec.predict([]) == []
    assert rec.predict((rgb,))[0][0].probs == pytest.approx(out[0][0].probs, abs=1e-6)


def test_predict_takes_a_generator_or_map_of_images_in_their_order(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    """``rec.predict(p for p in paths)`` and ``rec.predict(map(...))`` raised 'unsupported image input:
    object of type generator'. Now they give a list per image, in order, as a list does (with
    ``detector=None`` each image is its face: the box's width says which image a result is)."""
    widths = [30, 12, 25, 8, 19]
    images = [rgb[:, :w] for w in widths]
    listed = rec.predict(images)
    for got in (rec.predict(image for image in images), rec.predict(map(np.ascontiguousarray, images)),
                rec.predict(iter(images), streams=1)):
        assert isinstance(got, list) and [f[0].box[2] for f in got] == widths
        assert [f[0].probs for f in got] == [f[0].probs for f in listed]
    assert rec.predict(image for image in []) == [] and rec.predict(iter(())) == []
    with pytest.raises(ValueError, match=r"images\[2\]: wrong dtype float32"):
        rec.predict(image for image in [rgb, rgb, rgb.astype(np.float32)])


@pytest.mark.parametrize("images", [{"a.jpg": 0, "b.jpg": 1}, {"a.jpg", "b.jpg"}, frozenset({"a.jpg"})])
def test_a_dict_or_a_set_is_not_taken_for_images_in_an_order(rec: lrfer.Recognizer, images: object) -> None:
    """Once any iterable was taken for several images, a dict was scored as its keys and a set in an
    order of its own: both are refused, named, as before."""
    with pytest.raises(ValueError, match=f"unsupported image input: object of type {type(images).__name__}"):
        rec.predict(images)


@pytest.mark.parametrize("data", [bytearray(b"\x89PNG"), memoryview(b"\x89PNG")], ids=["bytearray", "memoryview"])
def test_a_bytearray_or_memoryview_is_one_input_not_images(rec: lrfer.Recognizer, data: object) -> None:
    """Pins down bytearray and memoryview in ONE_INPUT_TYPES: they iterate over their byte values, and taken
    for a list of images they were refused as 'images[0]: unsupported image input: object of type int',
    naming neither what was passed nor that it was one input."""
    from lrfer.io import is_image_like

    assert is_image_like(data)
    with pytest.raises(ValueError, match=r"^unsupported image input: .*(bytearray|memoryview)"):
        rec.predict(data)


@pytest.mark.parametrize("streams", [1, 2])
def test_a_long_generator_is_taken_a_step_at_a_time(rec: lrfer.Recognizer, streams: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator is not made into a list first: when the first step is scored, only the steps in
    flight (and the look-ahead that tells a short generator from a long one) have been taken from it."""
    from lrfer.recognizer import IMAGES_PER_STEP

    count = 8 * IMAGES_PER_STEP + 3
    taken: list[int] = []
    taken_when_scored: list[int] = []
    scored = rec._predict_step

    def images():
        for i in range(count):
            taken.append(i)
            yield np.full((8 + i % 5, 8 + i % 5), i % 256, np.uint8)  # square: the box is the whole image

    def step(arrays, batch_size):
        taken_when_scored.append(len(taken))
        return scored(arrays, batch_size)

    monkeypatch.setattr(rec, "_predict_step", step)
    out = rec.predict(images(), streams=streams)
    assert [f[0].box[2] for f in out] == [8 + i % 5 for i in range(count)]
    assert len(taken_when_scored) >= count // IMAGES_PER_STEP
    assert taken_when_scored[0] <= (2 * streams + 1) * IMAGES_PER_STEP + 1 < count


def test_a_recognizer_is_called_as_a_pipeline_is(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    """``rec(images)``, as a Hugging Face pipeline or facenet-pytorch's MTCNN: it raised 'not callable'."""
    assert rec(rgb) == rec.predict(rgb)
    assert rec([rgb, rgb[:20]], batch_size=1) == rec.predict([rgb, rgb[:20]])


def test_predict_is_deterministic_and_batch_independent(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    images = [rgb, rgb[::-1], rgb[:, ::-1]]
    a = rec.predict(images, batch_size=1)
    b = rec.predict(images, batch_size=256)
    for fa, fb in zip(a, b):
        assert fa[0].probs == pytest.approx(fb[0].probs, abs=1e-5)


# ------------------------------------------------------------------------------------------- crops
@pytest.mark.parametrize("shape", [(5, 48, 48), (3, 20, 17), (4, 96, 96), (2, 64, 50, 3), (2, 30, 30, 1), (2, 30, 30, 4)])
def test_predict_crops_array_shapes(rec: lrfer.Recognizer, shape: tuple[int, ...]) -> None:
    crops = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    probs = rec.predict_crops(crops)
    assert probs.shape == (shape[0], len(rec.classes))
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs >= 0).all()


def test_predict_crops_list_of_sizes(rec: lrfer.Recognizer) -> None:
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(48, 48), (12, 10), (200, 180, 3), (60, 30)]]
    probs = rec.predict_crops(crops)
    assert probs.shape == (4, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert rec.predict_crops([]).shape == (0, 7)
    assert rec.predict_crops(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_predict_crops_array_and_list_agree(rec: lrfer.Recognizer) -> None:
    from lrfer.recognizer import crops_to_gray

    rng = np.random.default_rng(3)
    # identity, integer shrink, shrinks by ratios that are not whole numbers (torch's adaptive pooling
    # differs there), a shrink of one side only, enlarging (bicubic)
    for shape in ((48, 48), (96, 96), (61, 75), (100, 100), (203, 130), (48, 200), (24, 24), (30, 60)):
        crops = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
        assert (crops_to_gray(crops) - crops_to_gray(list(crops))).abs().max() < 1e-5, shape
        assert np.allclose(rec.predict_crops(crops), rec.predict_crops(list(crops)), atol=1e-4), shape


def test_predict_crops_scores_the_centre_square_of_non_square_crops(rec: lrfer.Recognizer) -> None:
    """A non-square crop was stretched to the model's square input (distorting the expression), while
    training and ``lrfer eval`` centre-crop it: a batched array, and the same crops as a list, now give
    the probabilities of their centred squares passed explicitly."""
    from lrfer.recognizer import crops_to_gray

    rng = np.random.default_rng(11)
    tall = rng.integers(0, 256, (3, 48, 40), dtype=np.uint8)  # rows 4..43 are the square
    wide = rng.integers(0, 256, (2, 30, 51, 3), dtype=np.uint8)  # columns 10..39
    for crops, square in ((tall, tall[:, 4:44]), (wide, wide[:, :, 10:40])):
        expected = rec.predict_crops(np.ascontiguousarray(square))
        assert np.allclose(rec.predict_crops(crops), expected, atol=1e-6)
        assert np.allclose(rec.predict_crops(torch.from_numpy(crops)), expected, atol=1e-6)
        assert np.allclose(rec.predict_crops(list(crops)), expected, atol=1e-5)
        assert torch.allclose(crops_to_gray(crops), crops_to_gray(np.ascontiguousarray(square)), atol=1e-6)
    mixed = [tall[0], wide[0], tall[1, :, :7]]  # 48x40, 51x30 RGB, 7x48 (enlarged)
    squares = [tall[0, 4:44], wide[0, :, 10:40], tall[1, 20:27, :7]]
    assert np.allclose(rec.predict_crops(mixed), rec.predict_crops(squares), atol=1e-6)


def test_predict_crops_takes_the_square_that_training_and_eval_take(tmp_path: Path) -> None:
    """predict_crops stretched a (N, 48, 40) array to 48x48 where ``lrfer eval`` (its .npz loader)
    centre-cropped it, so the two disagreed on the same faces. Now both take the same square: the
    loader's 48x48 faces are predict_crops' 48x48 input, but for the loader's rounding to uint8."""
    from lrfer.recognizer import crops_to_gray
    from lrfer.train.datasets import load_faces

    faces = np.random.default_rng(12).integers(0, 256, (4, 48, 40), dtype=np.uint8)
    np.savez(tmp_path / "narrow.npz", images=faces, labels=np.array([0, 3, 6, 2]))
    loaded = load_faces(tmp_path / "narrow.npz").images
    ours = crops_to_gray(faces, 48)[:, 0].numpy()
    assert np.abs(ours - loaded / 255).max() <= 0.5 / 255 + 1e-6
    assert np.abs(crops_to_gray(list(faces), 48)[:, 0].numpy() - loaded / 255).max() <= 0.5 / 255 + 1e-6


def test_area_weights_are_opencvs_area_resize() -> None:
    import cv2

    from lrfer.faces.degrade import area_weights

    image = np.random.default_rng(4).random((75, 61), dtype=np.float32)
    for height, width in ((48, 48), (30, 17), (75, 61), (25, 61)):
        ours = area_weights(75, height) @ torch.from_numpy(image) @ area_weights(61, width).T
        assert np.abs(ours.numpy() - cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)).max() < 1e-5
    assert torch.allclose(area_weights(75, 48).sum(dim=1), torch.ones(48))


def test_read_only_inputs_raise_no_warning(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    """PIL images and np.frombuffer arrays are read-only; torch warns when it wraps them."""
    import warnings

    image, crops = rgb.copy(), np.zeros((2, 60, 60), np.uint8)
    image.setflags(write=False)
    crops.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rec.predict(image) and rec.predict_crops(crops).shape == (2, 7)


def test_predict_crops_takes_tensors_and_rejects_the_rest(rec: lrfer.Recognizer) -> None:
    crops = np.random.default_rng(4).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    assert np.array_equal(rec.predict_crops(torch.from_numpy(crops)), rec.predict_crops(crops))
    with pytest.raises(ValueError, match="crops must be a uint8 array .* or a list of images; got"):
        rec.predict_crops({"face": crops[0]})
    # a tensor's errors name the tensor, not the numpy copy made of it
    with pytest.raises(ValueError, match=r"wrong dtype torch\.float32 for crops \(torch\.Tensor of shape \(2, 48, 48\) and dtype torch\.float32\)"):
        rec.predict_crops(torch.rand(2, 48, 48))
    with pytest.raises(ValueError, match=r"wrong dtype torch\.bfloat16 for crops"):  # numpy has no bf16
        rec.predict_crops(torch.rand(2, 48, 48, dtype=torch.bfloat16))
    for bad in (0, 1.5, True):  # 1.5 gave a TypeError from deep in the batching
        with pytest.raises(ValueError, match=f"batch_size must be a whole number >= 1; got {bad!r}"):
            rec.predict_crops(crops, batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be a whole number"):
            rec.predict(crops[0], batch_size=bad)
    assert rec.predict_crops(crops, batch_size=np.int64(2)).shape == (3, 7)
    with pytest.raises(ValueError, match="got 1 file names for 2 images"):
        faces_to_rows(rec.predict([crops[0], crops[1]]), files=["only-one.png"])


def test_predict_crops_errors_say_how_to_pass_channel_first_batches_and_other_dtypes(rec: lrfer.Recognizer) -> None:
    """predict_crops refused a torch-layout batch ``(N, 3, H, W)`` or ``(N, 1, H, W)`` (what timm's
    loaders give) and float crops with no word on what to pass, where predict's errors say it; a float
    crop in a list was named with the batch axis added inside lrfer, ``(1, H, W)``."""
    rng = np.random.default_rng(7)
    nchw = rng.integers(0, 256, (4, 3, 20, 20), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"channel-first batch \(N, 3, H, W\), torch's layout: pass np\.moveaxis\(x, 1, -1\)"):
        rec.predict_crops(nchw)
    with pytest.raises(ValueError, match=r"pass x\.permute\(0, 2, 3, 1\)"):
        rec.predict_crops(torch.from_numpy(nchw))
    with pytest.raises(ValueError, match=r"channel-first batch \(N, 1, H, W\) of gray crops: pass x\[:, 0\]"):
        rec.predict_crops(torch.from_numpy(nchw[:, :1]))
    # the hints work as written
    assert np.allclose(rec.predict_crops(np.moveaxis(nchw, 1, -1)), rec.predict_crops(torch.from_numpy(nchw).permute(0, 2, 3, 1)))
    assert rec.predict_crops(torch.from_numpy(nchw[:, :1])[:, 0]).shape == (4, 7)
    with pytest.raises(ValueError, match=r"crops must be uint8 \(0\.\.255\); convert with np\.clip\(x \* 255"):
        rec.predict_crops(rng.random((2, 20, 20), dtype=np.float32))
    with pytest.raises(ValueError, match=r"crops must be uint8 \(0\.\.255\); use \(x \* 255\)\.round\(\)"):
        rec.predict_crops(torch.rand(2, 20, 20))
    with pytest.raises(ValueError, match=r"crops\[1\]: wrong dtype float32 for crops \(numpy\.ndarray of shape \(20, 20\) "):
        rec.predict_crops([nchw[0, 0], rng.random((20, 20), dtype=np.float32)])


def test_float_crops_already_0_255_are_told_to_convert_not_to_multiply_by_255(rec: lrfer.Recognizer) -> None:
    """Float crops already 0..255 (``crop.astype(np.float32)``) got the 0..1 hint ``x * 255``: followed,
    it turned them white."""
    crops = np.random.default_rng(0).integers(0, 256, (2, 20, 20), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"values go above 1, 0\.\.255 floats: convert with np\.clip\(x, 0, 255\)\.round\(\)"):
        rec.predict_crops(crops.astype(np.float32))
    with pytest.raises(ValueError, match=r"values go above 1, 0\.\.255 floats: use x\.round\(\)\.clamp\(0, 255\)"):
        rec.predict_crops(torch.from_numpy(crops).float())
    assert np.allclose(rec.predict_crops(np.clip(crops.astype(np.float32), 0, 255).round().astype(np.uint8)),
                       rec.predict_crops(crops))


def test_a_channel_first_colour_crop_given_as_three_gray_crops_is_warned_about_once(
        rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """predict_crops of one RGB crop with its channels first, ``(3, H, W)``, read it as three gray crops
    without a word (right for gray crops, so it still does): now a warning says how to pass one colour
    crop, once per process, and not for shapes that cannot be such a crop."""
    from lrfer import recognizer

    monkeypatch.setattr(recognizer, "_warned_channel_first", False, raising=False)
    chw = np.random.default_rng(6).integers(0, 256, (3, 40, 30), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="lrfer.recognizer"):
        for quiet in (np.zeros((2, 40, 30), np.uint8), np.zeros((4, 40, 30), np.uint8), np.zeros((3, 6, 30), np.uint8),
                      [chw[0], chw[1], chw[2]]):
            rec.predict_crops(quiet)
        assert caplog.records == []
        assert rec.predict_crops(chw).shape == (3, 7)  # still three gray crops
        assert rec.predict_crops(torch.from_numpy(chw)).shape == (3, 7)
    assert len(caplog.records) == 1
    assert "read as 3 gray crops of 40x30 px" in caplog.text and "[np.moveaxis(x, 0, -1)]" in caplog.text
    hwc = np.moveaxis(chw, 0, -1)  # as advised: one colour crop, the same as the tensor read channels first
    assert np.allclose(rec.predict_crops([hwc]), rec.predict_crops([torch.from_numpy(chw)]), atol=1e-6)
    monkeypatch.setattr(recognizer, "_warned_channel_first", False, raising=False)
    caplog.clear()
    with caplog.at_level("WARNING", logger="lrfer.recognizer"):
        rec.predict_crops(torch.from_numpy(chw))
    assert "pass [x] (a tensor in a list is read channels first)" in caplog.text


def test_one_gray_crop_without_its_batch_axis_is_told_to_add_it(rec: lrfer.Recognizer) -> None:
    """predict_crops(crop) of one (H, W) crop said only "expected (N, H, W) gray or (N, H, W, 3) RGB",
    while one (H, W, 3) crop was told to pass crop[None] or [crop]."""
    crop = np.random.default_rng(5).integers(0, 256, (40, 40), dtype=np.uint8)
    for one in (crop, torch.from_numpy(crop)):
        with pytest.raises(ValueError, match=r"wrong shape \(40, 40\) for crops: .*pass crops\[None\] or \[crop\]"):
            rec.predict_crops(one)
    assert np.allclose(rec.predict_crops(crop[None]), rec.predict_crops([crop]), atol=1e-5)


def test_detect_refuses_an_empty_image_by_name(tiny_path: Path) -> None:
    """BlazeFace's letterbox took log2 of its side: a bare 'math domain error'."""
    detecting = lrfer.load(tiny_path, device="cpu", detector="auto")
    with pytest.raises(ValueError, match=r"images\[1\] is empty: shape \(3, 0, 5\)"):
        detecting.detect([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 0, 5, dtype=torch.uint8)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_names_the_alternatives(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="'cuda' requested but CUDA is not available; use device='cpu' or 'auto'"):
        lrfer.load(tiny_path, device="cuda", detector=None)


@pytest.mark.parametrize("device", ["gpu", "cuda0", "", 3.5])
def test_unknown_device_is_a_value_error_naming_the_choices(tiny_path: Path, device: object) -> None:
    """torch.device("gpu") raised a RuntimeError listing torch's twenty device types, not lrfer's."""
    with pytest.raises(ValueError, match=r"unknown device .*; use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        lrfer.load(tiny_path, device=device, detector=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["CPU", " cpu ", "Cpu:0"])
def test_a_device_name_ignores_case_and_spaces(tiny_path: Path, device: str) -> None:
    """"AUTO" was accepted and "CPU" refused as an unknown device."""
    assert lrfer.load(tiny_path, device=device, detector=None).device.type == "cpu"


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the message where MPS is missing")
@pytest.mark.parametrize("device", ["mps", "hpu"])
def test_a_device_torch_knows_but_this_machine_lacks_is_a_value_error(tiny_path: Path, device: str) -> None:
    """device="mps" on Linux (a Mac habit) passed the checks and failed later with torch's RuntimeError
    ("hpu": a ModuleNotFoundError); the reason is the start of torch's message, not its 1,200 characters."""
    with pytest.raises(ValueError, match=rf"device '{device}' is not available here \(.+\); use device='cpu' or 'auto'") as err:
        lrfer.load(tiny_path, device=device, detector=None)
    assert len(str(err.value)) < 250


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_a_device_index_is_a_cuda_device() -> None:
    """``device=0`` (torch's spelling of cuda:0) was called an unknown device where CUDA is missing."""
    from lrfer.recognizer import resolve_device

    with pytest.raises(ValueError, match="'cuda:0' requested but CUDA is not available"):
        resolve_device(0)  # type: ignore[arg-type]


def test_cpu_chunk_follows_the_largest_feature_map() -> None:
    from lrfer.recognizer import CPU_ACTIVATION_BUDGET, faces_per_cpu_call, largest_activation

    wide = torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1))
    strided = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, stride=2, padding=1), torch.nn.AdaptiveAvgPool2d(1))
    assert largest_activation(wide, 1, 16) == 64 * 16 * 16
    assert largest_activation(strided, 1, 16) == 16 * 8 * 8
    assert faces_per_cpu_call(wide, 1, 16) == CPU_ACTIVATION_BUDGET // (64 * 16 * 16)
    assert faces_per_cpu_call(strided, 1, 16) == 2048  # power of two at most the budget
    assert faces_per_cpu_call(torch.nn.Conv2d(1, 4096, 3, padding=1), 1, 48) == 32  # floor
    assert faces_per_cpu_call(torch.nn.Identity(), 1, 2) == 4096  # ceiling


def test_chunked_network_calls_give_the_same_probabilities(rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    faces = torch.rand(70, 1, 48, 48, generator=torch.Generator().manual_seed(6))
    whole = rec.predict_tensor(faces)
    monkeypatch.setattr(rec, "_cpu_chunk", 32)  # three calls, the last one short
    assert torch.allclose(rec.predict_tensor(faces), whole, atol=1e-6)


def test_precision_is_checked(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        lrfer.load(tiny_path, device="cpu", detector=None, precision="int4")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        lrfer.load(tiny_path, device="cpu", detector=None, precision="FP16")
    assert lrfer.load(tiny_path, device="CPU", detector=None, precision=" FP32").precision == "fp32"  # as the device


def test_bf16_on_cpu_autocasts_and_stays_close_to_fp32(rec: lrfer.Recognizer, tiny_path: Path) -> None:
    fast = lrfer.load(tiny_path, device="cpu", detector=None, precision="bf16")
    assert "precision='bf16'" in repr(fast) and rec.precision == "auto"
    faces = torch.rand(16, 1, 48, 48, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode(), fast._autocast():
        assert fast._network(torch.rand(2, 1, 16, 16).contiguous(memory_format=torch.channels_last)).dtype == torch.bfloat16
    probs = fast.predict_tensor(faces)
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(1), torch.ones(16), atol=1e-5)
    assert (probs - rec.predict_tensor(faces)).abs().max() < 3e-2


def test_bf16_on_a_cpu_without_native_bf16_warns(tiny_path: Path, monkeypatch, caplog) -> None:
    from lrfer import recognizer

    assert isinstance(recognizer.cpu_has_fast_bf16(), bool)  # oneDNN's answer for this machine
    monkeypatch.setattr(recognizer, "cpu_has_fast_bf16", lambda unknown=True: False)
    with caplog.at_level("WARNING", logger="lrfer.recognizer"):
        lrfer.load(tiny_path, device="cpu", detector=None, precision="bf16")
    assert "slower than fp32" in caplog.text
    caplog.clear()
    monkeypatch.setattr(recognizer, "cpu_has_fast_bf16", lambda unknown=True: True)
    with caplog.at_level("WARNING", logger="lrfer.recognizer"):
        lrfer.load(tiny_path, device="cpu", detector=None, precision="bf16")
    assert "slower" not in caplog.text


@pytest.mark.parametrize("detector", ["auto", "mtcnn"])
def test_bf16_also_runs_pnet_in_bf16(tiny_path: Path, detector: str) -> None:
    def pnet_dtype(rec: lrfer.Recognizer) -> torch.dtype:
        mtcnn = rec.detector.mtcnn if detector == "auto" else rec.detector
        return mtcnn.pnet.conv1.weight.dtype

    assert pnet_dtype(lrfer.load(tiny_path, device="cpu", detector=detector, precision="bf16")) == torch.bfloat16
    assert pnet_dtype(lrfer.load(tiny_path, device="cpu", detector=detector, precision="fp32")) == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_runs_pnet_in_bf16_for_the_auto_detector_on_a_native_bf16_cpu(tiny_path: Path, monkeypatch,
                                                                                      native: bool) -> None:
    """precision="auto" on CPU: P-Net in bf16 for the default detector where the CPU runs bf16 natively
    (its small-face search; R-/O-Net and the expression model stay float32); fp32 with detector="mtcnn"
    (every face comes through P-Net) and on CPUs without native bf16."""
    from lrfer import recognizer

    monkeypatch.setattr(recognizer, "cpu_has_fast_bf16", lambda unknown=True: native)
    auto = lrfer.load(tiny_path, device="cpu")
    assert auto.detector.mtcnn.pnet.conv1.weight.dtype == (torch.bfloat16 if native else torch.float32)
    assert auto.detector.mtcnn.rnet.conv1.weight.dtype == torch.float32 and auto._autocast_dtype() is None
    assert lrfer.load(tiny_path, device="cpu", detector="mtcnn").detector.pnet.conv1.weight.dtype == torch.float32
    fp32 = lrfer.load(tiny_path, device="cpu", precision="fp32")
    assert fp32.detector.mtcnn.pnet.conv1.weight.dtype == torch.float32


def test_pnet_precision_needs_a_cpu_known_to_run_bf16(monkeypatch) -> None:
    from lrfer import recognizer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert recognizer.pnet_precision_for("auto", cuda, "auto") == "fp32"
    assert recognizer.pnet_precision_for("bf16", cuda, "mtcnn") == "bf16"
    assert recognizer.pnet_precision_for("auto", cpu, "auto") == ("bf16" if recognizer.cpu_has_fast_bf16(unknown=False) else "fp32")

    def unknown() -> bool:
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", unknown, raising=False)
    assert recognizer.cpu_has_fast_bf16() is True and recognizer.cpu_has_fast_bf16(unknown=False) is False
    assert recognizer.pnet_precision_for("auto", cpu, "auto") == "fp32"


def test_crops_to_gray_scales_gray_crops_exactly() -> None:
    from lrfer.recognizer import crops_to_gray

    crops = np.random.default_rng(5).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    flipped = crops[:, ::-1]  # a non-contiguous view
    out = crops_to_gray(flipped)
    assert out.shape == (3, 1, 48, 48) and out.dtype == torch.float32
    assert np.array_equal(out[:, 0].numpy(), flipped.astype(np.float32) / 255)
    assert np.array_equal(crops, np.random.default_rng(5).integers(0, 256, (3, 48, 48), dtype=np.uint8))  # input untouched


def test_predict_crops_gray_equals_replicated_rgb(rec: lrfer.Recognizer) -> None:
    gray = np.random.default_rng(4).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=3)
    assert np.allclose(rec.predict_crops(gray), rec.predict_crops(rgb), atol=1e-5)


def test_predict_crops_matches_predict_with_no_detector(rec: lrfer.Recognizer) -> None:
    crops = np.random.default_rng(5).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    probs = rec.predict_crops(crops)
    faces = rec.predict(list(crops))
    got = np.array([[f[0].probs[c] for c in rec.classes] for f in faces])
    assert np.allclose(probs, got, atol=1e-6)


def test_no_detector_scores_the_centre_square_and_boxes_it(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    """With ``detector=None`` a non-square image was stretched to the model's square input and its box was
    the whole image. Now it is scored on its centred square, as predict_crops and ``lrfer eval`` score
    it, and the face's box is that square (inside the image)."""
    for image, box in ((rgb, (0.0, 5.0, 30.0, 35.0)), (np.ascontiguousarray(rgb.transpose(1, 0, 2)), (5.0, 0.0, 35.0, 30.0))):
        top, left = int(box[1]), int(box[0])
        expected = rec.predict_crops([image[top : top + 30, left : left + 30]])[0]
        face = rec.predict(image)[0]
        assert face.box == box and face.face_px == 30.0
        assert np.allclose([face.probs[c] for c in rec.classes], expected, atol=1e-6)
        assert face.det_score == 1.0 and all(math.isnan(v) for point in face.landmarks for v in point)


def test_rgb_crops_are_weighted_as_itu_r_601_luma() -> None:
    """Red, green and blue crops become 0.299, 0.587 and 0.114 grey, in one array and as a list of crops:
    weights in BGR order would swap red and blue, and every colour face would be read a little wrong."""
    from lrfer.recognizer import crops_to_gray

    crops = np.zeros((3, 48, 48, 3), np.uint8)
    for channel in range(3):
        crops[channel, ..., channel] = 255
    for gray in (crops_to_gray(crops), crops_to_gray(list(crops))):
        assert np.allclose(gray[:, 0].numpy(), np.array([0.299, 0.587, 0.114])[:, None, None], atol=1e-6)


def test_a_tie_is_labelled_with_the_first_class_as_np_argmax(tiny_path: Path) -> None:
    """A network with every weight zero gives equal probabilities: the label is the first class, as
    ``np.argmax`` over the probability columns (lrfer eval, a CSV read back) gives it."""
    from lrfer.zoo import load_model

    model = load_model(tiny_path)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    flat = lrfer.Recognizer(model, model.pretrained_cfg, torch.device("cpu"), None)
    face = flat.predict(np.full((48, 48), 128, np.uint8))[0]
    assert len(set(face.probs.values())) == 1 and face.label == flat.classes[0]


# ------------------------------------------------------------------------------------------ tensor
def test_predict_tensor(rec: lrfer.Recognizer) -> None:
    x = torch.rand(6, 1, 48, 48)
    probs = rec.predict_tensor(x)
    assert isinstance(probs, torch.Tensor) and probs.shape == (6, 7)
    assert probs.device == rec.device and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(6), atol=1e-5)
    crops = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    assert np.allclose(rec.predict_crops(crops), probs.numpy(), atol=1e-2)


def test_predict_tensor_native_size(rec: lrfer.Recognizer) -> None:
    from lrfer.faces.degrade import to_native

    x = torch.rand(3, 1, 48, 48)
    native = to_native(x, rec.resolution)
    assert torch.allclose(rec.predict_tensor(native), rec.predict_tensor(x), atol=1e-6)


def test_temperature_is_applied(rec: lrfer.Recognizer) -> None:
    from lrfer.faces.degrade import to_native

    x = torch.rand(2, 1, 48, 48)
    with torch.inference_mode():
        logits = rec.model((to_native(x, 16) - 0.5) / 0.25)
    expected = torch.softmax(logits / rec.spec.temperature, dim=1)
    assert torch.allclose(rec.predict_tensor(x), expected, atol=1e-6)


@pytest.mark.parametrize(("x", "problem"), [
    (torch.zeros(2, 1, 48, 48, dtype=torch.uint8), "dtype"),
    (torch.rand(2, 3, 48, 48), "shape"),
    (torch.rand(1, 48, 48), "shape"),
    (torch.rand(2, 1, 32, 32), "shape"),
    (np.zeros((2, 1, 48, 48), np.float32), "torch.Tensor"),
    (torch.rand(2, 1, 48, 48) * 255, r"values span .*: expected faces in 0\.\.1 \(divide 0\.\.255 pixels by 255"),
    ((torch.rand(2, 1, 48, 48) - 0.5) / 0.25, r"values span -\d[\d.]*\.\.\d[\d.]*: expected faces in 0\.\.1"),
    (torch.full((1, 1, 48, 48), float("nan")), "values span nan..nan"),
])
def test_predict_tensor_rejects(rec: lrfer.Recognizer, x, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        rec.predict_tensor(x)


def test_predict_tensor_takes_a_resize_overshoot_and_gives_an_ordinary_tensor(rec: lrfer.Recognizer) -> None:
    """0..255 floats gave confident wrong labels without a word; the result, an inference tensor,
    could not be edited in place or used in a loss."""
    x = torch.nn.functional.interpolate(torch.rand(4, 1, 24, 24), size=48, mode="bicubic")
    assert x.min() < 0 or x.max() > 1  # bicubic overshoots a little: still faces in 0..1
    probs = rec.predict_tensor(x)
    assert not probs.is_inference()
    probs[:, 0] = 0  # editable in place
    logits = torch.randn(4, 7, requires_grad=True)
    torch.nn.functional.kl_div(logits.log_softmax(1), rec.predict_tensor(x), reduction="batchmean").backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert rec.predict_tensor(torch.zeros(0, 1, 48, 48)).shape == (0, 7)


# ------------------------------------------------------------------------------------------ errors
def _corrupt_file(tmp_path: Path) -> Path:
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return p


def _empty_file(tmp_path: Path) -> Path:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    return p


BAD_INPUTS = {
    "missing path": (lambda t: t / "nope.jpg", "no such file"),
    "corrupt file": (_corrupt_file, "not a readable image"),
    "empty file": (_empty_file, "empty file"),
    "empty array": (lambda t: np.zeros((0, 10, 3), np.uint8), "empty image"),
    "float64": (lambda t: np.zeros((10, 10, 3), np.float64), "dtype float64"),
    "int32": (lambda t: np.zeros((10, 10, 3), np.int32), "dtype int32"),
    "4-D array": (lambda t: np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    "2 channels": (lambda t: np.zeros((10, 10, 2), np.uint8), "shape"),
    "float tensor": (lambda t: torch.rand(3, 10, 10), "dtype"),
    "4-D tensor": (lambda t: torch.zeros(1, 3, 10, 10, dtype=torch.uint8), "shape"),
    "not an image": (lambda t: 42, "unsupported image input"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error(rec: lrfer.Recognizer, tmp_path: Path, case: str) -> None:
    make, problem = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=problem):
        rec.predict(make(tmp_path))


def test_bad_input_message_names_the_input(rec: lrfer.Recognizer, rgb: np.ndarray, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ValueError, match="missing.jpg"):
        rec.predict(missing)
    with pytest.raises(ValueError, match=r"images\[1\].*float64"):
        rec.predict([rgb, rgb.astype(np.float64)])
    with pytest.raises(ValueError, match=r"crops\[1\]"):
        rec.predict_crops([rgb, np.zeros((0, 4), np.uint8)])
    with pytest.raises(ValueError, match="dtype"):
        rec.predict_crops(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        rec.predict_crops(np.zeros((2, 8, 8, 2), np.uint8))


@pytest.mark.parametrize("detector", ["auto", "blazeface", "mtcnn"])
def test_thin_images_have_no_face(tiny_path: Path, detector: str) -> None:
    """Strips far thinner than they are long (the short side under 1/384 of the long one) used to
    reach BlazeFace's mip level 0 pixels high."""
    rec = lrfer.load(tiny_path, device="cpu", detector=detector)
    thin = [np.zeros((1, 800, 3), np.uint8), np.zeros((2, 2000), np.uint8), np.zeros((1000, 1, 3), np.uint8),
            np.zeros((10, 10000, 3), np.uint8)]
    assert rec.predict(thin) == [[], [], [], []]


def test_a_photos_faces_do_not_depend_on_the_other_photos_of_the_call() -> None:
    """Each face is resampled with its own area filter, not that of the largest face of the call
    (probabilities moved by up to 0.006 with the default model before)."""
    import cv2

    rec = lrfer.load(device="cpu")
    big = lrfer.load_image(ROOT / "examples" / "group1.jpg")
    small = cv2.resize(big, (320, 214), interpolation=cv2.INTER_AREA)
    alone, together = rec.predict(small), rec.predict([small, big], streams=1)[0]  # 2 streams: 1 thread's rounding
    assert len(alone) == len(together) > 0
    for a, b in zip(alone, together):
        assert a.box == b.box
        assert max(abs(a.probs[c] - b.probs[c]) for c in a.probs) < 1e-5


def test_each_photo_of_a_call_gets_its_own_faces(tiny_path: Path) -> None:
    """predict on a list hands each photo the faces found in it, in order: a stand-in detector finds one face
    in the first photo and two in the second (a slip in the bookkeeping gave the second photo the first's)."""
    from lrfer.faces.detect import Detections
    from lrfer.zoo import load_model

    boxes = {(40, 40): [[2.0, 3.0, 30.0, 35.0]], (50, 60): [[1.0, 1.0, 20.0, 25.0], [25.0, 8.0, 55.0, 45.0]]}

    class BoxesDetector:
        def detect(self, tensors: list[torch.Tensor]) -> list[Detections]:
            return [Detections.from_boxes(torch.tensor(boxes[tuple(t.shape[1:])])) for t in tensors]

    model = load_model(tiny_path)
    rec = lrfer.Recognizer(model, model.pretrained_cfg, torch.device("cpu"), BoxesDetector())
    rng = np.random.default_rng(11)
    photos = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in boxes]
    together = rec.predict(photos)
    assert [[list(f.box) for f in faces] for faces in together] == list(boxes.values())
    for photo, faces in zip(photos, together):
        alone = rec.predict(photo)
        for a, b in zip(alone, faces):
            assert a.box == b.box and max(abs(a.probs[c] - b.probs[c]) for c in a.probs) < 1e-5


def test_blank_image_with_mtcnn_finds_no_face(tiny_path: Path) -> None:
    det = lrfer.load(tiny_path, device="cpu", detector="mtcnn")
    blank = np.full((160, 200, 3), 127, np.uint8)
    assert det.predict(blank) == []
    assert det.predict([blank, blank[:80]]) == [[], []]


def test_pipeline_stages(tiny_path: Path, rec: lrfer.Recognizer) -> None:
    from lrfer.faces.detect import Detections
    from lrfer.io import to_device_tensor

    det = lrfer.load(tiny_path, device="cpu", detector="mtcnn")
    img = to_device_tensor(np.random.default_rng(6).integers(0, 256, (60, 80, 3), dtype=np.uint8), det.device)
    boxes = Detections.from_boxes(torch.tensor([[10.0, 10.0, 50.0, 55.0], [30.0, 5.0, 70.0, 50.0]]))
    faces48 = det.align([img], [boxes])
    assert faces48.shape == (2, 1, 48, 48) and 0 <= float(faces48.min()) and float(faces48.max()) <= 1
    probs = det.classify(faces48, batch_size=1)
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len(det.detect([img])) == 1
    with pytest.raises(ValueError, match="no detector"):
        rec.detect([img])


# ------------------------------------------------------------------------------------------ results
def test_face_to_dict_and_rows(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    face = rec.predict(rgb)[0]
    d = face.to_dict()
    json.dumps(d, allow_nan=False)  # NaN landmarks become None
    assert d["label"] == face.label and d["box"] == list(face.box) and d["landmarks"][0] == [None, None]
    row = face.to_row("x.png", 0)
    assert list(row) == row_columns(rec.classes)
    rows = faces_to_rows(rec.predict([rgb, rgb]), files=["a", "b"])
    assert [r["file"] for r in rows] == ["a", "b"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.label = "happy"  # type: ignore[misc]


def test_face_to_dict_keeps_each_landmark_as_x_then_y() -> None:
    """Landmarks are written ``[x, y]`` as the box is ``x1, y1, x2, y2`` (swapped, every point lands elsewhere)."""
    marks = ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.0, math.nan))
    face = Face((0.0, 1.0, 10.0, 12.0), marks, 0.9, 10.0, "happy", {"happy": 1.0})
    assert face.to_dict()["landmarks"] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, None]]


def test_faces_and_frames_come_back_from_their_json_equal() -> None:
    """to_dict() had no inverse: Face(**d) kept JSON's lists (an unhashable face, unequal to the one
    written) and raised TypeError in __post_init__ on the None landmarks of a face without any."""
    from lrfer.results import VideoFrame

    marks = ((1.5, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.0, 10.25))
    faces = [Face((1.0, 2.0, 31.0, 42.0), marks, 0.875, 30.0, "sad", {"happy": 0.25, "sad": 0.75}),
             Face((0.0, 0.0, 48.0, 48.0), ((math.nan, math.nan),) * 5, 1.0, 48.0, "happy", {"happy": 0.5, "sad": 0.5})]
    for face in faces:
        back = Face.from_dict(json.loads(json.dumps(face.to_dict(), allow_nan=False)))
        assert back == face and hash(back) == hash(face) and list(back.probs) == list(face.probs)
        assert isinstance(back.box, tuple) and all(isinstance(p, tuple) for p in back.landmarks)
    for frame in (VideoFrame(4, 0.4, faces), VideoFrame(0, math.nan, [])):
        back_frame = VideoFrame.from_dict(json.loads(json.dumps(frame.to_dict(), allow_nan=False)))
        assert back_frame == frame and back_frame.to_rows("a.mp4") == frame.to_rows("a.mp4")


def test_from_dict_names_what_it_was_given_instead_of_a_bare_key_error() -> None:
    """``Face.from_dict(json.loads(line))`` on a line of ``lrfer predict --out faces.jsonl`` (a flat row)
    raised a bare ``KeyError: 'box'``, an unparsed JSON line ``TypeError: string indices must be
    integers``, and a box of three numbers made a Face that only annotate refused."""
    from lrfer.results import VideoFrame

    face = Face((1.0, 2.0, 31.0, 42.0), ((math.nan, math.nan),) * 5, 0.875, 30.0, "sad", {"happy": 0.25, "sad": 0.75})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['box', 'landmarks', 'probs'\] .*a flat row, as Face\.to_row "
                                         r"and lrfer predict's CSV and JSONL write"):
        Face.from_dict(json.loads(json.dumps(face.to_row("a.jpg", 0))))
    with pytest.raises(TypeError, match=r"got str \(parse a JSON line with json\.loads first\)"):
        Face.from_dict(json.dumps(face.to_dict()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'box' must be four numbers \(x1, y1, x2, y2\); got \[1\.0, 2\.0, 31\.0\]"):
        Face.from_dict({**face.to_dict(), "box": [1.0, 2.0, 31.0]})
    with pytest.raises(ValueError, match=r"VideoFrame\.from_dict: missing key\(s\) \['faces'\]"):
        VideoFrame.from_dict({"index": 0, "time_s": None})
    assert Face.from_dict(face.to_dict()) == face


def test_predicted_faces_come_back_from_their_json_equal(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    faces = rec.predict([rgb, rgb[:20]])
    assert [[Face.from_dict(json.loads(json.dumps(f.to_dict()))) for f in group] for group in faces] == faces


def test_face_row_and_dict_put_each_value_under_its_own_name() -> None:
    """Every column of a row (and key of the dict) holds its own value: the box corners, the face's width,
    the detector's score and the probabilities in class order."""
    face = Face((1.0, 2.0, 31.0, 42.0), ((math.nan, math.nan),) * 5, 0.875, 30.0, "sad", {"happy": 0.25, "sad": 0.75})
    assert face.to_row("a.jpg", 4) == {"file": "a.jpg", "face": 4, "x1": 1.0, "y1": 2.0, "x2": 31.0, "y2": 42.0,
                                       "face_px": 30.0, "det_score": 0.875, "label": "sad", "happy": 0.25, "sad": 0.75}
    assert face.to_dict() == {"box": [1.0, 2.0, 31.0, 42.0], "landmarks": [[None, None]] * 5, "det_score": 0.875,
                              "face_px": 30.0, "label": "sad", "probs": {"happy": 0.25, "sad": 0.75}}
    assert face.score == 0.75


def test_rows_of_one_photo_have_no_file_name_and_of_several_their_index() -> None:
    """faces_to_rows without file names: one photo's faces get an empty ``file``, several photos' faces
    the photo's index."""
    face = Face((0.0, 1.0, 10.0, 12.0), ((math.nan, math.nan),) * 5, 0.9, 10.0, "happy", {"happy": 1.0})
    assert [r["file"] for r in faces_to_rows([face, face])] == ["", ""]
    assert [(r["file"], r["face"]) for r in faces_to_rows([[face], [face, face]])] == [("0", 0), ("1", 0), ("1", 1)]


def test_one_file_name_names_one_photos_rows() -> None:
    """A str is a sequence of names: files="a.jpg" was 5 names for 1 photo (ValueError) and files="ab"
    named two photos "a" and "b" in silence."""
    face = Face((0.0, 1.0, 10.0, 12.0), ((math.nan, math.nan),) * 5, 0.9, 10.0, "happy", {"happy": 1.0})
    assert [r["file"] for r in faces_to_rows([face, face], files="a.jpg")] == ["a.jpg", "a.jpg"]
    assert [r["file"] for r in faces_to_rows([face], files=Path("photos/b.png"))] == ["photos/b.png"]
    with pytest.raises(ValueError, match="got 1 file names for 2 images"):
        faces_to_rows([[face], [face]], files="ab")


def test_rows_of_anything_but_faces_are_a_type_error_naming_it() -> None:
    """faces_to_pandas(rec.predict_video(...)) raised "'VideoFrame' object is not iterable", one Face
    "'Face' object is not iterable" and to_dict()'s dicts "'dict' object has no attribute 'to_row'"."""
    from lrfer.results import VideoFrame

    face = Face((0.0, 1.0, 10.0, 12.0), ((math.nan, math.nan),) * 5, 0.9, 10.0, "happy", {"happy": 1.0})
    frame = VideoFrame(0, 0.0, [face])
    cases = [([frame], "got VideoFrame; for predict_video's frames use frames_to_pandas"),
             ((f for f in [frame]), "got VideoFrame"), ([[face], frame], "got VideoFrame"),
             (face, r"got Face; pass one image's faces as a list \(\[face\]\)"),
             ([face.to_dict()], "got dict"), ([[face.to_dict()]], "got dict"), ([face, [face]], "got list"),
             (None, "got NoneType"), ("a.jpg", "got str")]
    for faces, message in cases:
        with pytest.raises(TypeError, match=f"faces_to_rows takes predict's faces: .*{message}"):
            faces_to_rows(faces)  # type: ignore[arg-type]
    pytest.importorskip("pandas")
    with pytest.raises(TypeError, match="faces_to_pandas takes predict's faces: .*frames_to_pandas"):
        faces_to_pandas([frame])  # type: ignore[list-item]
    assert [r["file"] for r in faces_to_rows([[face], [], (face, face)])] == ["0", "2", "2"]  # still taken
    assert faces_to_rows(iter([face]))[0]["face"] == 0 and faces_to_rows([]) == []


def test_rows_name_files_given_as_paths_by_their_str() -> None:
    """files=[Path, ...] (the paths just given to predict) put Path objects in the rows: json.dumps of
    them raised "Object of type PosixPath is not JSON serializable" and pandas held an object column;
    one Path was turned into its str, a list of them was not (VideoFrame.to_rows(Path) neither)."""
    from lrfer.results import VideoFrame

    face = Face((0.0, 1.0, 10.0, 12.0), ((math.nan, math.nan),) * 5, 0.9, 10.0, "happy", {"happy": 1.0})
    rows = faces_to_rows([[face], [face]], files=[Path("photos/a.jpg"), "b.jpg"])
    assert [r["file"] for r in rows] == ["photos/a.jpg", "b.jpg"] and json.loads(json.dumps(rows)) == rows
    assert face.to_row(Path("c.png"))["file"] == "c.png"
    frame_rows = VideoFrame(0, 0.0, [face]).to_rows(Path("clips/a.mp4"))
    assert [type(r["file"]) for r in frame_rows] == [str] and frame_rows[0]["file"] == "clips/a.mp4"
    pytest.importorskip("pandas")
    assert lrfer.faces_to_pandas([[face]], files=[Path("d.jpg")])["file"].tolist() == ["d.jpg"]
    assert lrfer.frames_to_pandas([VideoFrame(0, 0.0, [face])], Path("e.mp4"))["file"].map(type).tolist() == [str]


def test_video_rows_keep_the_frames_face_order() -> None:
    """Row ``face`` j of a frame is the frame's j-th face (its box and label), after file, frame and time."""
    from lrfer.results import VideoFrame

    nan5 = ((math.nan, math.nan),) * 5
    faces = [Face((0.0, 0.0, 8.0, 8.0), nan5, 0.9, 8.0, "happy", {"happy": 0.8, "sad": 0.2}),
             Face((20.0, 5.0, 40.0, 25.0), nan5, 0.7, 20.0, "sad", {"happy": 0.1, "sad": 0.9})]
    rows = VideoFrame(3, 0.125, faces).to_rows("clip.mp4")
    assert rows == [{"file": "clip.mp4", "frame": 3, "time_s": 0.125, **f.to_row("clip.mp4", j)} for j, f in enumerate(faces)]
    assert [(r["face"], r["x1"], r["label"]) for r in rows] == [(0, 0.0, "happy"), (1, 20.0, "sad")]


def test_to_pandas_without_pandas_names_the_install(rec: lrfer.Recognizer, rgb: np.ndarray,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    faces = rec.predict([rgb, rgb[:10]])
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        faces_to_pandas(faces)
    with pytest.raises(ImportError, match="pip install pandas"):
        faces[0][0].to_pandas()


def test_tables_of_no_face_have_the_columns(rec: lrfer.Recognizer) -> None:
    pytest.importorskip("pandas")
    from lrfer.results import VideoFrame

    assert list(lrfer.faces_to_pandas([]).columns) == row_columns(CLASSES)
    assert list(lrfer.faces_to_pandas([], classes=("a", "b")).columns) == row_columns(("a", "b"))
    assert list(lrfer.frames_to_pandas([VideoFrame(0, 0.0, [])]).columns) == row_columns(CLASSES, video=True)
    blank = lrfer.load(device="cpu").predict(np.zeros((40, 40, 3), np.uint8))  # no face: []
    table = lrfer.faces_to_pandas(blank, classes=rec.classes)
    assert blank == [] and table.empty and list(table.columns) == row_columns(rec.classes)


def test_frames_table_keeps_time_float_when_unknown() -> None:
    pytest.importorskip("pandas")
    from lrfer.results import VideoFrame

    face = Face((1.0, 2.0, 3.0, 4.0), ((math.nan, math.nan),) * 5, 0.9, 2.0, "happy", {"happy": 0.7, "sad": 0.3})
    table = lrfer.frames_to_pandas([VideoFrame(0, math.nan, [face]), VideoFrame(1, 0.5, [face])])
    assert table["time_s"].dtype == np.float64 and math.isnan(table["time_s"][0]) and table["time_s"][1] == 0.5
    unknown = lrfer.frames_to_pandas([VideoFrame(0, math.nan, [face]), VideoFrame(1, math.nan, [face])])
    assert unknown["time_s"].dtype == np.float64 and unknown["time_s"].isna().all()  # a video without a frame rate


@pytest.mark.parametrize("min_face", [0, 7, -3, True, float("nan"), "20"])
@pytest.mark.parametrize("detector", ["auto", "blazeface", "mtcnn", "haar"])
def test_min_face_is_checked_alike_for_every_detector(tiny_path: Path, detector: str, min_face: object) -> None:
    with pytest.raises(ValueError, match="min_face must be a number of pixels >= 8"):
        lrfer.load(tiny_path, device="cpu", detector=detector, min_face=min_face)


@pytest.mark.parametrize("min_face", [20.5, 8.25, float("inf")])
def test_min_face_that_is_not_a_whole_number_is_refused_as_the_cli_refuses_it(tiny_path: Path, min_face: float) -> None:
    """``lrfer.load(min_face=20.5)`` was taken (the Haar cascade then searched from 20 px, the others from
    20.5) while ``lrfer predict --min-face 20.5`` was refused: both take whole pixels now."""
    from lrfer.cli import build_parser

    with pytest.raises(ValueError, match=rf"min_face must be a whole number of pixels.*got {min_face!r}"):
        lrfer.load(tiny_path, device="cpu", detector="mtcnn", min_face=min_face)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "x.jpg", "--min-face", str(min_face)])
    assert lrfer.load(tiny_path, device="cpu", detector="mtcnn", min_face=20.0).detector.min_face == 20
    assert lrfer.load(tiny_path, device="cpu", detector="mtcnn", min_face=np.int64(9)).detector.min_face == 9

@pytest.mark.parametrize("detector", ["auto", "blazeface", "mtcnn", None])
def test_repr_names_the_detector_as_loaded(tiny_path: Path, detector: str | None) -> None:
    assert f"detector={detector!r}" in repr(lrfer.load(tiny_path, device="cpu", detector=detector))


def test_to_pandas(rec: lrfer.Recognizer, rgb: np.ndarray) -> None:
    pytest.importorskip("pandas", reason="pandas is optional (pip install 'lrfer[pandas]'); the test extra installs it")
    faces = rec.predict([rgb, rgb[:10]])
    df = faces_to_pandas(faces)
    assert list(df.columns) == row_columns(rec.classes) and len(df) == 2
    assert len(faces[0][0].to_pandas()) == 1


# ---------------------------------------------------------------------------------------- packaging
def test_import_lrfer_is_light() -> None:
    code = ("import sys, lrfer, lrfer.cli; lrfer.cli.build_parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch imported'; assert 'cv2' not in sys.modules, 'cv2 imported'; "
            "print(lrfer.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_lazy_public_names() -> None:
    for name in ("load", "Recognizer", "Face", "VideoFrame", "list_models", "info", "download", "faces_to_pandas"):
        assert name in dir(lrfer) and getattr(lrfer, name) is not None
    assert isinstance(lrfer.list_models(), list)
    with pytest.raises(AttributeError):
        lrfer.does_not_exist  # noqa: B018


def test_the_submodules_the_readme_names_are_reached_after_a_bare_import() -> None:
    """The README writes ``lrfer.annotate.annotate(...)``, ``lrfer.io.MAX_IMAGE_PIXELS = None`` and
    ``lrfer.faces.workspace.release()`` after ``import lrfer``: each was an AttributeError (``lrfer.io``
    worked only once ``lrfer.load`` had imported it). ``import lrfer`` itself stays light."""
    code = ("import sys, lrfer; assert 'torch' not in sys.modules and 'lrfer.annotate' not in sys.modules; "
            "assert 'annotate' in dir(lrfer); "
            "lrfer.io.MAX_IMAGE_PIXELS = None; import lrfer.io; assert lrfer.io.MAX_IMAGE_PIXELS is None; "
            "assert callable(lrfer.annotate.annotate) and callable(lrfer.annotate.save_annotated); "
            "assert callable(lrfer.faces.workspace.release) and callable(lrfer.zoo.save_weights); "
            "assert callable(lrfer.overlap.overlapped) and lrfer.train.__name__ == 'lrfer.train'; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_predict_runs_in_steps_bounded_by_images_and_pixels(rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrfer import recognizer as recognizer_mod

    assert recognizer_mod.step_limits(torch.device("cpu")) == (recognizer_mod.IMAGES_PER_STEP, math.inf)
    assert recognizer_mod.step_limits(torch.device("cuda")) == (recognizer_mod.GPU_IMAGES_PER_STEP, recognizer_mod.GPU_STEP_PIXELS)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, 10, 3), dtype=np.uint8) for h in (10, 10, 10, 10, 40, 10, 10)]
    whole = rec.predict(images)
    steps: list[int] = []
    original = recognizer_mod.Recognizer._predict_step

    def spy(self, arrays, batch_size):
        steps.append(len(arrays))
        return original(self, arrays, batch_size)

    monkeypatch.setattr(recognizer_mod.Recognizer, "_predict_step", spy)
    monkeypatch.setattr(recognizer_mod, "step_limits", lambda device, enlargement=1.0: (3, 400))  # 3 images, 400 pixels
    stepped = rec.predict(images, streams=1)  # several streams even the steps out (the next test)
    assert steps == [3, 1, 1, 2]  # at most 3 images; 100 + 400 px and 400 + 100 px pass 400 px
    for a, b in zip(stepped, whole):
        assert len(a) == len(b) == 1 and a[0].probs == pytest.approx(b[0].probs, abs=1e-6)


def test_a_gpu_step_holds_fewer_photos_when_mtcnn_enlarges_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``min_face`` below 12 MTCNN's first level is the photo enlarged (2.25x the pixels at 8): a
    GPU step of as many photos as before needed about twice the detection memory."""
    from lrfer import recognizer as recognizer_mod
    from lrfer.faces.detect import make_detector

    cuda = torch.device("cuda")
    assert recognizer_mod.step_limits(cuda, 2.25) == (recognizer_mod.GPU_IMAGES_PER_STEP, recognizer_mod.GPU_STEP_PIXELS / 2.25)
    assert recognizer_mod.step_limits(torch.device("cpu"), 2.25) == (recognizer_mod.IMAGES_PER_STEP, math.inf)
    for name, min_face, enlargement in [("auto", 8, 2.25), ("auto", 20, 1.0), ("mtcnn", 10, 1.44), ("blazeface", 8, 1.0)]:
        assert recognizer_mod.pyramid_enlargement(make_detector(name, "cpu", min_face=min_face)) == pytest.approx(enlargement)
    photos = [np.zeros((1080, 1920, 3), np.uint8)] * 40
    assert [len(s) for s in recognizer_mod.in_steps(photos, cuda, lambda a: a)] == [32, 8]
    assert [len(s) for s in recognizer_mod.in_steps(photos, cuda, lambda a: a, 2.25)] == [14, 14, 12]
    assert recognizer_mod.frames_ahead(cuda, 1080, 1920, 2.25) == 14


def _face(box: tuple[float, float, float, float], label: str = "happy") -> Face:
    return Face(box, ((math.nan, math.nan),) * 5, 1.0, box[2] - box[0], label, {label: 0.9, "sad": 0.1})


def test_annotated_labels_stay_inside_the_image() -> None:
    """A face filling the image (``detector=None``) or cut by its left edge still gets its label."""
    from lrfer.annotate import annotate

    blank = np.zeros((96, 96, 3), np.uint8)
    for box in [(0.0, 0.0, 96.0, 96.0), (70.0, 5.0, 120.0, 60.0)]:
        drawn = annotate(blank, [_face(box, "surprise")])
        bar_rows = (drawn.any(axis=2).sum(axis=1) > 40).sum()  # rows crossed by the label's filled bar
        assert bar_rows >= 5, box


@pytest.mark.parametrize("size, face, widest, highest", [((1080, 1920), 24, 110, 16), ((300, 3400), 40, 110, 16),
                                                          ((1080, 1920), 600, 700, 60)])
def test_annotated_labels_are_sized_by_their_face(size: tuple[int, int], face: int, widest: int, highest: int) -> None:
    """Labels sized by the image alone were nine faces wide on a 24 px face in a 1920 px crowd (220x43 px)
    and a quarter of a panorama's height; a large face keeps a large label."""
    from lrfer.annotate import annotate

    h, w = size
    box = (w / 2, h / 2, w / 2 + face, h / 2 + face)
    drawn = annotate(np.zeros((h, w, 3), np.uint8), [_face(box, "surprise")])
    rows, cols = np.nonzero(drawn[: int(box[1]) - 1].any(axis=2))  # the label, above the box
    assert 0 < cols.max() - cols.min() + 1 <= widest and 0 < rows.max() - rows.min() + 1 <= highest
    if face >= 600:
        assert cols.max() - cols.min() + 1 > 300  # still readable at the photo's scale



def test_annotate_draws_each_box_and_label_bar_in_its_class_colour_on_a_copy() -> None:
    """Guards the drawing: each face's box outline and label bar in its class's colour (an unknown
    class in DEFAULT_COLOR), the label's text with the score, and the caller's image left untouched."""
    from lrfer.annotate import CLASS_COLORS, DEFAULT_COLOR, annotate

    image = np.zeros((120, 200, 3), np.uint8)
    boxes = {"happy": (20.0, 40.0, 60.0, 80.0), "sad": (90.0, 40.0, 130.0, 80.0), "bored": (150.0, 40.0, 190.0, 80.0)}
    drawn = annotate(image, [_face(box, label) for label, box in boxes.items()])
    assert not image.any(), "annotate drew on the caller's image"
    for label, (x1, y1, x2, y2) in boxes.items():
        color = CLASS_COLORS.get(label, DEFAULT_COLOR)
        assert tuple(drawn[60, int(x1)]) == color and tuple(drawn[60, int(x2)]) == color, label  # box sides
        bar = (drawn[: int(y1), int(x1) : int(x2)] == color).all(axis=2)  # the label's bar, above the box
        assert bar.sum() > 100, label
    assert not drawn[90:].any()  # nothing below the boxes: the labels had room above them
    scored = [dataclasses.replace(_face(boxes["happy"], "happy"), probs={"happy": p, "sad": 1 - p}) for p in (0.9, 0.4)]
    assert not np.array_equal(annotate(image, scored[:1]), annotate(image, scored[1:])), "the score is not shown"


@pytest.mark.parametrize("box, label, image, expected", [
    ((140, 40, 158, 80), (50, 12), (160, 120), (110, 35)),  # at the right edge: moved left into the image
    ((10, 5, 50, 60), (30, 12), (200, 200), (10, 69)),  # no room above: below the box
    ((10, -10, 50, 95), (30, 12), (100, 100), (10, 9)),  # cut by the top, no room below: inside its top edge
    ((10, 12, 50, 60), (30, 12), (200, 200), (10, 7)),  # just room above
    ((10, 5, 50, 88), (30, 12), (100, 100), (10, 97)),  # no room above, just room below
])
def test_label_position_keeps_the_label_inside_the_image(box: tuple[int, int, int, int], label: tuple[int, int],
                                                         image: tuple[int, int], expected: tuple[int, int]) -> None:
    """Guards the label placement rules that the docstring examples do not reach."""
    from lrfer.annotate import label_position

    assert label_position(box, label, image, 3) == expected


def test_annotated_copies_keep_an_upper_case_suffix() -> None:
    """Cameras name photos IMG_0001.JPG: their annotated copies keep that name, not IMG_0001.png."""
    from lrfer.annotate import annotated_path

    assert annotated_path("shots/IMG_0001.JPG") == Path("shots/IMG_0001.JPG")
    assert annotated_path("scan.TIFF") == Path("scan.TIFF")


def test_annotate_takes_gray_and_rgba_images_unmirrored(tmp_path: Path) -> None:
    import cv2

    from lrfer.annotate import save_annotated

    gray = np.zeros((40, 80), np.uint8)
    gray[:, :20] = 255  # a white left quarter
    path = save_annotated(tmp_path / "gray.png", gray, [])
    assert cv2.imread(str(path))[:, :20].min() == 255 and cv2.imread(str(path))[:, 40:].max() == 0
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255  # opaque red
    saved = cv2.imread(str(save_annotated(tmp_path / "rgba.png", rgba, [])))
    assert tuple(saved[0, 0]) == (0, 0, 255)  # red, in OpenCV's BGR


def test_annotate_takes_what_predict_takes_and_names_what_it_refuses(tmp_path: Path) -> None:
    """A path, a PIL image or a tensor (each taken by predict) raised AttributeError ('str' object has no
    attribute 'ndim'), as did predict's list of lists, item by item ('list' object has no attribute 'label')."""
    import cv2
    from PIL import Image

    from lrfer.annotate import annotate

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # a red left third
    cv2.imwrite(str(tmp_path / "a.png"), rgb[..., ::-1])
    face = _face((25.0, 15.0, 45.0, 35.0))
    expected = annotate(rgb, [face])
    for image in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1)):
        assert np.array_equal(annotate(image, [face]), expected), type(image)
    with pytest.raises(ValueError, match="wrong dtype float64"):
        annotate(rgb / 255, [face])
    with pytest.raises(TypeError, match="annotate takes one image's faces.*got an item of type list"):
        annotate(rgb, [[face]])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_annotate_names_the_face_whose_box_is_not_finite(bad: float) -> None:
    """A hand-built Face with NaN or infinity in its box raised "cannot convert float NaN to integer"
    (OverflowError for infinity), naming neither the face nor its box."""
    from lrfer.annotate import annotate

    rgb = np.zeros((40, 60, 3), np.uint8)
    faces = [_face((5.0, 5.0, 20.0, 20.0)), _face((25.0, bad, 45.0, 35.0))]
    with pytest.raises(ValueError, match=r"faces\[1\] has a box that is not finite, \(25.0, (nan|-?inf), 45.0, 35.0\)"):
        annotate(rgb, faces)


@pytest.mark.parametrize("box", [(5.0, 5.0, 20.0), (5.0, 5.0, 20.0, 20.0, 1.0), None, "5,5,20,20", ("5", "5", "20", "20")])
def test_annotate_names_the_face_whose_box_is_not_four_numbers(box: Any) -> None:
    """A hand-built Face whose box was not four numbers raised "not enough values to unpack" or "must be
    real number, not str", naming neither the face nor its box."""
    from lrfer.annotate import annotate

    rgb = np.zeros((40, 60, 3), np.uint8)
    faces = [_face((5.0, 5.0, 20.0, 20.0)), dataclasses.replace(_face((5.0, 5.0, 20.0, 20.0)), box=box)]
    with pytest.raises(ValueError, match=r"faces\[1\] has a box that is not four numbers"):
        annotate(rgb, faces)


@pytest.mark.parametrize("box", [(45.0, 15.0, 25.0, 35.0), (25.0, 35.0, 45.0, 15.0), (25.0, 15.0, 20.0, 20.0)])
def test_annotate_refuses_a_reversed_box_naming_the_face(box: tuple[float, float, float, float]) -> None:
    """A hand-built Face with x2 < x1 or y2 < y1 (most often an (x, y, width, height) box) was drawn
    without a word, its label placed by the wrong corner; PIL's rectangle refuses such a box too."""
    from lrfer.annotate import annotate

    rgb = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ValueError, match=r"faces\[1\] has a reversed box, .*x \+ width, y \+ height"):
        annotate(rgb, [_face((5.0, 5.0, 20.0, 20.0)), _face(box)])
    assert annotate(rgb, [_face((25.0, 15.0, 25.0, 35.0))]).any()  # an empty box (x1 == x2) is still drawn


def test_annotate_clips_boxes_reaching_far_past_the_image_and_skips_those_outside_it() -> None:
    """A box of 1e12 or -3e9 pixels raised OpenCV's "Can't parse 'pt1'" (its coordinates are 32-bit);
    a box wholly outside the image had its label drawn at the image's edge."""
    from lrfer.annotate import DEFAULT_COLOR, annotate

    rgb = np.zeros((40, 60, 3), np.uint8)
    huge = annotate(rgb, [_face((-1e12, 10.0, 1e12, 30.0), "bored")])
    assert (huge[10] == DEFAULT_COLOR).all(axis=1).all() and (huge[30] == DEFAULT_COLOR).all(axis=1).all()  # top and bottom sides
    assert np.array_equal(annotate(rgb, [_face((-3e9, -3e9, 3e9, 3e9))]), annotate(rgb, [_face((-60.0, -40.0, 120.0, 80.0))]))
    for box in [(-50.0, -50.0, -10.0, -10.0), (1e12, 1e12, 2e12, 2e12), (70.0, 5.0, 90.0, 20.0), (5.0, 45.0, 20.0, 60.0)]:
        assert not annotate(rgb, [_face(box)]).any(), box


@pytest.mark.parametrize("box", [(5.0, -30.0, 20.0, -1.0), (-30.0, 5.0, -1.0, 20.0), (61.0, 5.0, 90.0, 20.0),
                                 (5.0, 41.0, 20.0, 60.0)], ids=["above", "left", "right", "below"])
def test_annotate_skips_a_box_wholly_past_any_one_edge(box: tuple[float, float, float, float]) -> None:
    """Pins down each of drawn_box's four outside checks on its own: a box wholly above the image (y2 < 0,
    x inside) is not drawn, as one wholly left, right or below; without the check its label was moved
    into the image and drawn for a face that is not in it."""
    from lrfer.annotate import annotate, drawn_box

    rgb = np.zeros((40, 60, 3), np.uint8)
    assert drawn_box(box, 0, (60, 40)) is None
    assert not annotate(rgb, [_face(box)]).any()


def test_annotate_rounds_a_box_to_the_nearest_pixel() -> None:
    """Pins down that drawn_box rounds a box's sides to the nearest whole pixel (as annotate did before it
    clipped), not towards zero: truncation moved a side at 10.6 to 10 and one at -3.6 to -3."""
    from lrfer.annotate import drawn_box

    assert drawn_box((10.6, 5.7, 30.4, 20.2), 0, (64, 48)) == (11, 6, 30, 20)
    assert drawn_box((-3.6, -2.7, 30.0, 20.0), 0, (64, 48)) == (-4, -3, 30, 20)


def test_annotate_names_one_face_or_a_frame_given_for_the_list() -> None:
    """annotate(image, face) and annotate(frame_pixels, frame) raised "'Face' object is not iterable"
    and "'VideoFrame' object is not iterable"."""
    from lrfer.annotate import annotate
    from lrfer.results import VideoFrame

    rgb = np.zeros((40, 60, 3), np.uint8)
    face = _face((25.0, 15.0, 45.0, 35.0))
    for faces, message in ((face, r"got Face \(pass \[face\]\)"),
                           (VideoFrame(0, 0.0, [face]), r"got VideoFrame \(pass frame.faces\)"),
                           (None, r"got NoneType \(pass predict's list\)")):
        with pytest.raises(TypeError, match=f"annotate takes one image's faces, a list of Face; {message}"):
            annotate(rgb, faces)  # type: ignore[arg-type]
    assert np.array_equal(annotate(rgb, (f for f in [face])), annotate(rgb, [face]))


def test_native_size_crops_go_to_the_network_unchanged(rec: lrfer.Recognizer) -> None:
    """A 16 px crop for a 16 px model was enlarged to 48 px (bicubic) and shrunk back: 15 % of labels moved
    on FER2013's faces. It is now the network's input as it is, in both the array and the list path, and
    with detector=None."""
    crops = np.random.default_rng(6).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    direct = rec.predict_tensor(torch.from_numpy(crops).float().div(255).unsqueeze(1)).numpy()
    assert np.allclose(rec.predict_crops(crops), direct, atol=1e-6)
    assert np.allclose(rec.predict_crops(list(crops)), direct, atol=1e-6)
    faces = rec.predict([np.repeat(c[..., None], 3, axis=2) for c in crops])
    assert np.allclose([list(f[0].probs.values()) for f in faces], direct, atol=1e-5)


def test_crops_between_native_and_48_px_are_shrunk_once_by_exact_area(rec: lrfer.Recognizer) -> None:
    import cv2

    crops = np.random.default_rng(7).integers(0, 256, (4, 24, 24), dtype=np.uint8)
    native = np.stack([cv2.resize(c.astype(np.float32) / 255, (16, 16), interpolation=cv2.INTER_AREA) for c in crops])
    direct = rec.predict_tensor(torch.from_numpy(native).unsqueeze(1)).numpy()
    assert np.allclose(rec.predict_crops(crops), direct, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_one_color_crop_without_batch_axis_is_refused(rec: lrfer.Recognizer, channels: int) -> None:
    crop = np.zeros((48, 48, channels), np.uint8)
    with pytest.raises(ValueError, match=f"look like one {channels}-channel crop.*crops\\[None\\]"):
        rec.predict_crops(crop)
    if channels != 2:  # (N, H, W, 2) is no crop format
        assert rec.predict_crops(crop[None]).shape == (1, 7) and rec.predict_crops([crop]).shape == (1, 7)
    assert rec.predict_crops([np.zeros((48, 3), np.uint8)]).shape == (1, 7)  # a list's 2-D crop is one gray crop


# -- the caller's process state -----------------------------------------------------------------------
def test_overlapping_detections_restore_the_callers_tf32_setting() -> None:
    """Each call restored its own saved copy: when two threads' calls overlapped, the last one out
    restored the setting the first one had made, and it stayed changed."""
    import threading

    from lrfer.faces.detect import detection_mode

    conv = getattr(torch.backends.cudnn, "conv", None)
    owner, setting = (conv, "fp32_precision") if conv is not None and hasattr(conv, "fp32_precision") else (
        torch.backends.cudnn, "allow_tf32")
    before = getattr(owner, setting)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with detection_mode():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with detection_mode():
        second_in.set()
        first_out.wait(5)
    thread.join(5)
    assert getattr(owner, setting) == before


def test_a_callers_autocast_does_not_change_fp32_results(rec: lrfer.Recognizer) -> None:
    crops = np.random.default_rng(8).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    plain = rec.predict_crops(crops)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert np.array_equal(rec.predict_crops(crops), plain)


def test_a_callers_autocast_does_not_move_detected_faces(tiny_path: Path) -> None:
    """README: detection runs in fp32. Under a caller's bf16 autocast MTCNN's boxes moved by up to 343 px."""
    rec = lrfer.load(tiny_path, device="cpu", detector="mtcnn")
    import cv2

    photo = lrfer.load_image(Path(__file__).resolve().parents[1] / "examples" / "group1.jpg")
    photo = cv2.resize(photo, (640, round(photo.shape[0] * 640 / photo.shape[1])), interpolation=cv2.INTER_AREA)
    plain = [f.to_dict() for f in rec.predict(photo)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert [f.to_dict() for f in rec.predict(photo)] == plain
    assert plain


def test_tracing_in_one_thread_leaves_modules_of_other_threads_alone() -> None:
    """fx's tracer patches nn.Module.__call__ for the whole process while it traces: another thread's
    module call then raised NameError (lrfer.load in one thread broke inference in another)."""
    import threading

    from lrfer.recognizer import trace_this_thread

    tracing, called = threading.Event(), threading.Event()

    class Waits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tracing.set()
            called.wait(5)
            return x + 1

    errors: list[BaseException] = []

    def other() -> None:
        tracing.wait(5)
        try:
            torch.nn.Linear(2, 2)(torch.zeros(1, 2))
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion
            errors.append(err)
        called.set()

    thread = threading.Thread(target=other)
    thread.start()
    traced = trace_this_thread(Waits())
    thread.join(5)
    assert errors == [] and torch.equal(traced(torch.zeros(2)), torch.ones(2))


def test_traces_in_several_threads_at_once_leave_module_calls_as_they_were() -> None:
    """Two overlapping traces each restored the ``nn.Module.__call__`` the other had patched in: one
    patch stayed for good, and that thread's every module call raised NameError afterwards (a
    thread pool calling lrfer.load per worker)."""
    import threading

    from lrfer.recognizer import trace_this_thread

    original = torch.nn.Module.__call__
    first_tracing, second_tracing, first_done = threading.Event(), threading.Event(), threading.Event()

    class Overlaps(torch.nn.Module):
        def __init__(self, me: int) -> None:
            super().__init__()
            self.me, self.linear = me, torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # without a lock: the second trace starts inside the first, and the first ends first
            if self.me == 0:
                first_tracing.set()
                second_tracing.wait(0.5)
            else:
                second_tracing.set()
                first_done.wait(0.5)
            return self.linear(x)

    errors: list[BaseException] = []

    def trace_then_call(me: int) -> None:
        try:
            if me == 1:
                first_tracing.wait(5)
            trace_this_thread(Overlaps(me))
            if me == 0:
                first_done.set()
            torch.nn.Linear(2, 2)(torch.zeros(1, 2))
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion
            errors.append(err)

    threads = [threading.Thread(target=trace_then_call, args=(me,)) for me in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert torch.nn.Module.__call__ is original
    assert errors == []


def test_a_float64_default_dtype_changes_nothing(tiny_path: Path, rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    crops = np.random.default_rng(9).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    expected = lrfer.load(tiny_path, device="cpu", detector=None).predict_crops(crops)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rec = lrfer.load(tiny_path, device="cpu", detector="blazeface")
        assert torch.get_default_dtype() == torch.float64
        assert np.allclose(rec.predict_crops(crops), expected, atol=1e-6)
        assert rec.predict(rgb) == []
        assert all(p.dtype == torch.float32 for p in rec.model.parameters())
        photo = lrfer.load_image(Path(__file__).resolve().parents[1] / "examples" / "group1.jpg")[::2, ::2].copy()
        tensors = [torch.from_numpy(photo).permute(2, 0, 1), torch.from_numpy(photo[:, ::-1].copy()).permute(2, 0, 1)]
        detections = rec.detect(tensors)
        assert sum(len(d) for d in detections) == 6
        assert rec.align(tensors, detections).dtype == torch.float32
        from lrfer.faces import align

        monkeypatch.setattr(align, "cpu_tuned", lambda *args: False)  # the GPU's code path, run on the CPU
        assert rec.align(tensors, detections).dtype == torch.float32
    finally:
        torch.set_default_dtype(before)


def test_a_recognizer_pickles(tiny_path: Path) -> None:
    import pickle

    rec = lrfer.load(tiny_path, device="cpu", detector="mtcnn")
    crops = np.random.default_rng(10).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    copy = pickle.loads(pickle.dumps(rec))
    assert np.array_equal(copy.predict_crops(crops), rec.predict_crops(crops))
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # the traced network is rebuilt with a float32 example, whatever the default
        assert np.allclose(pickle.loads(pickle.dumps(rec)).predict_crops(crops), rec.predict_crops(crops), atol=1e-6)
    finally:
        torch.set_default_dtype(before)


def test_a_cpu_recognizer_goes_to_other_processes_as_plain_bytes(tiny_path: Path) -> None:
    """multiprocessing's pickler put every CPU tensor in shared memory, one file descriptor each: a
    forkserver pool failed with 'too many fds' and the parent kept hundreds open."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    rec = lrfer.load(tiny_path, device="cpu", detector="mtcnn")
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir())) if fds.is_dir() else 0
    sent = bytes(ForkingPickler.dumps(rec))
    assert b"rebuild_storage" not in sent
    if fds.is_dir():
        assert len(list(fds.iterdir())) - before < 5
    crops = np.random.default_rng(11).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    assert np.array_equal(pickle.loads(sent).predict_crops(crops), rec.predict_crops(crops))


def test_a_child_forked_while_another_thread_loads_can_load(tiny_path: Path,
                                                           wait_for_forked_child: Callable[[int], str]) -> None:
    """A lock held by another thread at the fork stayed held in the child: its lrfer.load hung."""
    script = ("import os, sys, time, lrfer\n"
              "from lrfer import recognizer\n"
              "recognizer._BUILD_LOCK.acquire(); recognizer._TRACE_LOCK.acquire()  # as a load in another thread\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    lrfer.load(sys.argv[1], device='cpu', detector=None)\n"
              "    os._exit(0)\n"
              + wait_for_forked_child(60))
    python_script(script, tiny_path)


def test_load_starts_no_thread_and_leaves_the_start_method_unset(tiny_path: Path) -> None:
    """torch.fx's ShapeProp made a (disabled) tqdm bar: tqdm's monitor thread started, and the
    multiprocessing start method was fixed, so set_start_method("spawn") failed afterwards."""
    script = ("import sys, threading, multiprocessing, lrfer\n"
              "before = {t.name for t in threading.enumerate()}\n"
              "lrfer.load(sys.argv[1], device='cpu', detector=None)\n"
              "multiprocessing.set_start_method('spawn')\n"
              "print(sorted({t.name for t in threading.enumerate()} - before))\n")
    assert python_script(script, tiny_path).strip() == "[]"


def python_script(script: str, *args: object, timeout: float = 180) -> str:
    """``python -c script args`` in the repository; its stdout, after asserting that it exited 0."""
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def fork_after_use_script(get_recognizer: str, wait_for_forked_child: Callable[[int], str]) -> str:
    """A script that runs the recognizer ``get_recognizer`` makes from ``sys.argv[1]`` on two threads,
    forks, and exits 0 when the child gets the parent's results."""
    return ("import os, pickle, sys, time, numpy as np, torch, lrfer\n"
            "torch.set_num_threads(2)\n"
            f"rec = {get_recognizer}\n"
            "photo = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)\n"
            "crops = photo[:48, :48, 0][None].repeat(64, axis=0)\n"
            "expected = rec.predict_crops(crops); rec.predict(photo)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    rec.predict(photo)\n"
            "    os._exit(0 if np.array_equal(rec.predict_crops(crops), expected) else 3)\n"
            + wait_for_forked_child(60))


def test_a_recognizer_used_before_fork_works_in_the_child(tiny_path: Path,
                                                          wait_for_forked_child: Callable[[int], str]) -> None:
    """GNU OpenMP's thread pool does not survive ``os.fork``: a child of a process that had run the
    model on two threads (gunicorn's ``--preload``) waited forever in its first convolution."""
    loading = "lrfer.load(sys.argv[1], device='cpu', detector='mtcnn')"
    python_script(fork_after_use_script(loading, wait_for_forked_child), tiny_path)


def test_a_recognizer_unpickled_in_a_spawned_process_works_in_its_forked_child(
        tiny_path: Path, tmp_path: Path, wait_for_forked_child: Callable[[int], str]) -> None:
    """A spawn worker gets its recognizer by pickle, without ``lrfer.load``: a child it forked after
    running the model on two threads waited forever, the fork hook of ``load`` never installed."""
    pickled = tmp_path / "rec.pkl"
    python_script("import pickle, sys, lrfer\n"
                  "pickled = pickle.dumps(lrfer.load(sys.argv[1], device='cpu', detector='mtcnn'))\n"
                  "open(sys.argv[2], 'wb').write(pickled)\n", tiny_path, pickled)
    # lrfer is imported by the script, as a spawn worker imports it to unpickle: not what hung
    unpickling = "pickle.loads(open(sys.argv[1], 'rb').read())"
    python_script(fork_after_use_script(unpickling, wait_for_forked_child), pickled)


def test_crops_over_max_image_pixels_are_refused_in_every_form(rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", 40 * 40)
    big = np.zeros((50, 50), np.uint8)
    for crops in (big[None], [big], [np.repeat(big[..., None], 3, axis=2)], torch.from_numpy(big[None])):
        with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
            rec.predict_crops(crops)


def test_exports_are_listed_for_type_checkers() -> None:
    """``__all__`` built from the lazy table at run time hid every name from ``mypy --strict``; it is
    written out, and must stay the lazy table's names."""
    import lrfer as package

    assert package.__all__ == ["__version__", *package._LAZY]
    for name in package.__all__:
        assert getattr(package, name) is not None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is new in Python 3.11 (the overloads "
                    "themselves are read by type checkers on 3.10 too)")
def test_predict_is_typed_per_kind_of_input() -> None:
    """One union return type made ``for f in rec.predict(path): f.label`` fail type checking."""
    import typing

    overloads = typing.get_overloads(lrfer.Recognizer.predict)
    hints = [typing.get_type_hints(o, globalns=vars(__import__("lrfer.recognizer", fromlist=["x"])) | {
        "PILImage": object}) for o in overloads]
    # A tensor first (torch 2.1's Tensor has an Any base under mypy --strict and would fit the list
    # overload); lists before the other images (without Pillow PILImage is Any and would fit a list);
    # any other iterable (a generator) last: a path or an array, iterable too, is one image.
    assert [h["return"] for h in hints] == [list[lrfer.Face], list[list[lrfer.Face]], list[lrfer.Face],
                                            list[list[lrfer.Face]]]
    assert hints[0]["images"] is torch.Tensor


def test_loading_and_unpickling_again_and_again_keeps_no_generated_source(tiny_path: Path) -> None:
    """torch.fx caches the source of every graph it generates for the life of the process: five per
    load (traced, fused, rewritten in place), 20-114 kB for a zoo model. A recognizer's graphs keep
    theirs while it lives (tracebacks show them); loads and unpickles leave nothing behind."""
    import gc
    import linecache
    import pickle

    from torch.fx import graph_module

    cache = graph_module._loader.eval_cache
    before = set(cache)
    for _ in range(3):
        rec = lrfer.load(tiny_path, device="cpu", detector=None)
        copy = pickle.loads(pickle.dumps(rec))
        held = set(cache) - before
        assert 1 <= len(held) <= 2  # the final graph of each
        assert all(linecache.getlines(key) for key in held)
        del rec, copy
        gc.collect()
        assert set(cache) - before == set()
        assert not [key for key in linecache.cache if key in held]


def test_results_without_landmarks_or_frame_times_stay_equal_through_pickle_and_copy(tiny_path: Path) -> None:
    """NaN equals nothing: a face without landmarks (``detector=None``) or a frame without a time
    compared unequal to itself after a pickle (results from worker processes)."""
    import copy
    import pickle

    from lrfer.results import VideoFrame

    rec = lrfer.load(tiny_path, device="cpu", detector=None)
    face = rec.predict(np.zeros((48, 48), np.uint8))[0]
    frame = VideoFrame(3, float("nan"), [face])
    for restore in (lambda x: pickle.loads(pickle.dumps(x)), copy.deepcopy, copy.copy):
        assert restore(face) == face and hash(restore(face)) == hash(face)
        assert restore(frame) == frame
    rebuilt = lrfer.Face(face.box, tuple((float("nan"), float("nan")) for _ in range(5)), face.det_score,
                         face.face_px, face.label, dict(face.probs))
    assert rebuilt == face and hash(rebuilt) == hash(face)
    assert all(math.isnan(x) for point in rebuilt.landmarks for x in point)
    # one missing point leaves the others, and a subclass keeps its own fields through a copy
    partly = dataclasses.replace(face, landmarks=((3.0, 4.0), (5.0, 6.0), (math.nan, math.nan), (7.0, 8.0), (9.0, 9.0)))
    assert partly.landmarks[0] == (3.0, 4.0) and pickle.loads(pickle.dumps(partly)) == partly

    @dataclasses.dataclass(frozen=True)
    class TrackedFace(lrfer.Face):
        track_id: int = -1

    tracked = TrackedFace(*(getattr(face, f.name) for f in dataclasses.fields(lrfer.Face)), track_id=7)
    assert copy.deepcopy(tracked).track_id == 7 and copy.copy(tracked) == tracked


def test_a_frame_is_unequal_to_what_is_not_a_frame() -> None:
    from lrfer.results import VideoFrame

    frame = VideoFrame(3, 0.1, [])
    assert frame != (frame.index, frame.time_s, frame.faces) and frame != "frame" and frame not in [None, 3]


def test_a_graph_another_thread_makes_during_a_load_keeps_its_source(tiny_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A load let go of every torch.fx source cached while it built its network, also that of a graph
    another thread made meanwhile: its tracebacks lost their source lines, and ``inspect.getsource`` and
    ``torch.jit.script`` of it failed ("Can't get source for ...")."""
    import inspect
    import threading

    import lrfer.recognizer as recognizer
    from torch import fx

    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) + 1

    made: list[fx.GraphModule] = []
    fold_batchnorm = recognizer.fold_batchnorm

    def fold_while_another_thread_traces(model: torch.nn.Module) -> torch.nn.Module:
        other = threading.Thread(target=lambda: made.append(fx.symbolic_trace(AddOne())))
        other.start()
        other.join()
        return fold_batchnorm(model)

    monkeypatch.setattr(recognizer, "fold_batchnorm", fold_while_another_thread_traces)
    rec = lrfer.load(tiny_path, device="cpu", detector=None)
    assert rec.predict_tensor(torch.rand(1, 1, 48, 48)).shape == (1, len(rec.classes))
    (graph,) = made
    assert "relu" in inspect.getsource(type(graph).forward)  # what torch.jit.script of it reads first


def test_a_model_that_cannot_be_copied_runs_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    """A model neither torch.fx nor deepcopy can copy (a weight_norm layer after a forward pass) made
    ``Recognizer(...)`` raise once untraceable models ran on a copy; it runs on the model, with a warning."""
    import dataclasses

    from lrfer.recognizer import Recognizer

    class Untraceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.utils.weight_norm(torch.nn.Linear(48 * 48, 7))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1:  # data-dependent control flow: torch.fx cannot trace it
                x = x + 0
            return self.fc(x.flatten(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated: still in use
        model = Untraceable().eval()
    model(torch.zeros(1, 1, 48, 48))  # weight_norm's weight is now a computed tensor: deepcopy refuses it
    spec = dataclasses.replace(lrfer.get_spec("gmenet-fer2013-16px"), resolution=48)
    rec = Recognizer(model, spec, torch.device("cpu"), None)
    x = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    probs = rec.predict_tensor(x)
    assert probs.shape == (2, 7) and torch.allclose(probs.sum(1), torch.ones(2))
    assert "Untraceable cannot be copied" in caplog.text and "changes to rec.model reach predictions" in caplog.text


@pytest.mark.parametrize("traceable", [True, False])
def test_changes_to_rec_model_do_not_reach_predictions(tiny_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       traceable: bool) -> None:
    """A model torch.fx cannot trace (MA-Net) was run as ``rec.model`` itself: ``rec.model.train()`` (a
    timm habit before fine-tuning) made its predictions train-mode BatchNorm and dropout, different on
    every call, while every traced model ignored it."""
    import lrfer.recognizer as recognizer

    if not traceable:
        monkeypatch.setattr(recognizer, "fold_batchnorm", lambda model: model)  # what it returns for such a model
    rec = lrfer.load(tiny_path, device="cpu", detector=None)
    x = torch.rand(4, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    before = rec.predict_tensor(x)
    rec.model.train()
    with torch.no_grad():
        next(rec.model.parameters()).mul_(0.5)
    assert torch.equal(rec.predict_tensor(x), before)


def test_predict_takes_numpy_integers_and_checks_batch_size_before_any_step(rec: lrfer.Recognizer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``streams=np.int64(2)`` was refused ("must be an integer >= 1; got np.int64(2)") where ``batch_size``
    takes NumPy integers; a bad ``batch_size`` came from the first step's model call, after its images were
    decoded and detected, and not at all for an empty list."""
    images = [np.zeros((8, 8), dtype=np.uint8)] * 4
    assert len(rec.predict(images, batch_size=np.int64(8), streams=np.int64(2))) == 4
    steps: list[int] = []
    monkeypatch.setattr(rec, "_predict_step", lambda arrays, **_: steps.append(len(arrays)) or [[] for _ in arrays])
    for batch_size in (0, 2.5):
        for listed in (images, []):
            with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
                rec.predict(listed, batch_size=batch_size, streams=2)  # type: ignore[arg-type]
    assert steps == []


def test_predict_on_several_streams_gives_the_results_of_one(rec: lrfer.Recognizer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A list in steps of 3 images, two steps at a time on kept threads, each with half the caller's torch
    threads: the same faces in the same order as one step at a time; the caller's count restored."""
    import threading

    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 3)
    images = list(np.random.default_rng(5).integers(0, 256, (11, 40, 40, 3), dtype=np.uint8))
    seen: list[tuple[int, int, int]] = []
    predict_step = rec._predict_step

    def recorded(arrays: list[np.ndarray], **options: int) -> list[list[Face]]:
        first = next(i for i, image in enumerate(images) if np.array_equal(image, arrays[0]))
        seen.append((threading.get_ident(), torch.get_num_threads(), len(arrays), first))
        return predict_step(arrays, **options)

    monkeypatch.setattr(rec, "_predict_step", recorded)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = rec.predict(images, streams=1)
        assert {(ident, threads) for ident, threads, _, _ in seen} == {(threading.get_ident(), 2)}
        seen.clear()
        two = rec.predict(images, streams=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert [n for _, _, n, _ in sorted(seen, key=lambda step: step[3])] == [3, 3, 3, 2]  # steps start on 2 threads
    assert threading.get_ident() not in {ident for ident, _, _, _ in seen} and {threads for _, threads, _, _ in seen} == {1}
    assert len(two) == 11 and [[f.probs for f in faces] for faces in two] == \
        [[pytest.approx(f.probs, abs=1e-6) for f in faces] for faces in one]
    assert rec.predict(images[0], streams=2) == two[0]


@pytest.mark.parametrize("threads, streams", [(2, 2), (1, 1), (4, 2)])
def test_by_default_a_long_list_takes_two_streams_if_the_caller_has_two_threads(
        rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch, threads: int, streams: int) -> None:
    """streams=None on CPU: 2 when the calling thread runs torch on 2 threads or more, each step on half of
    them (the calling thread's own count untouched); 1 for a caller who chose one thread, which keeps its
    one thread and the calling thread."""
    import threading

    import lrfer.overlap as overlap

    used: list[tuple[int, int]] = []  # streams, and the calling thread's torch threads meanwhile (left alone)
    real = overlap.overlapped
    monkeypatch.setattr(overlap, "overlapped", lambda work, items, n, device, *rest:
                        used.append((n, torch.get_num_threads())) or real(work, items, n, device, *rest))
    seen: set[tuple[bool, int]] = set()
    monkeypatch.setattr(rec, "_predict_step", lambda arrays, **_: seen.add(
        (threading.get_ident() == caller, torch.get_num_threads())) or [[] for _ in arrays])
    caller, before = threading.get_ident(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rec.predict([np.zeros((8, 8), dtype=np.uint8)] * 40)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert used == [(streams, threads)]
    assert seen == {(streams == 1, threads // streams)}


def test_predict_on_several_streams_names_a_bad_image_and_checks_streams(rec: lrfer.Recognizer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import lrfer.recognizer as recognizer

    monkeypatch.setattr(recognizer, "IMAGES_PER_STEP", 2)
    images: list[object] = list(np.random.default_rng(6).integers(0, 256, (7, 20, 20), dtype=np.uint8))
    images[5] = np.zeros((20, 20), dtype=np.float64)
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"images\[5\]: .*float64"):
        rec.predict(images, streams=2)
    assert torch.get_num_threads() == threads
    for streams in (0, 1.5, True):
        with pytest.raises(ValueError, match="streams must be an integer >= 1"):
            rec.predict(images[:2], streams=streams)  # type: ignore[call-overload]


@pytest.mark.parametrize("count, streams, sizes", [(11, 2, [6, 5]), (40, 2, [20, 20]), (65, 2, [17, 17, 17, 14]),
                                                   (3, 4, [1, 1, 1]), (40, 1, [32, 8]), (1, 2, [1])])
def test_several_streams_get_steps_of_equal_size(rec: lrfer.Recognizer, monkeypatch: pytest.MonkeyPatch,
                                                 count: int, streams: int, sizes: list[int]) -> None:
    """Steps of at most 32 images on CPU, evened out so that the streams end together (40 images on 2
    streams as 32 and 8 kept one core idle for the last step: slower than one stream); one stream keeps
    the steps of 32, in the calling thread; never more streams than steps."""
    import threading

    monkeypatch.setattr(rec, "_predict_step", lambda arrays, **_: seen.append(
        (int(arrays[0].flat[0]), threading.get_ident(), len(arrays))) or [[] for _ in arrays])
    seen: list[tuple[int, int, int]] = []
    images = [np.full((8, 8), i, dtype=np.uint8) for i in range(count)]  # the steps in order of their first image
    assert rec.predict(images, streams=streams) == [[]] * count
    assert [n for _, _, n in sorted(seen)] == sizes
    on_caller = {ident for _, ident, _ in seen} == {threading.get_ident()}
    assert on_caller == (min(streams, len(sizes)) == 1)  # a single step runs in the calling thread


def test_avx512_without_bf16_instructions_is_not_native_bf16(monkeypatch) -> None:
    """oneDNN's check says yes on any AVX-512 CPU (Skylake-SP to Ice Lake), which only emulates bf16:
    precision="auto" must keep P-Net in fp32 there, and precision="bf16" must warn."""
    from lrfer import recognizer

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert recognizer.cpu_has_fast_bf16() is False
    assert recognizer.pnet_precision_for("auto", cpu, "auto") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)  # Sapphire Rapids
    assert recognizer.pnet_precision_for("auto", cpu, "auto") == "bf16"
