"""Padded shapes off the CPU (lrfer.shapes): few distinct shapes, results as if unpadded (issue 4).

cuDNN builds a plan per new input shape; the GPU path pads batches and P-Net's pyramid levels to a
few sizes. These tests run that path on CPU (``cpu_tuned`` switched off) on synthetic data.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lrfer import shapes
from lrfer.faces import align as align_mod
from lrfer.faces import make_detector
from lrfer.faces import mtcnn as mtcnn_mod


def test_bucket_is_a_few_sizes_per_octave_above_n():
    sizes = [shapes.bucket(n) for n in range(1, 4097)]
    assert all(n <= b <= max(n, 1.5 * n) for n, b in zip(range(1, 4097), sizes))
    assert len(set(sizes)) == 3 + 2 * 10 + 1  # 1, 2, 3; 4, 6, 8, 12, ..., 2048, 3072; 4096
    assert shapes.bucket(0) == 0 and shapes.bucket(512) == 512 and shapes.bucket(513) == 768


def test_bucket_side_is_even_and_at_most_an_eighth_larger():
    for n in range(12, 3000):
        side = shapes.bucket_side(n)
        assert side % 2 == 0 and n <= side <= n * 1.125 + 1


def test_run_bucketed_pads_rows_and_cuts_the_outputs_back():
    seen = []

    def net(x):
        seen.append(x.shape[0])
        return x.sum(dim=(1, 2, 3)), x[:, :1] * 2

    x = torch.randn(11, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    total, doubled = shapes.run_bucketed(net, x)
    assert seen == [12] and total.shape == (11,) and doubled.shape == (11, 1, 4, 4)
    torch.testing.assert_close(total, x.sum(dim=(1, 2, 3)))
    torch.testing.assert_close(doubled, x[:, :1] * 2)


def test_run_bucketed_pads_small_calls_to_the_floor_and_buckets_above_it():
    seen = []

    def net(x):
        seen.append(x.shape[0])
        return x * 2

    for n in (1, 5, 64, 65, 100, 0):
        x = torch.randn(n, 2, 3, 3)
        torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=64), x * 2)
    assert seen == [64, 64, 64, 96, 128, 0]


def test_run_bucketed_with_max_rows_runs_one_shape_and_joins_the_outputs():
    seen = []

    def net(x):
        seen.append(x.shape[0])
        return x.sum(dim=(1, 2, 3)), x * 2

    for n in (1, 64, 65, 200):
        x = torch.randn(n, 2, 3, 3)
        total, doubled = shapes.run_bucketed(net, x, min_rows=64, max_rows=64)
        torch.testing.assert_close(total, x.sum(dim=(1, 2, 3)))
        torch.testing.assert_close(doubled, x * 2)
    assert seen == [64] * (1 + 1 + 2 + 4)


def test_padded_rows_keep_channels_last():
    x = torch.randn(3, 5, 4, 4).contiguous(memory_format=torch.channels_last)
    padded = shapes.pad_rows(x, 4)
    assert padded.is_contiguous(memory_format=torch.channels_last) and torch.equal(padded[:3], x)
    assert not padded[3].any() and shapes.pad_rows(x, 3) is x


def _candidates_per_image(boxes, scores, image, order):
    out = {}
    for k, n in enumerate(order):
        mine = image == k
        rank = scores[mine].argsort()
        out[n] = (boxes[mine][rank], scores[mine][rank])
    return out


@pytest.mark.parametrize("pool_fix", [True, False])
def test_padded_pnet_gives_the_unpadded_candidates(monkeypatch, pool_fix):
    """Images of four sizes (odd and even sides) on one padded canvas per scale give, image by image,
    the candidates of P-Net on each size alone; without the last-row fix of the first pooling (a
    row paired with padding) they do not."""
    g = torch.Generator().manual_seed(0)
    sizes = [(37, 53), (38, 53), (41, 60), (37, 53), (40, 58)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    pnet, volume, threshold = mtcnn_mod.load_network("pnet"), mtcnn_mod.MipVolume(images), 0.2
    expected = {}
    for (h, w), members in align_mod.images_by_size(images).items():
        boxes, scores, image = mtcnn_mod.propose(pnet, partial(volume.resized, members, h, w), (h, w),
                                                 mtcnn_mod.pyramid_scales(h, w, 12), threshold)
        expected.update(_candidates_per_image(boxes, scores, image, members))
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    if not pool_fix:
        monkeypatch.setattr(mtcnn_mod, "pool_as_if_unpadded", lambda x, regions: x)
    runs = [(members, h, w, len(mtcnn_mod.pyramid_scales(h, w, 12))) for (h, w), members in align_mod.images_by_size(images).items()]
    boxes, scores, image = mtcnn_mod.propose_padded(pnet, volume, runs, mtcnn_mod.pyramid_scales(41, 60, 12), threshold)
    found = _candidates_per_image(boxes, scores, image, [n for members, *_ in runs for n in members])
    assert sum(len(s) for _, s in expected.values()) > 20  # the noise gives candidates to compare
    same = all(
        len(found[n][1]) == len(expected[n][1])
        and torch.allclose(found[n][1], expected[n][1], atol=1e-5)
        and torch.allclose(found[n][0], expected[n][0], atol=1e-3)
        for n in range(len(images))
    )
    assert same == pool_fix


class _ConvShapes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "conv" in str(func):
            self.shapes.add((tuple(args[0].shape), tuple(args[1].shape)))
        return func(*args, **(kwargs or {}))


def _two_steps_off_the_cpu(detector, monkeypatch, first: list[torch.Tensor], second: list[torch.Tensor]):
    """``first`` then ``second`` detected off the CPU: the conv shapes each used, and ``second``'s
    faces, which must be those of the CPU path."""
    on_cpu = detector.detect(second)
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    with _ConvShapes() as seen_first:
        detector.detect(first)
    with _ConvShapes() as seen_second:
        padded = detector.detect(second)
    assert len(padded) == len(on_cpu)
    for a, b in zip(on_cpu, padded):
        assert len(a) == len(b) and torch.allclose(a.boxes, b.boxes, atol=0.05)
    return seen_first.shapes, seen_second.shapes, on_cpu


def _small_and_large_step(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Steps of 8 and 19 photos of two sizes of one canvas group; the first 8 of the large one of one size only."""
    g = torch.Generator().manual_seed(seed)

    def photos(smaller: int, larger: int) -> list[torch.Tensor]:
        sizes = [(90, 120)] * smaller + [(94, 126)] * larger
        return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]

    return photos(4, 4), photos(10, 9)


