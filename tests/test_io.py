"""lrfer.io: loading, validation and file discovery (no model needed)."""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from lrfer.io import (
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    header_size,
    pack_images,
    unpack_images,
    is_image_like,
    iter_image_files,
    load_image,
    read_image_file,
    to_device_tensor,
    to_device_tensors,
    upload_together,
    validate_array,
)


def save(rgb: np.ndarray, path: Path) -> Path:
    """Write an RGB image with OpenCV (a core dependency; Pillow is optional)."""
    import cv2

    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    buf.tofile(str(path))
    return path


@pytest.fixture()
def rgb() -> np.ndarray:
    img = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)  # a pure red pixel: catches BGR/RGB swaps
    return img


@pytest.mark.parametrize("decode_to_rgb", [True, False])  # OpenCV >= 4.11's IMREAD_COLOR_RGB, or BGR + cvtColor
def test_png_round_trip_is_exact_rgb(rgb: np.ndarray, tmp_path: Path, monkeypatch, decode_to_rgb: bool) -> None:
    if not decode_to_rgb:
        monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB", raising=False)
    elif not hasattr(cv2, "IMREAD_COLOR_RGB"):
        pytest.skip(f"OpenCV {cv2.__version__} has no IMREAD_COLOR_RGB (the fallback is tested)")
    save(rgb, tmp_path / "a.png")
    out = read_image_file(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (12, 9, 3)
    assert np.array_equal(out, rgb)
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_non_ascii_path(rgb: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "visages_été" / "gesicht_ü.png"
    path.parent.mkdir()
    save(rgb, path)
    assert np.array_equal(load_image(path), rgb)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    img = np.zeros((20, 40, 3), np.uint8)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    pil.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (40, 20, 3)


def test_gray_and_rgba_become_rgb(rgb: np.ndarray) -> None:
    gray = rgb[..., 1]
    out = validate_array(gray)
    assert out.shape == (12, 9, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    rgba = np.concatenate([rgb, np.zeros((12, 9, 1), np.uint8)], axis=2)
    assert np.array_equal(validate_array(rgba), rgb)
    assert np.array_equal(validate_array(gray[..., None]), out)


def test_tensor_layouts_agree(rgb: np.ndarray) -> None:
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(load_image(chw), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb)), rgb)
    assert np.array_equal(load_image(chw[:1]), np.repeat(rgb[..., :1], 3, axis=2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_tensors_of_another_dtype_get_a_torch_hint(dtype: torch.dtype) -> None:
    """A bfloat16 tensor (a half-precision pipeline's output) raised numpy's TypeError "unsupported
    ScalarType" when the check was left to the numpy validation; a float one got a numpy hint."""
    with pytest.raises(ValueError, match=r"image tensors must be uint8.*\.to\(torch\.uint8\)"):
        load_image(torch.rand(3, 8, 8).to(dtype))


@pytest.mark.parametrize("dtype, hint, not_hint", [
    (torch.int32, r"x\.clamp\(0, 255\)\.to\(torch\.uint8\) for 0\.\.255 integers", "x * 255"),
    (torch.int16, r">> 8\).to\(torch\.uint8\) for 16-bit pixels", "x * 255"),
    (torch.bool, r"x\.to\(torch\.uint8\) \* 255 for a mask", "round"),
])
def test_integer_tensors_get_an_integer_hint(dtype: torch.dtype, hint: str, not_hint: str) -> None:
    """Integer pixels multiplied by 255, as the 0..1 float hint said, turn white."""
    with pytest.raises(ValueError, match=hint) as err:
        load_image(torch.zeros(3, 8, 8, dtype=dtype))
    assert not_hint not in str(err.value)


def test_pil_modes(rgb: np.ndarray) -> None:
    Image = pytest.importorskip("PIL.Image")
    assert np.array_equal(load_image(Image.fromarray(rgb)), rgb)
    assert load_image(Image.fromarray(rgb).convert("L")).shape == (12, 9, 3)
    assert np.array_equal(load_image(Image.fromarray(rgb).convert("RGBA")), rgb)
    assert load_image(Image.fromarray(rgb).convert("P")).shape == (12, 9, 3)


def test_a_palette_image_gives_its_colours_not_its_indices(rgb: np.ndarray) -> None:
    """A PIL image in mode P holds indices into its palette: read as they are, they were a gray image."""
    Image = pytest.importorskip("PIL.Image")
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(load_image(palette), np.asarray(palette.convert("RGB")))


def test_pil_16_bit_gray_reads_as_its_file_does(tmp_path: Path) -> None:
    """OpenCV reads a 16-bit PNG by its high bytes; a PIL image of it (mode I;16) gives the same pixels."""
    Image = pytest.importorskip("PIL.Image")
    deep = np.random.default_rng(1).integers(0, 65536, (12, 9), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.png"), deep)
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I;16")
        assert np.array_equal(load_image(im), read_image_file(tmp_path / "deep.png"))
    assert np.array_equal(load_image(tmp_path / "deep.png")[..., 0], (deep >> 8).astype(np.uint8))


def test_pil_images_that_cannot_be_read_raise_value_error(rgb: np.ndarray, tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    for mode in ("F", "I"):  # 32-bit pixels: no one scale to 0..255
        with pytest.raises(ValueError, match=f"mode {mode}: images must be 8-bit"):
            load_image(Image.fromarray(rgb[..., 0]).convert(mode))
    Image.fromarray(np.tile(rgb, (20, 20, 1))).save(tmp_path / "photo.jpg", quality=95)
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # whole header, half the pixels
    with Image.open(tmp_path / "photo.jpg") as closed:
        pass
    with Image.open(tmp_path / "cut.jpg") as cut:  # closed after the test (no ResourceWarning)
        for image in [cut, Image.new("La", (4, 4)), closed]:
            with pytest.raises(ValueError, match="cannot read the pixels of PIL image"):
                load_image(image)


def test_a_file_that_cannot_be_opened_is_a_value_error(rgb: np.ndarray, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    save(rgb, tmp_path / "a.png")

    def denied(path: str, *args, **kwargs) -> np.ndarray:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(np, "fromfile", denied)
    with pytest.raises(ValueError, match="cannot read image .*a.png.*Permission denied"):
        read_image_file(tmp_path / "a.png")


def test_validated_arrays_are_writable(rgb: np.ndarray) -> None:
    frozen = rgb.copy()
    frozen.setflags(write=False)
    out = validate_array(frozen)
    assert out.flags.writeable and out.flags.c_contiguous and np.array_equal(out, rgb)
    assert validate_array(rgb) is rgb  # no copy when none is needed


@pytest.mark.parametrize(("bad", "problem"), [
    (np.zeros((4, 4, 3), np.float32), "dtype float32"),
    (np.zeros((4, 4), np.uint16), "dtype uint16"),
    (np.zeros((4, 4), bool), "dtype bool"),
    (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
    (np.zeros((4,), np.uint8), "shape"),
    (np.zeros((4, 4, 5), np.uint8), "shape"),
    (np.zeros((4, 0), np.uint8), "empty image"),
    (torch.zeros(3, 0, 4, dtype=torch.uint8), "empty image"),
    (torch.zeros(2, 4, 4, 4, dtype=torch.uint8), "shape"),
    (torch.zeros(3, 4, 4, dtype=torch.int64), "dtype"),
    (b"bytes", "unsupported image input"),
])
def test_validation_errors(bad, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        load_image(bad)


@pytest.mark.parametrize(("bad", "hint"), [
    (np.zeros((3, 40, 50), np.uint8), r"channels first \(C, H, W\) is torch's layout: pass arr.transpose\(1, 2, 0\)"),
    (np.zeros((1, 40, 50), np.uint8), r"arr.transpose\(1, 2, 0\)"),
    (torch.zeros(1, 3, 40, 50, dtype=torch.uint8),
     r"a batch \(N, 3, H, W\) is not one image: pass a list \(list\(x\)\)"),
    (np.zeros((2, 40, 50, 3), np.uint8), r"a batch of N images \(N, H, W, C\) is not one image"),
])
def test_wrong_shapes_say_what_to_pass(bad, hint: str) -> None:
    """A channel-first numpy array (torch's layout) and a torch batch (1, 3, H, W), a torchvision
    user's habits, got only "expected (H, W) gray or (H, W, 3) RGB" / "expected (3, H, W) or (H, W, 3)"."""
    with pytest.raises(ValueError, match=f"wrong shape .*{hint}"):
        load_image(bad)


def test_shapes_without_a_likely_cause_get_no_hint() -> None:
    for bad in (np.zeros((40, 50, 2), np.uint8), np.zeros((40, 50, 5), np.uint8),
                torch.zeros(2, 40, 50, dtype=torch.uint8)):
        with pytest.raises(ValueError, match=r"RGBA$"):
            load_image(bad)


def test_a_url_is_named_as_one_not_as_a_mangled_missing_file() -> None:
    """An image URL, as Hugging Face pipelines take, said "no such file 'https:/example.com/a.jpg'" (one
    slash: pathlib's reading), neither the string given nor what to do."""
    for url in ("https://example.com/a.jpg", "http://host:8080/photos/b.png?x=1"):
        with pytest.raises(ValueError, match=f"cannot read image: '{re.escape(url)}' is a URL; .*pass its path"):
            load_image(url)
    with pytest.raises(ValueError, match="no such file 'photos/missing.jpg'"):
        load_image("photos/missing.jpg")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ValueError, match="text.jpg.*not a readable image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(ValueError, match="empty file"):
        load_image(str(tmp_path / "zero.png"))
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


def test_to_device_tensor(rgb: np.ndarray) -> None:
    t = to_device_tensor(rgb, "cpu")
    assert t.shape == (3, 12, 9) and t.dtype == torch.uint8
    assert torch.equal(t.permute(1, 2, 0), torch.from_numpy(rgb))
    assert t.data_ptr() == rgb.ctypes.data  # on CPU a view of the (H, W, 3) pixels: no copy
    flipped = rgb[::-1]  # not contiguous: copied once
    assert torch.equal(to_device_tensor(flipped, "cpu").permute(1, 2, 0), torch.from_numpy(flipped.copy()))


def test_to_device_tensors_on_cpu_are_views(rgb: np.ndarray) -> None:
    tensors = to_device_tensors([rgb, rgb[:5]], "cpu")
    assert [tuple(t.shape) for t in tensors] == [(3, 12, 9), (3, 5, 9)]
    assert all(t.data_ptr() == rgb.ctypes.data for t in tensors)


def test_upload_together_keeps_each_photos_pixels_in_order() -> None:
    """The GPU's upload (one host buffer, one copy, planar per image size), run on CPU."""
    rng = np.random.default_rng(3)
    shapes = [(5, 7, 3), (4, 6, 3), (5, 7, 3), (9, 2, 3), (4, 6, 3)]
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    arrays[3] = np.ascontiguousarray(arrays[3].transpose(1, 0, 2)).transpose(1, 0, 2)  # not C-contiguous
    tensors = upload_together(arrays, "cpu", pin=False)
    assert len(tensors) == len(arrays)
    for a, t in zip(arrays, tensors):
        assert t.dtype == torch.uint8 and t.is_contiguous() and t.shape == (3, *a.shape[:2])
        assert torch.equal(t.permute(1, 2, 0), torch.from_numpy(np.ascontiguousarray(a)))
    storage = [t.untyped_storage().data_ptr() for t in tensors]
    assert storage[0] == storage[2] and storage[1] == storage[4]  # one planar tensor per image size
    assert len(set(storage)) == 3
    assert upload_together([], "cpu", pin=False) == []


def test_opencvs_warning_about_a_file_lrfer_reports_itself_is_not_printed(
        rgb: np.ndarray, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A truncated PNG printed OpenCV's '[ WARN:0@0.02] global grfmt_png.cpp:793 readFromStreamOrBuffer
    PNG input buffer is incomplete' on stderr (from C++, past Python's logging), besides lrfer's own
    error naming the file. OpenCV's log is errors only while lrfer decodes, and as it was afterwards.
    It used to skip on opencv-python-headless 4.10.0.84 (setup.cfg's lower bound), which has only
    ``cv2.getLogLevel``/``cv2.setLogLevel``, not ``cv2.utils.logging``: lrfer's fallback went untested."""
    logging_api = real_opencv_log()
    if logging_api is None:
        pytest.skip("this OpenCV has neither cv2.utils.logging nor cv2.getLogLevel/setLogLevel")
    data = save(rgb, tmp_path / "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    before = logging_api.getLogLevel()
    logging_api.setLogLevel(OPENCV_LOG_LEVEL_WARNING)
    try:
        capfd.readouterr()
        assert cv2.imdecode(np.frombuffer(cut.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is None
        if "WARN" not in capfd.readouterr().err:
            pytest.skip("this OpenCV says nothing about a truncated PNG")
        with pytest.raises(ValueError, match="cut.png"):  # lrfer's own word on it
            read_image_file(cut)
        assert "WARN" not in capfd.readouterr().err
        assert logging_api.getLogLevel() == OPENCV_LOG_LEVEL_WARNING
    finally:
        logging_api.setLogLevel(before)


def test_the_real_opencv_log_is_errors_only_while_lrfer_decodes_and_put_back_after(
        rgb: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenCV test above skips on opencv-python-headless 4.10.0.84 (setup.cfg's lower bound): it has no
    cv2.utils.logging, and a truncated PNG there gives libpng's own message, not an OpenCV WARN. So
    nothing showed that lrfer's fallback, ``cv2.getLogLevel``/``cv2.setLogLevel``, quiets a real
    OpenCV of that kind: the level seen by ``cv2.imdecode`` itself is errors only, and restored."""
    logging_api = real_opencv_log()
    if logging_api is None:
        pytest.skip("this OpenCV has neither cv2.utils.logging nor cv2.getLogLevel/setLogLevel")
    seen: list[int] = []
    decode = cv2.imdecode

    def recording_decode(*args: Any) -> Any:
        seen.append(int(logging_api.getLogLevel()))
        return decode(*args)

    path = save(rgb, tmp_path / "whole.png")
    before = logging_api.getLogLevel()
    logging_api.setLogLevel(OPENCV_LOG_LEVEL_WARNING)
    try:
        monkeypatch.setattr(cv2, "imdecode", recording_decode)
        assert read_image_file(path).shape == rgb.shape
        assert seen == [OPENCV_LOG_LEVEL_ERROR]
        assert logging_api.getLogLevel() == OPENCV_LOG_LEVEL_WARNING
    finally:
        logging_api.setLogLevel(before)


#: ``cv::utils::logging::LOG_LEVEL_WARNING``/``LOG_LEVEL_ERROR``, the same numbers in both of OpenCV's
#: Python spellings.
OPENCV_LOG_LEVEL_WARNING = 3
OPENCV_LOG_LEVEL_ERROR = 2


def real_opencv_log() -> Any:
    """Where this OpenCV keeps getLogLevel/setLogLevel: ``cv2.utils.logging`` (opencv-python-headless 5.0.0
    has it), else ``cv2`` itself (4.10.0.84 has only that); None where it has neither."""
    for where in (getattr(getattr(cv2, "utils", None), "logging", None), cv2):
        if callable(getattr(where, "getLogLevel", None)) and callable(getattr(where, "setLogLevel", None)):
            return where
    return None


class FakeOpenCVLog:
    """``cv2.utils.logging``'s two functions, for :func:`opencv_errors_only` without touching OpenCV's."""

    def __init__(self, level: int) -> None:
        self.level = level

    def getLogLevel(self) -> int:  # noqa: N802 - OpenCV's names
        return self.level

    def setLogLevel(self, level: int) -> None:  # noqa: N802
        self.level = level


def test_opencv_errors_only_puts_the_level_back_after_the_last_decoder_and_leaves_quieter_ones() -> None:
    from types import SimpleNamespace

    from lrfer.io import opencv_errors_only

    log = FakeOpenCVLog(4)  # INFO
    fake = SimpleNamespace(utils=SimpleNamespace(logging=log))
    with opencv_errors_only(fake):
        assert log.level == 2
        with opencv_errors_only(fake):  # a second thread decoding meanwhile
            pass
        assert log.level == 2
    assert log.level == 4
    with opencv_errors_only(fake):
        log.setLogLevel(5)  # the user's own choice meanwhile: kept
    assert log.level == 5
    log.level = 0  # SILENT: left alone
    with opencv_errors_only(fake):
        assert log.level == 0
    assert log.level == 0
    old = FakeOpenCVLog(3)  # an OpenCV with cv2.setLogLevel only
    with opencv_errors_only(SimpleNamespace(getLogLevel=old.getLogLevel, setLogLevel=old.setLogLevel)):
        assert old.level == 2
    assert old.level == 3
    with opencv_errors_only(SimpleNamespace()):  # neither: decoding goes on as it was
        pass


FORK_WHILE_DECODING = """
import os, sys, threading, time
import cv2
from lrfer.io import _QuietOpenCV, _opencv_log_functions, opencv_errors_only
get, set_, _ = _opencv_log_functions(cv2)
set_(3)  # WARNING
inside, leave = threading.Event(), threading.Event()
def decoding():
    with opencv_errors_only(cv2):
        inside.set()
        leave.wait(30)
worker = threading.Thread(target=decoding)
worker.start()
assert inside.wait(30) and int(get()) == 2
pid = os.fork()
if pid == 0:  # the decoding thread is not in the child: its level put back, its count gone, the lock free
    level, count = int(get()), _QuietOpenCV.inside
    with opencv_errors_only(cv2):
        quiet = int(get())
    os._exit(0 if (level, count, quiet, int(get())) == (3, 0, 2, 3) else 3)
leave.set()
worker.join()
"""


def test_a_child_forked_while_a_thread_decodes_gets_opencvs_level_back(
        wait_for_forked_child: Callable[[int], str]) -> None:
    """Pins down _quiet_opencv_after_fork: a child forked while another thread of its parent was inside
    opencv_errors_only kept OpenCV's log at errors only for good (the thread that would put it back is
    not in the child), and counted that thread as still decoding."""
    import subprocess
    import sys

    if real_opencv_log() is None or not hasattr(os, "fork"):
        pytest.skip("an OpenCV without getLogLevel/setLogLevel, or no os.fork")
    proc = subprocess.run([sys.executable, "-c", FORK_WHILE_DECODING + wait_for_forked_child(30)], capture_output=True,
                          text=True, timeout=90, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr


def test_is_image_like(rgb: np.ndarray) -> None:
    """A generator or ``map(...)`` of images counted as one image, and predict refused it as an
    'unsupported image input'; a path, bytes, an array or a tensor, iterable too, are each one input."""
    assert is_image_like(rgb) and is_image_like("a.jpg") and is_image_like(Path("a.jpg"))
    assert is_image_like(b"a.jpg") and is_image_like(torch.from_numpy(rgb)) and is_image_like(3)
    assert not is_image_like([rgb]) and not is_image_like((rgb,))
    assert not is_image_like(a for a in [rgb]) and not is_image_like(map(np.asarray, [rgb])) and not is_image_like(iter([]))


def _tree(tmp_path: Path, rgb: np.ndarray) -> Path:
    root = tmp_path / "photos"
    for rel in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", "sub/e.tiff"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".txt":
            p.write_text("not an image")
        else:
            save(rgb, p)
    return root


def test_iter_image_files(rgb: np.ndarray, tmp_path: Path) -> None:
    root = _tree(tmp_path, rgb)
    found = iter_image_files([root])
    assert [str(rel) for _, rel in found] == ["a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.webp", "sub/e.tiff"]
    assert all(path == root / rel for path, rel in found)
    explicit = iter_image_files([root / "notes.txt", root / "sub" / "c.jpeg"])  # explicit files are kept
    assert [rel.name for _, rel in explicit] == ["notes.txt", "c.jpeg"]
    with pytest.raises(ValueError, match="no such file or folder"):
        iter_image_files([tmp_path / "missing"])
    assert ".jpg" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS
    assert len(iter_image_files([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])) == 0


def test_a_folder_search_finds_jpegs_named_jfif_or_jpe(tmp_path: Path) -> None:
    """A folder's ``.jfif`` and ``.jpe`` photos (JPEG's other names) were left out without a word, though
    the same files given by name are read and ``--annotate`` names their copies."""
    photo = np.zeros((8, 8, 3), np.uint8)
    for name in ("a.jfif", "b.JPE", "c.jpg"):
        ok, encoded = cv2.imencode(".jpg", photo)
        assert ok
        (tmp_path / name).write_bytes(encoded.tobytes())
    assert [str(rel) for _, rel in iter_image_files([tmp_path])] == ["a.jfif", "b.JPE", "c.jpg"]


def test_image_files_are_stored_compactly(tmp_path: Path) -> None:
    for i in range(300):
        (tmp_path / f"{i:04d}.jpg").write_bytes(b"")
    found = iter_image_files([tmp_path])
    assert len(found) == 300 and found[299] == (tmp_path / "0299.jpg", Path("0299.jpg"))
    assert found.path(0) == str(tmp_path / "0000.jpg")
    assert found._paths.nbytes < 300 * len(str(tmp_path / "0000.jpg")) + 300  # one byte string per file


def test_image_file_dataset_reports_errors_per_item(rgb: np.ndarray, tmp_path: Path) -> None:
    save(rgb, tmp_path / "ok.png")
    (tmp_path / "bad.png").write_text("broken")
    ds = ImageFileDataset([tmp_path / "ok.png", tmp_path / "bad.png"])
    assert len(ds) == 2
    i, img = ds[0]
    assert i == 0 and isinstance(img, torch.Tensor) and np.array_equal(img.numpy(), rgb)
    j, err = ds[1]
    assert j == 1 and isinstance(err, str) and "bad.png" in err
    items = unpack_images(pack_images([ds[1], ds[0], ds[1]]))
    assert [index for index, _ in items] == [1, 0, 1]
    assert items[0][1] == err and items[2][1] == err and np.array_equal(items[1][1], rgb)


def test_packed_images_go_straight_to_shared_memory_in_a_worker(rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a decoding worker the batch is concatenated into shared memory (no second copy when it is
    sent); in-process it stays ordinary memory. Either way it unpacks to the same images."""
    import torch.utils.data

    batch = [(0, torch.from_numpy(rgb)), (1, "unreadable"), (2, torch.from_numpy(rgb[:5]))]
    in_process = pack_images(batch)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    in_worker = pack_images(batch)
    assert in_worker[2].is_shared() and not in_process[2].is_shared()
    for packed in (in_process, in_worker):
        items = unpack_images(packed)
        assert [i for i, _ in items] == [0, 1, 2] and items[1][1] == "unreadable"
        assert np.array_equal(items[0][1], rgb) and np.array_equal(items[2][1], rgb[:5])


needs_memfd = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="DecodeSlots need memfd_create (Linux)")


@needs_memfd
def test_decode_slots_are_claimed_lowest_first_and_freed_with_the_last_view(
        slot_backed: Callable[[np.ndarray], bool]) -> None:
    from lrfer.io import DecodeSlots, SlotPixels

    slots = DecodeSlots(3, 64)
    assert [slots.claim(64), slots.claim(10), slots.claim(1)] == [0, 1, 2]
    assert slots.claim(1) is None  # all taken: the worker makes a segment of its own
    assert slots.claim(65) is None  # too large for a slot
    slots.pixels[1, :6] = torch.arange(6, dtype=torch.uint8)
    flat = slots.view(SlotPixels(1, 6))
    rows = flat.reshape(2, 3)[1:]
    assert flat.tolist() == [0, 1, 2, 3, 4, 5] and slot_backed(rows)
    del flat
    assert slots.claim(1) is None  # a view of slot 1 still lives
    assert rows.tolist() == [[3, 4, 5]]
    del rows
    assert slots.claim(1) == 1
    slots.release(0)
    assert slots.claim(1) == 0


@needs_memfd
def test_packed_images_go_to_a_free_slot_in_a_worker(rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                                                    slot_backed: Callable[[np.ndarray], bool]) -> None:
    """In a worker with :class:`~lrfer.io.DecodeSlots` a batch that fits goes to the lowest free slot
    and unpacks from it; one that does not fit, or finds no slot free, gets a segment of its own."""
    import torch.utils.data

    from lrfer.io import DecodeSlots, SlotPixels

    slots = DecodeSlots(2, 2 * rgb.size)
    batch = [(0, torch.from_numpy(rgb)), (1, "unreadable"), (2, torch.from_numpy(rgb[:5]))]
    assert isinstance(pack_images(batch, slots)[2], torch.Tensor)  # not in a worker: no slot
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    first, second, third = (pack_images(batch, slots) for _ in range(3))
    assert first[2] == SlotPixels(0, rgb.size + rgb[:5].size) and second[2] == SlotPixels(1, first[2].size)
    assert isinstance(third[2], torch.Tensor) and third[2].is_shared()  # both slots held
    too_large = pack_images([(0, torch.from_numpy(rgb)), (1, torch.from_numpy(rgb)), (2, torch.from_numpy(rgb))], slots)
    assert isinstance(too_large[2], torch.Tensor)
    with pytest.raises(ValueError, match="needs the DecodeSlots"):
        unpack_images(first)
    for packed in (first, second, third):
        items = unpack_images(packed, slots)
        assert [i for i, _ in items] == [0, 1, 2] and items[1][1] == "unreadable"
        assert np.array_equal(items[0][1], rgb) and np.array_equal(items[2][1], rgb[:5])
        assert slot_backed(items[0][1]) == isinstance(packed[2], SlotPixels)


def png_claiming(width: int, height: int) -> bytes:
    """A few bytes of PNG whose header claims ``width`` x ``height`` gray pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_file_over_opencvs_pixel_limit_is_a_value_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV raises cv2.error (not None) for a header over its 2**30 pixel limit."""
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", None)  # lrfer's own limit, checked first, would refuse it
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(40000, 40000))
    with pytest.raises(ValueError, match="huge.png.*OpenCV refused"):
        read_image_file(path)


def test_images_over_max_image_pixels_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", 20 * 20)
    assert validate_array(np.zeros((20, 20), np.uint8)).shape == (20, 20, 3)
    with pytest.raises(ValueError, match="image too large \\(21x20 = 420 pixels\\).*MAX_IMAGE_PIXELS = 400"):
        validate_array(np.zeros((20, 21), np.uint8))
    save(np.zeros((30, 30, 3), np.uint8), tmp_path / "big.png")
    with pytest.raises(ValueError, match="too large .*big.png"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", None)
    assert load_image(tmp_path / "big.png").shape == (30, 30, 3)


def test_pil_image_opened_from_a_rotated_file_is_upright_as_the_path(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    stored = np.random.default_rng(1).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "rot.png", exif=exif)
    from_path = load_image(tmp_path / "rot.png")
    assert from_path.shape == (40, 20, 3)
    with Image.open(tmp_path / "rot.png") as opened:
        assert np.array_equal(load_image(opened), from_path)
        assert load_image(opened.copy()).shape == (20, 40, 3)  # the caller's own image: taken as it is


def test_32_bit_file_that_only_pillow_reads_is_refused_not_blackened(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((16, 16), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    if cv2.imread(str(tmp_path / "float.tif")) is not None:
        pytest.skip("this OpenCV decodes float TIFFs itself")
    with pytest.raises(ValueError, match="float.tif.*mode F.*8-bit"):
        read_image_file(tmp_path / "float.tif")


def test_bomb_size_is_read_from_the_header_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", 100 * 100)
    for suffix in (".png", ".jpg"):
        save(np.zeros((101, 100, 3), np.uint8), tmp_path / f"big{suffix}")
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded before the size check"))
    for suffix in (".png", ".jpg"):
        with pytest.raises(ValueError, match=f"100x101 .*big{suffix}"):
            read_image_file(tmp_path / f"big{suffix}")


def test_bomb_size_of_an_opened_pil_image_is_checked_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Image.open(io.BytesIO(upload))`` is lazy: its pixels were decoded before a limit lowered below
    Pillow's own refused them."""
    Image = pytest.importorskip("PIL.Image")
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", 100 * 100)
    save(np.zeros((101, 100, 3), np.uint8), tmp_path / "big.jpg")
    with Image.open(tmp_path / "big.jpg") as opened:
        monkeypatch.setattr(type(opened), "load", lambda *args: pytest.fail("decoded before the size check"))
        with pytest.raises(ValueError, match="100x101 .*PIL image"):
            load_image(opened)


def test_bomb_size_is_read_behind_large_metadata_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXIF, XMP and ICC segments of up to 64 KiB each come before the frame header: behind two of
    them a bomb's size went unread and the whole image was decoded before it was refused."""
    import lrfer.io

    monkeypatch.setattr(lrfer.io, "MAX_IMAGE_PIXELS", 100 * 100)
    ok, buf = cv2.imencode(".jpg", np.zeros((101, 100, 3), np.uint8))
    icc = b"\xff\xe2" + (65_002).to_bytes(2, "big") + bytes(65_000)
    data = buf.tobytes()
    (tmp_path / "big.jpg").write_bytes(data[:2] + icc + icc + b"\xff" + data[2:])  # and a fill byte
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded before the size check"))
    with pytest.raises(ValueError, match="100x101 .*big.jpg"):
        read_image_file(tmp_path / "big.jpg")


def test_jpeg_size_is_read_from_its_frame_header_whatever_the_segment_order(tmp_path: Path) -> None:
    """Huffman tables (marker C4, inside the C0..CF range of the frame markers) may come before the frame
    header: their bytes are no image size (read as one, a photo is refused as a bomb or a bomb let through)."""
    ok, buf = cv2.imencode(".jpg", np.zeros((101, 100, 3), np.uint8))
    data, segments, at = buf.tobytes(), [], 2
    while data[at + 1] != 0xDA:  # the segments before the scan
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        segments.append(data[at:end])
        at = end
    order = sorted(segments, key=lambda seg: 0 if 0xE0 <= seg[1] <= 0xEF else 1 if seg[1] == 0xC4 else 2)
    assert order[1][1] == 0xC4 and order[-1][1] != 0xC4  # tables now before the frame header
    moved = data[:2] + b"".join(order) + data[at:]
    assert header_size(np.frombuffer(moved, np.uint8)) == (100, 101)
    (tmp_path / "tables_first.jpg").write_bytes(moved)
    assert read_image_file(tmp_path / "tables_first.jpg").shape == (101, 100, 3)


def test_closed_pil_image_with_exif_orientation_is_a_clear_error(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    pil = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "rot.jpg", exif=exif)
    with Image.open(tmp_path / "rot.jpg") as opened:
        pass
    with pytest.raises(ValueError, match="cannot read the pixels of PIL image"):
        load_image(opened)


def test_folders_reached_through_links_are_searched_once(tmp_path: Path) -> None:
    """A linked folder (photos/2024 -> /mnt/nas/2024) was skipped without a word."""
    from lrfer.io import walk_files

    real, top = tmp_path / "real", tmp_path / "top"
    (real / "deep").mkdir(parents=True)
    top.mkdir()
    for path in (real / "a.jpg", real / "deep" / "b.png", top / "c.jpg"):
        path.write_bytes(b"x")
    (top / "linked").symlink_to(real)
    (top / "again").symlink_to(real)  # a second link to the same folder: its files once
    (real / "loop").symlink_to(top)  # a link back up the tree: no endless walk
    found = [p.decode() for p in walk_files(os.fsencode(top), [".jpg", ".png"])]
    assert found == ["again/a.jpg", "again/deep/b.png", "c.jpg"]  # the first link by name
    # a folder reached by a link before its own name keeps its own name
    (top / "a-link").symlink_to(top / "real-here")
    (top / "real-here").mkdir()
    (top / "real-here" / "d.jpg").write_bytes(b"x")
    found = [p.decode() for p in walk_files(os.fsencode(top), [".jpg", ".png"])]
    assert found == ["again/a.jpg", "again/deep/b.png", "c.jpg", "real-here/d.jpg"]


def test_files_are_sorted_folder_by_folder(tmp_path: Path) -> None:
    """A folder's files come before those of a folder whose name extends it ("a/" before "a-b/"), as
    sorted(Path) orders them: not by the bytes of the whole path, where "-" and "." sort before "/"."""
    for rel in ("a.b.jpg", "a-b/y.jpg", "a/x.jpg", "a/z/w.png", "A.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [rel.as_posix() for _, rel in iter_image_files([tmp_path])]
    assert found == ["A.png", "a/x.jpg", "a/z/w.png", "a-b/y.jpg", "a.b.jpg"]
    assert found == [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*.*")) if p.is_file()]


@pytest.mark.parametrize("bad, hint, not_hint", [
    (np.full((4, 4, 3), 200, np.int64), r"np\.clip\(x, 0, 255\)\.astype", "x * 255"),  # 0..255 ints: no x * 255
    (np.full((4, 4), 200, np.uint16), r"convert 16-bit pixels with \(x >> 8\)\.astype\(np\.uint8\), 0\.\.255 values", "x * 255"),
    (np.zeros((4, 4, 3), np.float64), r"np\.clip\(x \* 255, 0, 255\)", "integers"),
    (np.array(["a.jpg", "b.jpg"]), "pass a list", "x * 255"),  # paths in an array
    (np.array(["a.jpg", "b.jpg"], dtype=object), "pass a list", "x * 255"),  # df["file"].values: dtype object
    (np.zeros((2, 4, 4, 3), np.uint8), r"pass a list \(list\(arr\)\)", "x * 255"),  # stacked video frames
])
def test_validation_hints_fit_the_input(bad: np.ndarray, hint: str, not_hint: str) -> None:
    """The float hint (x * 255) on 0..255 integer frames turned them white; a string array or a stack of
    frames got the float hint or none."""
    with pytest.raises(ValueError, match=hint) as err:
        load_image(bad)
    assert not_hint not in str(err.value)
    with pytest.raises(ValueError, match="or a list of them"):
        load_image(x for x in [np.zeros((4, 4), np.uint8)])  # a generator of frames


@pytest.mark.parametrize("bad", [
    np.full((4, 4, 3), 200.0, np.float32),
    np.full((4, 4), 255.0, np.float64),
    np.full((4, 4), 200.0, np.float16),
    torch.full((3, 4, 4), 200.0),
    torch.full((3, 4, 4), 200.0, dtype=torch.bfloat16),
], ids=["float32", "float64", "float16", "tensor-float32", "tensor-bfloat16"])
def test_float_images_already_in_0_255_are_not_told_to_multiply_by_255(bad: Any) -> None:
    """Float pixels 0..255 (cv2.imread(...).astype(float), a resize's float output) got the 0..1 hint
    ``x * 255``, which turns them white: above 1, the hint is a plain conversion to uint8."""
    with pytest.raises(ValueError, match=r"values go above 1.*(np\.clip\(x, 0, 255\)\.round\(\)\.astype\(np\.uint8\)|"
                                         r"x\.round\(\)\.clamp\(0, 255\)\.to\(torch\.uint8\))") as err:
        load_image(bad)
    assert "x * 255" not in str(err.value)


@pytest.mark.parametrize("bad", [
    np.full((4, 4), 0.5, np.float32),
    np.array([[0.5, np.nan], [np.inf, 1.0]]),
    np.zeros((0, 4, 3), np.float32),
    torch.full((3, 4, 4), 1.0),
    torch.tensor([[0.5, float("inf")], [1.0, 0.0]]),
], ids=["0..1", "nan-inf", "empty", "tensor-0..1", "tensor-inf"])
def test_float_images_in_0_1_or_without_a_finite_max_keep_the_x255_hint(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"x \* 255") as err:
        load_image(bad)
    assert "above 1" not in str(err.value)