def test_detector_off_the_cpu_reuses_its_convolution_shapes(monkeypatch):
    """Off the CPU, a second batch of other sizes and counts (in the same buckets) brings no new
    convolution input shape (no new cuDNN plan), and the faces are those of the CPU path."""
    g = torch.Generator().manual_seed(3)

    def photos(count: int, height: int, width: int) -> list[torch.Tensor]:
        return [torch.randint(0, 256, (3, height + i % 3, width + 2 * (i % 2)), dtype=torch.uint8, generator=g)
                for i in range(count)]

    detector = make_detector("auto", "cpu", min_face=20)
    seen_first, seen_second, _ = _two_steps_off_the_cpu(detector, monkeypatch, photos(16, 90, 120), photos(13, 92, 118))
    assert seen_first and seen_second <= seen_first


def test_blazeface_floor_is_the_cli_image_batch_on_cuda():
    """The floor exists so that every step of ``lrfer predict`` on CUDA, the last one too, shares one
    BlazeFace shape: it must follow the command's default image batch."""
    from lrfer import cli

    assert shapes.PHOTO_ROWS == cli.DEFAULT_GPU_IMAGE_BATCH


def test_detector_off_the_cpu_pads_small_calls_to_one_shape(monkeypatch):
    """Off the CPU, one photo and a step of 13 run BlazeFace, R-Net and O-Net in the same shapes
    (padded to :data:`~lrfer.shapes.PHOTO_ROWS` photos and :data:`~lrfer.faces.mtcnn.NET_CHUNK`
    crops): a folder's last, partial step makes them no new cuDNN plans. Only P-Net's canvas follows
    the number of photos. The single photo's faces are those of the CPU path."""
    g = torch.Generator().manual_seed(5)

    def photos(count: int) -> list[torch.Tensor]:
        return [torch.randint(0, 256, (3, 90 + i % 3, 120), dtype=torch.uint8, generator=g) for i in range(count)]

    pnet_weights = {tuple(p.shape) for p in mtcnn_mod.load_network("pnet").parameters() if p.dim() == 4}
    detector = make_detector("auto", "cpu", min_face=20)
    one, many = photos(1), photos(13)
    on_cpu = detector.detect(one)
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    with _ConvShapes() as seen_one:
        padded = detector.detect(one)
    with _ConvShapes() as seen_many:
        detector.detect(many)
    others_one, others_many = ({s for s in seen.shapes if s[1] not in pnet_weights} for seen in (seen_one, seen_many))
    batch_sizes = {input_shape[0] for input_shape, _ in others_one}
    assert others_one == others_many and shapes.PHOTO_ROWS in batch_sizes
    assert batch_sizes <= {shapes.PHOTO_ROWS, mtcnn_mod.NET_CHUNK}
    assert len(padded) == len(on_cpu) == 1 and len(padded[0]) == len(on_cpu[0])
    assert torch.allclose(padded[0].boxes, on_cpu[0].boxes, atol=0.05)


def _pnet_weights() -> set[tuple[int, ...]]:
    return {tuple(p.shape) for p in mtcnn_mod.load_network("pnet").parameters() if p.dim() == 4}


def test_detector_off_the_cpu_runs_large_steps_in_calls_of_the_photo_rows(monkeypatch):
    """Off the CPU, a step of more photos than :data:`~lrfer.shapes.PHOTO_ROWS` (here 8 instead of
    64, to keep the test fast) runs BlazeFace in calls of exactly that many photos: it brings
    BlazeFace, R-Net and O-Net no shape that a step of 8 did not use (``--image-batch 256`` then
    plans nothing that a 64-photo step did not). The faces are those of the CPU path."""
    from lrfer.faces import blazeface as blazeface_mod

    rows = 8
    monkeypatch.setattr(blazeface_mod, "PHOTO_ROWS", rows)
    monkeypatch.setattr(mtcnn_mod, "PHOTO_ROWS", rows)
    detector = make_detector("auto", "cpu", min_face=20)
    seen_small, seen_large, _ = _two_steps_off_the_cpu(detector, monkeypatch, *_small_and_large_step(seed=7))
    others_small, others_large = ({s for s in seen if s[1] not in _pnet_weights()} for seen in (seen_small, seen_large))
    assert others_large <= others_small and rows in {input_shape[0] for input_shape, _ in others_large}


def test_pnet_off_the_cpu_runs_large_steps_on_canvases_of_the_whole_step(monkeypatch):
    """Off the CPU, P-Net takes at most :data:`~lrfer.shapes.PHOTO_ROWS` photos (here 8) per canvas,
    with the canvas sides of all the step's photos of that size group: a part that holds only the
    smaller photos still gets the larger ones' canvas, so the full parts of a large step use the
    shapes of a step of 8 with both sizes. The faces are those of the CPU path."""
    rows = 8
    monkeypatch.setattr(mtcnn_mod, "PHOTO_ROWS", rows)
    detector = mtcnn_mod.MTCNN(min_face=20, thresholds=(0.2, 0.2, 0.2))  # low: faces found in noise to compare
    seen_small, seen_large, on_cpu = _two_steps_off_the_cpu(detector, monkeypatch, *_small_and_large_step(seed=11))
    pnet_small, pnet_large = ({s for s in seen if s[1] in _pnet_weights()} for seen in (seen_small, seen_large))
    assert pnet_small and all(input_shape[0] <= rows for input_shape, _ in pnet_large)
    assert {s for s in pnet_large if s[0][0] == rows} <= pnet_small
    assert sum(len(d) for d in on_cpu) > 0 and len(on_cpu) == 19


def test_classifier_off_the_cpu_pads_faces_to_its_floor(monkeypatch):
    import lrfer

    rec = lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)
    faces = torch.rand(9, 1, 48, 48, generator=torch.Generator().manual_seed(2))
    on_cpu = rec.predict_tensor(faces)
    rows = []
    rec._network.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    padded = rec.predict_tensor(faces)
    assert rows == [shapes.MIN_FACE_ROWS] and padded.shape == (9, 7)
    torch.testing.assert_close(padded, on_cpu, atol=1e-5, rtol=0)


def test_detection_mode_turns_tf32_off_for_convolutions_and_restores_it():
    from lrfer.faces.detect import detection_mode

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("torch < 2.9: the legacy allow_tf32 flag is used instead")
    before = conv.fp32_precision
    with detection_mode():
        assert conv.fp32_precision == "ieee" and torch.is_inference_mode_enabled()
    assert conv.fp32_precision == before


def test_to_device_keeps_the_dtype_asked_for():
    """Integer sides asked for as float32 (BlazeFace's long sides) must not come back as int64."""
    sides = shapes.to_device([480, 640], torch.device("cpu"), torch.float32)
    assert sides.dtype == torch.float32 and sides.tolist() == [480.0, 640.0]
    assert shapes.to_device([1, 2], torch.device("cpu")).dtype == torch.int64
    assert shapes.to_device([0.5], torch.device("cpu"), torch.float16).dtype == torch.float16
