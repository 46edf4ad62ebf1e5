"""Fast, self-contained tests of lrfer.faces (detection result type, NMS, MTCNN, alignment)."""
from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lrfer import ChecksumError
from lrfer.faces import Detections, FER2013_TEMPLATE, align_faces, estimate_similarity, make_detector, rgb_to_gray
from lrfer.faces import align as align_mod
from lrfer.faces import detect as detect_mod
from lrfer.faces import mtcnn as mtcnn_mod


@pytest.fixture(scope="module")
def detector() -> mtcnn_mod.MTCNN:
    return mtcnn_mod.MTCNN(min_face=20)


def similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty]])


def apply(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    return pts @ m[:, :2].T + m[:, 2]


# ------------------------------------------------------------------------------------------ Detections
def test_empty_detections_are_k0_tensors():
    d = Detections.empty()
    assert len(d) == 0
    assert d.boxes.shape == (0, 4) and d.scores.shape == (0,) and d.landmarks.shape == (0, 5, 2)
    assert d.boxes.dtype == torch.float32


def test_detections_reject_inconsistent_shapes():
    with pytest.raises(ValueError, match="boxes"):
        Detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(2, 5, 2))


def test_detections_are_frozen():
    d = Detections.empty()
    with pytest.raises(AttributeError):
        d.boxes = torch.zeros(1, 4)


def test_from_boxes_gives_nan_landmarks():
    d = Detections.from_boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
    assert torch.isnan(d.landmarks).all() and not d.has_landmarks.any()


# ------------------------------------------------------------------------------------------------ NMS
def test_nms_keeps_best_of_overlapping_and_disjoint_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    assert mtcnn_mod.nms(boxes, scores, 0.5).tolist() == [1, 2]


@pytest.mark.parametrize("height, width", [(8, 10), (7, 9), (1, 1), (13, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pnet_pooling_equals_ceil_mode_max_pool(height, width, channels_last):
    x = torch.randn(2, 10, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.MaxPool2d(2, 2, ceil_mode=True)(x)
    pooled = mtcnn_mod.max_pool_2x2_ceil(x)
    assert torch.equal(pooled, expected)
    assert pooled.is_contiguous(memory_format=torch.channels_last) == channels_last or pooled.shape[-2:] == (1, 1)


def test_crops_per_call_keeps_the_first_feature_map_within_the_cpu_budget():
    rnet, onet = mtcnn_mod.load_network("rnet"), mtcnn_mod.load_network("onet")
    assert mtcnn_mod.crops_per_call(rnet, torch.zeros(1, 3, 24, 24)) == (1 << 21) // (28 * 22 * 22) == 154
    assert mtcnn_mod.crops_per_call(onet, torch.zeros(1, 3, 48, 48)) == (1 << 21) // (32 * 46 * 46) == 30


@pytest.mark.parametrize("channels", [1, 10, 16, 32])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prelu_by_rows_equals_prelu(channels, channels_last, dtype):
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 5, 7, generator=g).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    weight = (torch.rand(channels, generator=g) * 2 - 1).to(dtype)  # negative slopes too, as in P-Net
    out = mtcnn_mod.prelu_by_rows(x, weight)
    assert torch.equal(out, torch.nn.functional.prelu(x, weight))
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last or channels == 1


@pytest.mark.parametrize("budget", [1 << 21, 28 * 22 * 22 * 3])  # NET_CHUNK-sized chunks, then 3 per call
def test_run_chunked_in_channels_last_equals_plain_forward(monkeypatch, budget):
    monkeypatch.setattr(mtcnn_mod, "NET_CHUNK", 7)  # several chunks
    monkeypatch.setattr(mtcnn_mod, "CPU_ACTIVATION_BUDGET", budget)
    torch.manual_seed(0)
    with torch.inference_mode():
        for name, size in (("rnet", 24), ("onet", 48)):
            net = mtcnn_mod.load_network(name)
            x = torch.rand(19, 3, size, size) * 2 - 1
            fast = mtcnn_mod.run_chunked(net.to(memory_format=torch.channels_last), x)
            plain = net.to(memory_format=torch.contiguous_format)(x)
            for a, b in zip(fast, plain):
                assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_pnet_forward_equals_its_layers_one_by_one():
    pnet = mtcnn_mod.load_network("pnet").to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 31, 44, generator=torch.Generator().manual_seed(5)) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        offsets, probs = pnet(x)
        y = torch.nn.MaxPool2d(2, 2, ceil_mode=True)(pnet.prelu1(pnet.conv1(x)))
        y = pnet.prelu3(pnet.conv3(pnet.prelu2(pnet.conv2(y))))
        assert torch.allclose(offsets, pnet.conv4_2(y), atol=1e-5)
        assert torch.allclose(probs, pnet.softmax4_1(pnet.conv4_1(y)), atol=1e-6)


@pytest.mark.parametrize("height", [12, 13, 40, 41, 57, 64])
def test_pnet_in_bands_equals_whole_image_forward(monkeypatch, height):
    monkeypatch.setattr(mtcnn_mod, "CPU_ACTIVATION_BUDGET", 2 * 10 * 30 * 14)  # bands of 4 rows + overlap
    torch.manual_seed(0)
    pnet = mtcnn_mod.load_network("pnet")
    x = (torch.rand(2, 3, height, 30) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        banded = mtcnn_mod.run_pnet(pnet, x)
        whole = pnet(x)
    for a, b in zip(banded, whole):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("banded", [True, False])
def test_bf16_pnet_gives_float32_outputs_close_to_fp32(monkeypatch, banded):
    if banded:
        monkeypatch.setattr(mtcnn_mod, "CPU_ACTIVATION_BUDGET", 2 * 10 * 30 * 14)  # bands of 4 rows + overlap
    fast, exact = mtcnn_mod.MTCNN(pnet_precision="bf16"), mtcnn_mod.MTCNN()
    assert fast.pnet.conv1.weight.dtype == torch.bfloat16 and exact.pnet.conv1.weight.dtype == torch.float32
    assert fast.rnet.conv1.weight.dtype == fast.onet.conv1.weight.dtype == torch.float32  # they place the final boxes
    x = (torch.rand(2, 3, 41, 30, generator=torch.Generator().manual_seed(3)) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in zip(mtcnn_mod.run_pnet(fast.pnet, x), mtcnn_mod.run_pnet(exact.pnet, x)):
            assert a.dtype == torch.float32 and a.shape == b.shape
            assert 0 < (a - b).abs().max() < 5e-2  # rounded (bf16 keeps 8 bits), yet close


@pytest.mark.parametrize("chunk", [1 << 20, 7, 1])  # all candidate pairs at once, several chunks, one box per chunk
def test_nms_matches_bruteforce_greedy_reference(monkeypatch, chunk):
    monkeypatch.setattr(mtcnn_mod, "NMS_PAIR_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], dim=1)
    scores = torch.rand(60, generator=g)
    kept = mtcnn_mod.nms(boxes, scores, 0.3).tolist()
    # Reference: every kept box overlaps no higher-scoring kept box; every dropped box overlaps one.
    for i in range(60):
        better_kept = [j for j in kept if scores[j] > scores[i]]
        overlaps = [float(mtcnn_mod.pairwise_overlap(boxes[j : j + 1], boxes[i : i + 1])) for j in better_kept]
        assert (i in kept) == all(o <= 0.3 for o in overlaps)
    assert scores[kept].diff().le(0).all()


@pytest.mark.parametrize("path", ["bands", "dense", "bands off the CPU"])
@pytest.mark.parametrize("mode", ["union", "min"])
def test_overlapping_pairs_are_exactly_the_pairs_over_the_threshold(monkeypatch, mode, path):
    if path != "bands":  # the GPU's choice, forced on CPU: all pairs at once up to NMS_DENSE_MAX boxes
        monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    if path == "bands off the CPU":
        monkeypatch.setattr(mtcnn_mod, "NMS_DENSE_MAX", 100)
    g = torch.Generator().manual_seed(1)
    xy = (torch.rand(150, 2, generator=g) * 120).round()  # ties in the left edges too
    boxes = torch.cat([xy, xy + 1 + (torch.rand(150, 2, generator=g) * 40).round()], dim=1)
    i, j = mtcnn_mod.overlapping_pairs(boxes, 0.3, mode)
    dense = torch.triu(mtcnn_mod.pairwise_overlap(boxes, boxes, mode) > 0.3, diagonal=1)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(map(tuple, torch.nonzero(dense).tolist()))
    assert len(i) > 20  # the test has overlapping boxes to find


@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize("chunk", [1 << 20, 7, 1])
def test_overlapping_pairs_in_a_tall_scene_of_many_bands(monkeypatch, threshold, chunk):
    """Boxes over many bands of rows, with tops on band edges, equal left edges and touching boxes."""
    monkeypatch.setattr(mtcnn_mod, "NMS_PAIR_CHUNK", chunk)
    g = torch.Generator().manual_seed(2)
    xy = (torch.rand(300, 2, generator=g) * torch.tensor([60.0, 900.0])).round()
    size = 1 + (torch.rand(300, 1, generator=g) * 12).round()
    boxes = torch.cat([xy, xy + size], dim=1)
    boxes[:20, 1], boxes[:20, 3] = 13.0 * torch.arange(20), 13.0 * torch.arange(20) + 13  # the tallest, stacked
    boxes[20:40, 0] = boxes[40:60, 0]  # shared left edges
    boxes[60:80] = boxes[80:100] + torch.tensor([0.0, 1.0, 0.0, 1.0])  # near-duplicates, one row lower
    i, j = mtcnn_mod.overlapping_pairs(boxes, threshold)
    dense = torch.triu(mtcnn_mod.pairwise_overlap(boxes, boxes) > threshold, diagonal=1)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(map(tuple, torch.nonzero(dense).tolist()))
    assert len(i) > 15


def test_nms_rejects_a_negative_threshold():
    with pytest.raises(ValueError, match="threshold"):
        mtcnn_mod.nms(torch.zeros(2, 4), torch.ones(2), -0.1)


def test_nms_min_mode_suppresses_nested_boxes():
    boxes = torch.tensor([[0, 0, 100, 100], [10, 10, 30, 30.0]])
    scores = torch.tensor([0.9, 0.8])
    assert mtcnn_mod.nms(boxes, scores, 0.7, mode="union").tolist() == [0, 1]
    assert mtcnn_mod.nms(boxes, scores, 0.7, mode="min").tolist() == [0]


def test_batched_nms_keeps_groups_apart():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    keep = mtcnn_mod.batched_nms(boxes, torch.tensor([0.5, 0.9, 0.7]), torch.tensor([0, 0, 1]), 0.5)
    assert sorted(keep.tolist()) == [1, 2]


def test_nms_on_nothing():
    assert mtcnn_mod.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert mtcnn_mod.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).shape == (0,)


def test_nms_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        mtcnn_mod.nms(torch.zeros(1, 4), torch.zeros(1), 0.5, mode="max")


# --------------------------------------------------------------------------------------------- MTCNN
def test_pyramid_starts_at_min_face_and_stops_at_window():
    scales = mtcnn_mod.pyramid_scales(100, 200, min_face=24)
    assert scales[0] == pytest.approx(12 / 24)
    assert all(b / a == pytest.approx(mtcnn_mod.PYRAMID_FACTOR) for a, b in zip(scales, scales[1:]))
    assert 100 * scales[-1] >= 12 > 100 * scales[-1] * mtcnn_mod.PYRAMID_FACTOR
    assert mtcnn_mod.pyramid_scales(10, 10, min_face=12) == []



def test_pnet_candidates_map_each_window_to_its_place_in_the_image():
    """Guards P-Net's window mapping: output cell (row, col) is the 12 px window starting at (2 * col,
    2 * row) of the resized image, mapped back with each axis's own scale (MTCNN's 1-based inclusive
    pixel rule); scores, regression offsets and image index come from that cell."""
    probs = torch.zeros(2, 4, 7)
    probs[1, 2, 5] = 0.8  # image 1, row 2, column 5: window x 10..22, y 4..16 in the resized image
    probs[0, 1, 1] = 0.5  # under the threshold
    offsets = torch.arange(2 * 4 * 4 * 7, dtype=torch.float32).reshape(2, 4, 4, 7)
    boxes, scores, box_offsets, image = mtcnn_mod.pnet_candidates(offsets, probs, (0.5, 0.25), threshold=0.6)
    assert image.tolist() == [1] and scores.tolist() == pytest.approx([0.8])
    assert boxes.tolist() == [[21.0, 19.0, 44.0, 64.0]]  # x: 11 / 0.5 - 1, 22 / 0.5; y: 5 / 0.25 - 1, 16 / 0.25
    assert box_offsets.tolist() == [offsets[1, :, 2, 5].tolist()]


def test_points_in_image_reads_o_nets_xs_then_ys_as_fractions_of_the_box():
    """Guards the landmark layout: O-Net gives x1..x5 then y1..y5, each a fraction of the box's width
    or height from its top-left corner."""
    points = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]])
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])  # 40 wide, 80 high
    expected = torch.tensor([[14.0, 68.0], [18.0, 76.0], [22.0, 84.0], [26.0, 92.0], [30.0, 100.0]])
    torch.testing.assert_close(mtcnn_mod.points_in_image(points, boxes)[0], expected)



def _scripted_crops(monkeypatch, *outputs: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """score_crops replaced by fixed network outputs; returns the (boxes, crop size) it was asked for."""
    asked: list[tuple[torch.Tensor, int]] = []

    def scripted(net, volume, image, boxes, size):
        asked.append((boxes.clone(), size))
        return outputs

    monkeypatch.setattr(mtcnn_mod, "score_crops", scripted)
    return asked




def test_p_net_windows_of_one_scale_are_suppressed_before_the_scales_meet():
    """Guards stage 1's per-scale NMS (NMS_PER_SCALE, 0.5): two windows of one scale overlapping by
    IoU 0.53 leave one candidate, though the NMS across scales (0.7) would keep both."""

    class ScriptedPNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 10, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            probs = torch.zeros(x.shape[0], 2, 5, 5)
            probs[:, 1, 0, 0], probs[:, 1, 1, 1] = 0.9, 0.8  # windows at (0, 0) and (2, 2)
            return torch.zeros(x.shape[0], 4, 5, 5), probs

    boxes, scores, image = mtcnn_mod.propose(ScriptedPNet(), lambda size, level: torch.zeros(1, 3, *size), (20, 20),
                                             [1.0], threshold=0.6)
    assert scores.tolist() == pytest.approx([0.9]) and image.tolist() == [0]
    assert boxes.tolist() == [[0.0, 0.0, 12.0, 12.0]]


def test_p_net_candidates_of_all_scales_are_suppressed_per_image_then_regressed_and_squared():
    """Guards stage 1's end: one NMS over every scale's candidates (never across images), then P-Net's
    offsets applied and the boxes squared."""
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    at_scale_1 = (box, torch.tensor([0.9]), torch.tensor([[0.0, 0.0, 0.0, 0.5]]), torch.tensor([0]))
    # box + 1: IoU 0.82 with box, over NMS_ACROSS_SCALES (0.7); shifted by 6 px: IoU 0.54, under it
    shifted = box + torch.tensor([6.0, 0.0, 6.0, 0.0])
    at_scale_2 = (torch.cat([box + 1, box, shifted]), torch.tensor([0.8, 0.7, 0.6]), torch.zeros(3, 4), torch.tensor([0, 1, 0]))
    boxes, scores, image = mtcnn_mod.merge_scales([at_scale_1, at_scale_2], torch.device("cpu"))
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6]) and image.tolist() == [0, 1, 0]
    # the first regressed to 10..30 x 10..40, squared around its centre (20, 25)
    torch.testing.assert_close(boxes, torch.tensor([[5.0, 10.0, 35.0, 40.0], [10.0, 10.0, 30.0, 30.0], [16.0, 10.0, 36.0, 30.0]]))


def test_mtcnn_searches_faces_up_to_its_fraction_of_the_long_side():
    """Guards max_face_fraction: faces up to that fraction of the photo's LONG side are searched (the
    pyramid stops where P-Net's window would see larger ones), whatever the short side."""
    detector = mtcnn_mod.MTCNN(min_face=12, max_face_fraction=0.1)
    scales = detector._scales(100, 400)  # faces of 12 to 40 px
    assert scales == pytest.approx([1.0 * mtcnn_mod.PYRAMID_FACTOR ** i for i in range(4)])  # 40 px * 0.356 >= 12


def test_r_net_keeps_its_confident_faces_then_suppresses_regresses_and_squares_them(monkeypatch):
    """Guards stage 2: R-Net's face probability (column 1) over the threshold, IoU NMS at NMS_REFINE,
    then its offsets applied and the boxes squared."""
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0], [50.0, 50.0, 70.0, 70.0], [90.0, 0.0, 110.0, 20.0]])
    probs = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.25, 0.75], [0.9, 0.1]])  # the last is not a face
    offsets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.0, -0.1, 0.5], [0.0, 0.0, 0.0, 0.0]])
    asked = _scripted_crops(monkeypatch, offsets, probs)
    image = torch.tensor([0, 0, 0, 0])
    out_boxes, scores, out_image = mtcnn_mod.refine(None, None, boxes, image, threshold=0.7)
    assert asked[0][1] == mtcnn_mod.RNET_INPUT
    assert scores.tolist() == pytest.approx([0.9, 0.75])  # the second overlaps the first (IoU 0.82)
    # the third regressed to x 52..68, y 50..80 (16 x 30), then squared around its centre (60, 65)
    torch.testing.assert_close(out_boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0], [45.0, 50.0, 75.0, 80.0]]))
    assert out_image.tolist() == [0, 0]


def test_o_net_places_landmarks_in_its_input_box_and_suppresses_nested_faces(monkeypatch):
    """Guards stage 3: O-Net's probability over the threshold; landmarks placed in the box O-Net saw
    (before its offsets move the box); a face inside another suppressed (overlap over the smaller box)."""
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 30.0, 30.0], [100.0, 0.0, 140.0, 40.0]])
    probs = torch.tensor([[0.05, 0.95], [0.2, 0.8], [0.4, 0.6]])
    offsets = torch.tensor([[0.25, 0.0, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    points = torch.full((3, 10), 0.5)  # every landmark at the box centre
    _scripted_crops(monkeypatch, offsets, points, probs)
    out_boxes, scores, landmarks, image = mtcnn_mod.output(None, None, boxes, torch.tensor([0, 0, 0]), threshold=0.7)
    assert scores.tolist() == pytest.approx([0.95])  # the nested face has IoU 0.25 but is all inside
    assert out_boxes.tolist() == [[10.0, 0.0, 50.0, 40.0]]
    assert landmarks[0].tolist() == [[20.0, 20.0]] * 5  # the centre of the box O-Net saw, not of the moved box
    assert image.tolist() == [0]



def test_o_net_offsets_that_turn_a_box_inside_out_drop_it(monkeypatch):
    """O-Net's regression was applied without a check: an offset past the opposite side gave a face
    with x2 < x1 (a negative size), which annotate refuses. Such a box is not a face."""
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [100.0, 0.0, 140.0, 40.0], [200.0, 0.0, 240.0, 40.0]])
    probs = torch.tensor([[0.05, 0.95], [0.1, 0.9], [0.2, 0.8]])
    offsets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.8, 0.0, -0.5, 0.0], [0.0, 0.6, 0.0, -0.6]])
    _scripted_crops(monkeypatch, offsets, torch.full((3, 10), 0.5), probs)
    out_boxes, scores, landmarks, image = mtcnn_mod.output(None, None, boxes, torch.tensor([0, 0, 1]), threshold=0.7)
    assert out_boxes.tolist() == [[0.0, 0.0, 40.0, 40.0]]
    assert scores.tolist() == pytest.approx([0.95]) and image.tolist() == [0] and landmarks.shape == (1, 5, 2)


def test_o_net_landmarks_for_another_detectors_box_are_read_in_its_square(monkeypatch):
    """Guards place_landmarks' O-Net pass: a (BlazeFace) box is squared around its centre, as O-Net was
    trained, before its 48 px crop is taken and its landmark fractions are read in it."""
    points = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.25, 0.5, 0.75, 1.0]])
    asked = _scripted_crops(monkeypatch, torch.zeros(1, 4), points, torch.tensor([[0.0, 1.0]]))
    landmarks = mtcnn_mod.onet_landmarks(None, None, torch.tensor([[0.0, 0.0, 40.0, 20.0]]), torch.tensor([0]))
    assert asked[0][0].tolist() == [[0.0, -10.0, 40.0, 30.0]] and asked[0][1] == mtcnn_mod.ONET_INPUT
    assert landmarks[0].tolist() == [[0.0, -10.0], [10.0, 0.0], [20.0, 10.0], [30.0, 20.0], [40.0, 30.0]]


def test_each_stage_gets_its_own_threshold(monkeypatch):
    """Guards MTCNN(thresholds=(p, r, o)): P-Net's threshold to the proposals, R-Net's to stage 2,
    O-Net's to stage 3."""
    seen: dict[str, float] = {}
    detector = mtcnn_mod.MTCNN(min_face=20, thresholds=(0.3, 0.5, 0.9))
    real_propose = mtcnn_mod.propose

    def propose(pnet, resized, size, scales, threshold):
        seen["p"] = threshold
        return real_propose(pnet, resized, size, scales, threshold)

    def refine(rnet, volume, boxes, image, threshold):
        seen["r"] = threshold
        return boxes, boxes.new_zeros(boxes.shape[0]), image

    def output(onet, volume, boxes, image, threshold):
        seen["o"] = threshold
        return boxes, boxes.new_zeros(boxes.shape[0]), boxes.new_zeros(boxes.shape[0], 5, 2), image

    for name, fake in (("propose", propose), ("refine", refine), ("output", output)):
        monkeypatch.setattr(mtcnn_mod, name, fake)
    detector.detect([torch.zeros(3, 40, 40, dtype=torch.uint8)])
    assert seen == {"p": 0.3, "r": 0.5, "o": 0.9}


def test_networks_load_strictly_with_verified_hashes():
    for name, cls in mtcnn_mod.NETWORKS.items():
        net = mtcnn_mod.load_network(name)
        assert isinstance(net, cls) and not net.training
        assert set(net.state_dict()) == set(mtcnn_mod._verified_state_dict(name))


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / "mtcnn_pnet.safetensors"
    bad.write_bytes(mtcnn_mod.weights_path("pnet").read_bytes() + b" ")
    monkeypatch.setattr(mtcnn_mod, "WEIGHTS_DIR", tmp_path)
    mtcnn_mod._verified_state_dict.cache_clear()
    try:
        with pytest.raises(ChecksumError, match="sha256"):
            mtcnn_mod.load_network("pnet")
    finally:
        mtcnn_mod._verified_state_dict.cache_clear()


def test_network_output_shapes():
    pnet, rnet, onet = (mtcnn_mod.load_network(n) for n in ("pnet", "rnet", "onet"))
    with torch.inference_mode():
        offsets, probs = pnet(torch.zeros(2, 3, 12, 12))
        assert offsets.shape == (2, 4, 1, 1) and probs.shape == (2, 2, 1, 1)
        assert rnet(torch.zeros(3, 3, 24, 24))[1].shape == (3, 2)
        offsets, points, probs = onet(torch.zeros(4, 3, 48, 48))
        assert offsets.shape == (4, 4) and points.shape == (4, 10)
        assert torch.allclose(probs.sum(1), torch.ones(4))


def test_detector_on_blank_images_finds_nothing(detector):
    images = [torch.zeros(3, 64, 80, dtype=torch.uint8), torch.full((3, 50, 50), 200, dtype=torch.uint8)]
    out = detector.detect(images)
    assert len(out) == 2
    for d in out:
        assert isinstance(d, Detections) and len(d) == 0 and d.landmarks.shape == (0, 5, 2)


def test_detector_on_tiny_image_and_empty_list(detector):
    assert detector.detect([]) == []
    assert len(detector.detect([torch.zeros(3, 8, 8, dtype=torch.uint8)])[0]) == 0


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3, 32, 32),  # float
        torch.zeros(32, 32, 3, dtype=torch.uint8),  # HWC
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),  # batched
    ],
)
def test_detector_rejects_bad_images(detector, bad):
    with pytest.raises(ValueError):
        detector.detect([bad])


def test_detector_rejects_bare_tensor(detector):
    with pytest.raises(ValueError, match="list"):
        detector.detect(torch.zeros(3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs", [{"min_face": 7}, {"thresholds": (0.6, 0.7)}, {"factor": 1.2}, {"pnet_precision": "fp16"}])
def test_mtcnn_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        mtcnn_mod.MTCNN(**kwargs)


def test_faces_below_p_nets_window_are_searched_on_an_enlarged_photo(monkeypatch):
    """``min_face`` below 12 px (the zoo's 8 px faces) was refused: P-Net's window is 12 px. Its pyramid
    now starts above scale 1, on the photo enlarged bilinearly: 8 px faces are 12 px there."""
    from lrfer.faces import detect as detect_mod

    assert detect_mod.MIN_FACE_PX == 8
    with pytest.raises(ValueError, match="min_face must be a number of pixels >= 8"):
        mtcnn_mod.MTCNN(min_face=7)
    # one enlarged level, then min_face=12's levels unchanged: a lower min_face only adds a level
    assert mtcnn_mod.pyramid_scales(40, 60, 8) == pytest.approx([1.5, *mtcnn_mod.pyramid_scales(40, 60, 12)])
    assert mtcnn_mod.pyramid_scales(40, 60, 12)[0] == 1.0
    assert mtcnn_mod.pyramid_scales(40, 60, 8, max_face=7.9) == []  # no face to search: no level
    img = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    volume = mtcnn_mod.MipVolume([img])
    enlarged = volume.resized([0], 40, 60, (60, 90))
    assert enlarged.shape == (1, 3, 60, 90) and enlarged.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(enlarged[0, :, 0, 0], img[:, 0, 0].float())  # corners are kept (bilinear, half-pixel centres)
    assert torch.equal(enlarged[0, :, -1, -1], img[:, -1, -1].float())
    assert enlarged.mean().item() == pytest.approx(img.float().mean().item(), rel=0.02)
    assert torch.equal(volume.resized([0], 40, 60, (20, 30)), torch.nn.functional.interpolate(img[None].float(), size=(20, 30), mode="area"))
    seen = []
    run_pnet = mtcnn_mod.run_pnet
    monkeypatch.setattr(mtcnn_mod, "run_pnet", lambda pnet, x: seen.append(tuple(x.shape[-2:])) or run_pnet(pnet, x))
    mtcnn_mod.MTCNN(min_face=8).detect([img])
    assert seen[:2] == [(60, 90), (40, 60)]


def test_crop_boxes_matches_area_resize_for_aligned_boxes():
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8, generator=g)
    volume = mtcnn_mod.MipVolume([img])
    boxes = torch.tensor([[10.0, 20.0, 58.0, 68.0], [0.0, 0.0, 24.0, 24.0]])  # 2x and 1x of 24 px
    crops = mtcnn_mod.crop_boxes(volume, torch.zeros(2, dtype=torch.long), boxes, 24)
    ref = torch.nn.functional.avg_pool2d(img[None, :, 20:68, 10:58].float(), 2)
    assert torch.allclose(crops[0], mtcnn_mod.normalize_pixels(ref[0]), atol=1e-4)
    assert torch.allclose(crops[1], mtcnn_mod.normalize_pixels(img[:, :24, :24].float()), atol=1e-4)


def test_cpu_image_groups_keep_order_and_fit_the_budget(monkeypatch):
    monkeypatch.setattr(align_mod, "CPU_STACK_BUDGET", 3 * 2 * 40 * 50)
    sizes = [(40, 50), (30, 50), (40, 50), (60, 60), (10, 10), (10, 10), (40, 10)]
    images = [torch.zeros(3, h, w, dtype=torch.uint8) for h, w in sizes]
    groups = align_mod.cpu_image_groups(images)
    assert [img for g in groups for img in g] == images and all(groups)
    for g in groups:
        h, w = max(i.shape[-2] for i in g), max(i.shape[-1] for i in g)
        assert len(g) == 1 or 3 * len(g) * h * w <= 3 * 2 * 40 * 50
    assert [len(g) for g in groups] == [2, 1, 1, 3]
    assert align_mod.cpu_image_groups([]) == []


def test_image_batch_views_the_volume_without_padding():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((6, 8), (4, 5), (6, 8))]
    volume = mtcnn_mod.MipVolume(images)
    for members in ([0], [0, 2], [1]):
        h, w = images[members[0]].shape[-2:]
        batch = volume.batch(members, h, w)
        assert torch.equal(batch, torch.stack([images[n] for n in members]).float())
    assert volume.batch([0], 6, 8).data_ptr() == volume.level(0).data_ptr()  # a view, no copy


@pytest.mark.parametrize("height, width", [(4, 6), (5, 7), (2, 3), (9, 2)])
def test_mean_2x2_equals_avg_pool(height, width):
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height * width)) * 255
    assert torch.allclose(align_mod.mean_2x2(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-4)


def test_stack_images_pads_with_zeros_and_keeps_values():
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((5, 4), (3, 6))]
    volume = align_mod.stack_images(images)
    assert volume.shape == (1, 3, 2, 5, 6) and volume.dtype == torch.float32
    assert torch.equal(volume[0, :, 0, :5, :4], images[0].float()) and torch.equal(volume[0, :, 1, :3, :6], images[1].float())
    assert volume[0, :, 0, :, 4:].abs().sum() == 0 and volume[0, :, 1, 3:].abs().sum() == 0
    gray = align_mod.stack_images(images[:1], channels=1)
    assert gray.shape == (1, 1, 1, 5, 4) and torch.allclose(gray[0, :, 0], rgb_to_gray(images[0]))


def test_pad_and_stack_copies_once_per_size_not_per_image():
    """Images of three sizes, in mixed order: the zero-padded batch of padding each image alone, with
    a number of copies that grows with the sizes, not the images (each is a kernel on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    copying = ("aten.pad.default", "aten.constant_pad_nd.default", "aten.stack.default", "aten.copy_.default",
               "aten.index_put_.default")

    class Copies(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Copies.count += str(func) in copying
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(5)
    sizes = [(5, 4), (3, 6), (5, 4), (2, 2), (3, 6), (5, 4)] * 4
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]
    expected = torch.stack([torch.nn.functional.pad(img, (0, 6 - img.shape[2], 0, 5 - img.shape[1])) for img in images])
    with Copies():
        batch = align_mod.pad_and_stack(images)
    assert torch.equal(batch, expected)
    assert Copies.count <= 2 * 3  # a stack and a copy per size (24 images)


def test_mip_volume_makes_each_level_once():
    images = [torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)),
              torch.zeros(3, 20, 20, dtype=torch.uint8)]
    volume = mtcnn_mod.MipVolume(images)
    assert volume.level(0).shape == (1, 3, 2, 40, 60)
    level2 = volume.level(2)
    assert level2.shape == (1, 3, 2, 10, 15) and len(volume.levels) == 3
    assert volume.level(2) is level2 and volume.level(1) is volume.levels[1]  # cached, not recomputed
    expected = torch.nn.functional.avg_pool2d(images[0].float(), 4)
    torch.testing.assert_close(level2[0, :, 0], expected)



def interleaved(image: torch.Tensor) -> torch.Tensor:
    """The same (3, H, W) pixels as a view of an (H, W, 3) array, as lrfer.io.to_device_tensor gives on CPU."""
    return image.permute(1, 2, 0).contiguous().permute(2, 0, 1)


@pytest.mark.parametrize("height, width", [(37, 53), (12, 12), (64, 33)])
@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_area_resize_from_integral_is_torchs_area_resize_bit_for_bit(height, width, layout):
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(height))
    if layout == "interleaved":
        image = interleaved(image)
    integral = align_mod.integral_image(image)
    assert integral.shape == (height + 1, width + 1, 3) and integral.dtype == torch.int32
    assert torch.equal(integral[-1, -1], image.sum(dim=(1, 2)).int())
    # (1, 1) is left out: torch computes it as a mean (another summation order), and P-Net never asks for it.
    for size in [(height, width), (math.ceil(height * 0.6), math.ceil(width * 0.6)), (5, 7), (2, 1)]:
        expected = torch.nn.functional.interpolate(image[None].float(), size=size, mode="area")[0].permute(1, 2, 0)
        for table in (integral, integral.double()):  # float64: the layout used when int32 sums could overflow
            out = align_mod.area_resize_integral(table, size, torch.empty(*size, 3))
            assert torch.equal(out, expected), (size, table.dtype)


def test_integral_image_switches_to_float64_when_int32_sums_could_overflow(monkeypatch):
    import cv2

    depths = []

    def spy(pixels, sum, sdepth):  # noqa: A002 - OpenCV's name
        depths.append(sdepth)
        return sum  # not computed: only the depth is checked

    monkeypatch.setattr(cv2, "integral", spy)
    assert align_mod.integral_image(torch.zeros(3, 2000, 4000, dtype=torch.uint8)).dtype == torch.int32  # 8.0 M pixels: 255 * 8e6 < 2**31
    assert align_mod.integral_image(torch.zeros(3, 3000, 3000, dtype=torch.uint8)).dtype == torch.float64  # 9.0 M pixels: 255 * 9e6 > 2**31
    assert depths == [cv2.CV_32S, cv2.CV_64F]


def test_integral_image_is_right_whether_or_not_opencv_writes_into_the_buffer(monkeypatch):
    import cv2

    image = torch.randint(0, 256, (3, 21, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    expected = torch.from_numpy(cv2.integral(image.permute(1, 2, 0).contiguous().numpy(), sdepth=cv2.CV_32S))
    assert torch.equal(align_mod.integral_image(image), expected)  # OpenCV fills the buffer given
    real_integral = cv2.integral
    monkeypatch.setattr(cv2, "integral", lambda pixels, sum, sdepth: real_integral(pixels, sdepth=sdepth))  # noqa: A006
    assert torch.equal(align_mod.integral_image(image), expected)  # OpenCV returns an array of its own


def test_area_resize_from_integral_works_in_bands(monkeypatch):
    monkeypatch.setattr(align_mod, "INTEGRAL_BAND_BYTES", 1)  # one output row per band
    image = torch.randint(0, 256, (3, 21, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    out = align_mod.area_resize_integral(align_mod.integral_image(image), (11, 17), torch.empty(11, 17, 3))
    torch.testing.assert_close(out, torch.nn.functional.interpolate(image[None].float(), size=(11, 17), mode="area")[0].permute(1, 2, 0), rtol=0, atol=0)


@pytest.mark.parametrize("table_dtype", [torch.int32, torch.float64])
def test_area_resize_from_integral_reuses_its_band_buffers_for_a_shorter_last_band(monkeypatch, table_dtype):
    """The band temporaries are allocated once per call and filled by each band: the last band, of
    fewer rows (11 output rows in bands of 4), must use only its own rows of them."""
    image = torch.randint(0, 256, (3, 21, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    table = align_mod.integral_image(image).to(table_dtype)
    monkeypatch.setattr(align_mod, "INTEGRAL_BAND_BYTES", 4 * 31 * 3 * table.element_size())  # 4 rows of the table a band
    out = align_mod.area_resize_integral(table, (11, 17), torch.empty(11, 17, 3))
    expected = torch.nn.functional.interpolate(image[None].float(), size=(11, 17), mode="area")[0].permute(1, 2, 0)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("device_path", ["cpu", "elsewhere"])
def test_mip_volume_resized_equals_area_interpolation_of_the_batch(monkeypatch, device_path):
    if device_path == "elsewhere":  # the GPU path (F.interpolate on the float volume), run on CPU
        monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    g = torch.Generator().manual_seed(4)
    images = [interleaved(torch.randint(0, 256, (3, 30, 41), generator=g, dtype=torch.uint8)) for _ in range(3)]
    images.insert(1, torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8))
    volume = mtcnn_mod.MipVolume(images)
    for level in (0, 1):
        resized = volume.resized([0, 2, 3], 30, 41, (13, 19), level)
        expected = torch.nn.functional.interpolate(volume.batch([0, 2, 3], 30, 41, level), size=(13, 19), mode="area")
        assert resized.shape == (3, 3, 13, 19) and torch.equal(resized, expected)
    cpu_integrals = device_path == "cpu"
    assert sorted(volume.integrals) == ([0, 2, 3] if cpu_integrals else [])  # made once per image, only when used


@pytest.mark.parametrize("height, width", [(5, 7), (1, 1), (70, 3)])
def test_rgb_to_gray_of_interleaved_pixels_equals_planar(monkeypatch, height, width):
    monkeypatch.setattr(align_mod, "GRAY_BAND_VALUES", 4)  # several bands of rows
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    view = interleaved(image)
    assert view.stride(0) == 1
    assert torch.equal(rgb_to_gray(view), rgb_to_gray(image))


def test_affine_grid_equals_torchs_for_rotated_and_axis_aligned_maps():
    g = torch.Generator().manual_seed(8)
    theta = torch.randn(6, 2, 3, generator=g)
    theta[:2, 0, 1] = theta[:2, 1, 0] = 0  # two without rotation
    for batch in (theta, theta[:2]):
        expected = torch.nn.functional.affine_grid(batch, [batch.shape[0], 1, 9, 9], align_corners=False)
        torch.testing.assert_close(align_mod.affine_grid(batch, 9), expected)


def test_affine_grid_off_the_cpu_reads_nothing_back_and_gives_the_same_grid(monkeypatch):
    """Off the CPU the rotation test would make the host wait for the device (once per R-/O-Net
    chunk and per alignment: 12 times per 64-photo step): the general formula serves all maps,
    with the same values for maps without rotation."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    theta = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(9))
    theta[:, 0, 1] = theta[:, 1, 0] = 0  # MTCNN's crops: no rotation
    on_cpu = align_mod.affine_grid(theta, 7)
    with HostReads() as reads_on_cpu:
        align_mod.affine_grid(theta, 7)
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    with HostReads() as reads:
        off_cpu = align_mod.affine_grid(theta, 7)
    assert reads_on_cpu.count > 0 and reads.count == 0
    assert torch.equal(off_cpu, on_cpu)

# -------------------------------------------------------------------------------------- make_detector
def test_make_detector_none_and_unknown():
    assert make_detector(None, "cpu") is None
    with pytest.raises(ValueError, match="mtcnn"):
        make_detector("yolo", "cpu")


def test_make_detector_mtcnn_follows_protocol():
    det = make_detector("mtcnn", "cpu", min_face=30)
    assert isinstance(det, detect_mod.Detector)
    assert det.device == torch.device("cpu") and det.min_face == 30


def test_haar_is_guarded_when_opencv_lacks_cascades(monkeypatch):
    import cv2

    if hasattr(cv2, "CascadeClassifier"):
        monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(RuntimeError, match="CascadeClassifier.*mtcnn"):
        make_detector("haar", "cpu")


def test_haar_works_or_fails_clearly():
    try:
        det = make_detector("haar", "cpu")
    except RuntimeError as err:
        assert "detector='mtcnn'" in str(err)
        return
    out = det.detect([torch.zeros(3, 64, 64, dtype=torch.uint8)])
    assert len(out[0]) == 0


def test_facenet_backend_import_error_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_facenet(name, *args, **kwargs):
        if name.startswith("facenet_pytorch"):
            raise ImportError("No module named 'facenet_pytorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_facenet)
    with pytest.raises(ImportError, match=r"pip install --no-deps facenet-pytorch"):
        make_detector("facenet", "cpu")


class FakeCascade:
    """Stands in for ``cv2.CascadeClassifier`` (absent from OpenCV 5): records its calls, returns
    ``found`` as OpenCV does (an (K, 4) int32 array of x, y, w, h; an empty tuple for no face)."""

    def __init__(self, found) -> None:
        self.found = found
        self.calls: list[tuple[np.ndarray, dict]] = []

    def detectMultiScale(self, gray: np.ndarray, **kwargs) -> object:  # noqa: N802 (OpenCV's name)
        self.calls.append((gray, kwargs))
        return self.found


def test_haar_adapter_turns_cascade_rectangles_into_detections(monkeypatch):
    """lrfer's side of the Haar backend, whatever the installed OpenCV: gray uint8 in, ``min_face``
    as the cascade's minSize, ``x, y, w, h`` rectangles out as ``x1, y1, x2, y2`` boxes with score 1
    and NaN landmarks; an empty tuple (OpenCV's "no face") is no face."""
    cascade = FakeCascade(np.array([[10, 20, 30, 31], [0, 5, 12, 12]], dtype=np.int32))
    monkeypatch.setattr(detect_mod, "_load_haar_cascade", lambda: cascade)
    det = make_detector("haar", "cpu", min_face=24)
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    image[0] = 255  # pure red: gray = 0.299 * 255
    (found,) = det.detect([image])
    gray, kwargs = cascade.calls[0]
    assert gray.shape == (48, 64) and gray.dtype == np.uint8 and int(gray[0, 0]) == 76
    assert kwargs["minSize"] == (24, 24)
    assert found.boxes.tolist() == [[10.0, 20.0, 40.0, 51.0], [0.0, 5.0, 12.0, 17.0]]
    assert found.scores.tolist() == [1.0, 1.0] and torch.isnan(found.landmarks).all()
    cascade.found = ()
    (empty,) = det.detect([image])
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_facenet_adapter_converts_its_outputs(monkeypatch):
    """lrfer's side of the optional facenet-pytorch backend, with a stand-in module: it is built with
    ``min_face`` and ``keep_all``, gets each image as (H, W, 3), and its numpy outputs (float or
    object arrays, ``None`` for no face) become :class:`Detections`."""
    import sys
    import types

    made = {}

    class StandInMTCNN:
        def __init__(self, **kwargs) -> None:
            made.update(kwargs)
            self.seen: list[tuple[int, ...]] = []

        def detect(self, img, landmarks=False):
            self.seen.append(tuple(img.shape))
            assert landmarks
            if len(self.seen) == 2:
                return None, [None], None
            boxes = np.array([[1.5, 2.0, 11.0, 12.0]], dtype=object)  # facenet gives object arrays for some inputs
            points = np.arange(10, dtype=np.float32).reshape(1, 5, 2)
            return boxes, np.array([0.99]), points

    monkeypatch.setitem(sys.modules, "facenet_pytorch", types.SimpleNamespace(MTCNN=StandInMTCNN))
    det = make_detector("facenet", "cpu", min_face=16)
    assert made["min_face_size"] == 16 and made["keep_all"] is True
    first, second = det.detect([torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 8, 9, dtype=torch.uint8)])
    assert det._mtcnn.seen == [(20, 30, 3), (8, 9, 3)]
    assert first.boxes.tolist() == [[1.5, 2.0, 11.0, 12.0]] and first.boxes.dtype == torch.float32
    assert first.scores.tolist() == pytest.approx([0.99])
    assert first.landmarks.shape == (1, 5, 2) and first.landmarks[0, 4].tolist() == [8.0, 9.0]
    assert len(second) == 0


def test_facenet_adapter_drops_boxes_without_width_or_height(monkeypatch):
    """facenet-pytorch's boxes were passed through unchecked: one inside out (x2 <= x1 or y2 <= y1,
    regressed past its opposite side) became a face, which annotate then refused. lrfer's own MTCNN
    and BlazeFace drop such boxes; the facenet backend now does too."""
    import sys
    import types

    class StandInMTCNN:
        def __init__(self, **kwargs) -> None:
            pass

        def detect(self, img, landmarks=False):
            boxes = np.array([[1.0, 2.0, 11.0, 12.0], [9.0, 2.0, 4.0, 12.0], [1.0, 8.0, 11.0, 3.0],
                              [5.0, 5.0, 5.0, 9.0], [2.0, 3.0, 8.0, 9.0]], dtype=np.float32)
            points = np.arange(50, dtype=np.float32).reshape(5, 5, 2)
            return boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), points

    monkeypatch.setitem(sys.modules, "facenet_pytorch", types.SimpleNamespace(MTCNN=StandInMTCNN))
    det = make_detector("facenet", "cpu")
    (found,) = det.detect([torch.zeros(3, 20, 30, dtype=torch.uint8)])
    assert found.boxes.tolist() == [[1.0, 2.0, 11.0, 12.0], [2.0, 3.0, 8.0, 9.0]]
    assert found.scores.tolist() == pytest.approx([0.9, 0.5])
    assert found.landmarks[1, 0].tolist() == [40.0, 41.0]  # the last face's own landmarks, kept with it

def test_a_box_with_nan_has_no_area() -> None:
    """Pins down that has_area drops a box with NaN in any side (its docstring says so): a NaN box kept as a
    face reached annotate, which refuses it as "a box that is not finite"."""
    nan = math.nan
    boxes = torch.tensor([[nan, 0.0, 4.0, 4.0], [0.0, 0.0, nan, 4.0], [0.0, nan, 4.0, 4.0], [0.0, 0.0, 4.0, nan],
                          [0.0, 0.0, 4.0, 4.0]])
    assert detect_mod.has_area(boxes).tolist() == [False, False, False, False, True]


# ------------------------------------------------------------------------------------------ alignment
def test_estimate_similarity_recovers_known_transforms():
    src = torch.tensor([[30.0, 40], [70, 42], [50, 60], [35, 80], [66, 81]])
    truths = [similarity(0.3, 0.5, 4.0, -2.0), similarity(-1.2, 2.0, 10.0, 3.0), similarity(0.0, 1.0, 0.0, 0.0)]
    batch = torch.stack([src] * len(truths))
    for k, m in enumerate(truths):
        dst = apply(m, src)
        est = estimate_similarity(batch[k : k + 1], dst)
        assert torch.allclose(est[0], m, atol=1e-4)


def test_estimate_similarity_is_least_squares_under_noise():
    g = torch.Generator().manual_seed(2)
    src = torch.rand(1, 5, 2, generator=g) * 40
    truth = similarity(0.4, 0.7, 3.0, 5.0)
    dst = apply(truth, src[0]) + torch.randn(5, 2, generator=g) * 0.5
    est = estimate_similarity(src, dst)[0]
    residual = (apply(est, src[0]) - dst).pow(2).sum()
    for perturbation in (similarity(0.02, 1.0, 0, 0), similarity(0, 1.02, 0, 0), similarity(0, 1, 0.1, 0)):
        moved = apply(perturbation, apply(est, src[0]))
        assert residual <= (moved - dst).pow(2).sum()


def test_estimate_similarity_rejects_bad_shapes():
    with pytest.raises(ValueError):
        estimate_similarity(torch.zeros(5, 2), FER2013_TEMPLATE)
    with pytest.raises(ValueError):
        estimate_similarity(torch.zeros(1, 5, 2), torch.zeros(4, 2))


def test_template_is_a_plausible_face():
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = FER2013_TEMPLATE.tolist()
    assert lx < nx < rx and mlx < nx < mrx
    assert max(ly, ry) < ny < min(mly, mry)
    assert all(0 < v < 48 for v in FER2013_TEMPLATE.flatten().tolist())


def test_rgb_to_gray_uses_bt601():
    img = torch.zeros(3, 1, 3, dtype=torch.uint8)
    img[0, 0, 0], img[1, 0, 1], img[2, 0, 2] = 255, 255, 255
    gray = rgb_to_gray(img).flatten()
    assert torch.allclose(gray, torch.tensor([0.299, 0.587, 0.114]) * 255)


def synthetic_face(size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """A gray image with bright dots at known, rotated, scaled landmark positions."""
    m = similarity(0.35, 3.0, 40.0, 30.0)  # template frame -> image
    points = apply(m, FER2013_TEMPLATE)
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    for x, y in points.round().long().tolist():
        img[:, y - 2 : y + 3, x - 2 : x + 3] = 255
    return img, points


def test_align_maps_landmarks_onto_template():
    img, points = synthetic_face()
    det = Detections(torch.tensor([[0.0, 0.0, 200.0, 200.0]]), torch.ones(1), points[None])
    face = align_faces([img], [det])[0, 0]
    assert face.shape == (48, 48)
    for x, y in FER2013_TEMPLATE.tolist():
        assert face[int(y), int(x)] > 0.5  # each bright dot lands on its template point
    assert face.mean() < 0.2


def test_align_output_shape_range_device_and_order():
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=g), torch.zeros(3, 90, 90, dtype=torch.uint8)]
    _, points = synthetic_face()
    dets = [
        Detections(torch.tensor([[10.0, 10, 90, 100], [50, 20, 120, 90]]), torch.ones(2), torch.stack([points / 2, points / 3])),
        Detections.from_boxes(torch.tensor([[10.0, 10, 60, 70]])),  # no landmarks: box crop
    ]
    out = align_faces(images, dets, out_size=32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.float32 and out.device == images[0].device
    assert 0 <= out.min() and out.max() <= 1
    assert out[2].max() == 0 and out[:2].mean() > 0.3  # the third face comes from the black image


@pytest.mark.parametrize("oversample", [1, 3])
def test_sample_patches_one_image_path_matches_batched_path(oversample):
    """A single image takes a 2-D grid_sample; it must give the batched 3-D path's patches, zeros outside."""
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (3, 70, 90), generator=g).float()
    other = torch.randint(0, 256, (3, 70, 90), generator=g).float()
    maps = torch.tensor([[[1.5, 0.2, -10.0], [-0.2, 1.5, 5.0]], [[0.8, 0.0, 40.0], [0.0, 0.9, 30.0]]])
    single = align_mod.sample_patches(align_mod.stack_images([image]), torch.zeros(2, dtype=torch.long), maps, 24, oversample)
    batched = align_mod.sample_patches(align_mod.stack_images([other, image]), torch.ones(2, dtype=torch.long), maps, 24, oversample)
    assert single.shape == (2, 3, 24, 24)
    torch.testing.assert_close(single, batched, atol=1e-3, rtol=0)
    assert single[0, :, 0, 0].eq(0).all()  # the first map starts outside the image: zero padding
    assert single[1].std() > 10  # real image content, not zeros


def test_per_image_sampling_equals_the_single_3d_call():
    """CPU samples each image with its own 2-D grid_sample; the GPU path makes one 3-D call. Same patches."""
    g = torch.Generator().manual_seed(6)
    volume = align_mod.stack_images([torch.randint(0, 256, (3, h, w), generator=g).float() for h, w in ((40, 50), (30, 60), (45, 45))])
    image_index = torch.tensor([2, 0, 2, 1, 0])  # interleaved: the per-image results must go back in place
    theta = torch.rand(5, 2, 3, generator=g) - 0.5
    grid_xy = torch.nn.functional.affine_grid(theta, [5, 1, 12, 12], align_corners=False)
    per_image = align_mod._sample_per_image(volume, image_index, grid_xy)
    torch.testing.assert_close(per_image, align_mod._sample_volume(volume, image_index, grid_xy), atol=1e-3, rtol=0)
    assert per_image.shape == (5, 3, 12, 12) and per_image.abs().sum() > 0


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("patches", [1, 2, 5])
def test_one_image_is_sampled_by_every_thread_with_the_values_of_one_call(threads, patches):
    """On CPU one image's patches go to grid_sample as one batch entry per thread (the image expanded,
    a remainder sampled after): each patch must get exactly the values of a single call, in order."""
    g = torch.Generator().manual_seed(7)
    image = torch.randint(0, 256, (1, 3, 50, 70), generator=g).float()
    grid_xy = torch.rand(patches, 6, 6, 2, generator=g) * 2.4 - 1.2  # some samples outside: zeros
    one_call = torch.nn.functional.grid_sample(image, grid_xy.reshape(1, patches * 6, 6, 2), align_corners=False)
    expected = one_call[0].view(3, patches, 6, 6).transpose(0, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert align_mod.sampling_groups(image, patches) == min(threads, patches)
        sampled = align_mod._sample_image(image, grid_xy)
    finally:
        torch.set_num_threads(before)
    assert sampled.shape == (patches, 3, 6, 6)
    assert torch.equal(sampled, expected)
    assert expected.abs().sum() > 0 and expected.eq(0).any()


@pytest.mark.parametrize("sizes", [[(300, 400)], [(120, 160), (90, 200), (120, 160)]])
def test_align_converts_only_the_sampled_pixels_to_gray_with_the_same_faces(monkeypatch, sizes):
    """On CPU, decoded (interleaved) photos are converted to gray only around the faces: the aligned
    faces must equal those from the whole photos' gray stack bit for bit. Faces over the borders,
    rotated, large (oversampled), tiny and absurdly large; photos of mixed sizes (padding read as black)."""
    monkeypatch.setattr(align_mod, "GRAY_BAND_VALUES", 900)  # several bands of rows per photo
    monkeypatch.setattr(align_mod, "GRAY_FOOTPRINT_MIN_PIXELS", 0)  # small photos here, to be fast
    converted = []
    where_sampled = align_mod._gray_where_sampled
    monkeypatch.setattr(align_mod, "_gray_where_sampled", lambda *args: converted.append(1) or where_sampled(*args))
    g = torch.Generator().manual_seed(11)
    images = [interleaved(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)) for h, w in sizes]
    _, points = synthetic_face()
    detections = []
    for h, w in sizes:
        boxes = torch.tensor([[-30.0, -20, 60, 80], [w - 50, h - 40, w + 40, h + 60], [w / 3, h / 4, w / 3 + 8, h / 4 + 9]])
        rotated = points @ similarity(0.5, 1.3, 0, 0)[:, :2].T + torch.tensor([w / 2, h / 3])
        landmarks = torch.stack([torch.full((5, 2), float("nan")), torch.full((5, 2), float("nan")), rotated])
        detections.append(Detections(boxes, torch.ones(3), landmarks))
    huge = Detections.from_boxes(torch.tensor([[-1e19, -1e19, 1e19, 1e19]]))  # footprint beyond int64: clamped first
    detections[0] = Detections.cat([detections[0], huge])
    faces = align_faces(images, detections)

    def whole_photos(group, image_index, maps, out_size):
        return align_mod.stack_images(group, channels=1)

    monkeypatch.setattr(align_mod, "gray_volume", whole_photos)
    assert len(converted) == len(sizes)  # the footprint path ran, once per photo
    assert faces.shape == (3 * len(sizes) + 1, 1, 48, 48) and faces.std() > 0.05
    assert torch.equal(faces, align_faces(images, detections))


def test_small_photos_are_converted_to_gray_whole(monkeypatch):
    """Below GRAY_FOOTPRINT_MIN_PIXELS finding the footprints costs more than it saves."""
    side = int(align_mod.GRAY_FOOTPRINT_MIN_PIXELS ** 0.5)
    small = interleaved(torch.zeros(3, side - 1, side - 1, dtype=torch.uint8))
    large = interleaved(torch.zeros(3, side + 1, side + 1, dtype=torch.uint8))
    planar_large = torch.zeros(3, side + 1, side + 1, dtype=torch.uint8)
    calls = []
    monkeypatch.setattr(align_mod, "_gray_where_sampled", lambda *args: calls.append(args[0].shape))
    face = Detections.from_boxes(torch.tensor([[2.0, 2.0, 30.0, 30.0]]))
    for image in (small, planar_large, large):
        align_faces([image], [face])
    assert calls == [large.shape]


def test_sample_footprints_hold_every_bilinear_tap():
    g = torch.Generator().manual_seed(12)
    maps = torch.randn(20, 2, 3, generator=g) * torch.tensor([[3.0, 3.0, 50.0]])
    footprints = align_mod.sample_footprints(maps, 16)
    theta = align_mod._pixel_affine_to_theta(maps, 16, 100, 120)
    grid = align_mod.affine_grid(theta, 16 * 3)  # oversampled points, normalised
    x = (grid[..., 0] + 1) * 120 / 2 - 0.5  # grid_sample's pixel index space (align_corners=False)
    y = (grid[..., 1] + 1) * 100 / 2 - 0.5
    for taps, low, high in ((x.floor(), 0, 2), (x.floor() + 1, 0, 2), (y.floor(), 1, 3), (y.floor() + 1, 1, 3)):
        flat = taps.flatten(1)
        assert (flat >= footprints[:, low, None]).all() and (flat < footprints[:, high, None]).all()


def test_align_box_fallback_frames_box_like_fer2013():
    img = torch.zeros(3, 300, 300, dtype=torch.uint8)
    img[:, 100:200, 100:200] = 255  # a bright 100x100 "face"
    face = align_faces([img], [Detections.from_boxes(torch.tensor([[100.0, 100, 200, 200]]))])[0, 0]
    box = align_mod.FER2013_FACE_BOX
    side = float((box[2:] - box[:2]).mean())
    cx, cy = ((box[:2] + box[2:]) / 2).tolist()
    bright = face > 0.5
    cols, rows = bright.any(0).nonzero().flatten(), bright.any(1).nonzero().flatten()
    assert abs((cols[-1] - cols[0] + 1) - side) <= 2 and abs((rows[-1] - rows[0] + 1) - side) <= 2
    assert abs((cols[0] + cols[-1] + 1) / 2 - cx) <= 1 and abs((rows[0] + rows[-1] + 1) / 2 - cy) <= 1


def test_align_antialiases_large_faces():
    stripes = torch.zeros(3, 960, 960, dtype=torch.uint8)
    stripes[:, :, ::2] = 255  # 1-px stripes: must average to mid-gray, not alias to black/white
    face = align_faces([stripes], [Detections.from_boxes(torch.tensor([[80.0, 80, 880, 880]]))])[0, 0]
    inner = face[12:36, 12:36]
    assert (inner - 0.5).abs().max() < 0.1


def test_align_with_no_faces_is_empty():
    images = [torch.zeros(3, 40, 40, dtype=torch.uint8)]
    out = align_faces(images, [Detections.empty()])
    assert out.shape == (0, 1, 48, 48)
    assert align_faces([], []).shape == (0, 1, 48, 48)


def test_align_rejects_bad_inputs():
    img = torch.zeros(3, 40, 40, dtype=torch.uint8)
    with pytest.raises(ValueError, match="Detections"):
        align_faces([img], [])
    with pytest.raises(ValueError):
        align_faces([img.float()], [Detections.empty()])
    with pytest.raises(ValueError):
        align_faces([img], [Detections.empty()], out_size=0)


@pytest.mark.parametrize("device_path", [False, True])
def test_a_face_is_aligned_the_same_whatever_other_faces_share_the_call(monkeypatch, device_path):
    """Each face's area filter follows its own size: a small face next to a large one (in its photo or
    in another photo of the call) comes out as it does alone. Also on the GPU's code path (one 3-D
    sampling call over all photos), run here on CPU."""
    if device_path:
        monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    g = torch.Generator().manual_seed(21)
    photo = torch.randint(0, 256, (3, 400, 600), dtype=torch.uint8, generator=g)
    other = torch.randint(0, 256, (3, 900, 900), dtype=torch.uint8, generator=g)
    small = Detections.from_boxes(torch.tensor([[40.0, 50.0, 110.0, 120.0]]))  # ~1.5 px per output pixel
    large = Detections.from_boxes(torch.tensor([[100.0, 80.0, 700.0, 680.0]]))  # ~12 px per output pixel
    alone = align_faces([photo], [small])
    assert torch.equal(align_faces([photo], [Detections.cat([small, large])])[:1], alone)
    # In one padded volume with a larger photo the sampling coordinates are rescaled: float rounding only.
    assert (align_faces([photo, other], [small, large])[:1] - alone).abs().max() < 1e-5


def test_oversample_factors_follow_each_faces_scale():
    maps = torch.tensor([[[0.5, 0.0, 3.0], [0.0, 0.5, 1.0]], [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
                         [[2.1, 0.5, 0.0], [-0.5, 2.1, 0.0]], [[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]]])
    assert align_mod.oversample_factors(maps).tolist() == [1, 2, 3, align_mod.MAX_OVERSAMPLE]
    with pytest.raises(ValueError, match="non-finite"):
        align_mod.oversample_factors(torch.full((1, 2, 3), float("nan")))


@pytest.mark.parametrize("height,width", [(5, 7), (6, 7), (5, 8), (6, 8), (1, 3)])
def test_mip_levels_keep_an_odd_edge_averaged_with_black(height, width):
    import torch.nn.functional as F

    x = torch.rand(1, 3, 2, height, width, generator=torch.Generator().manual_seed(height * width))
    padded = F.pad(x, (0, width % 2, 0, height % 2))
    assert torch.allclose(align_mod.mean_2x2_zero_padded(x), align_mod.mean_2x2(padded))


def test_mtcnn_faces_at_an_odd_edge_do_not_depend_on_the_photos_beside_them(detector):
    """An image of odd width, a face touching its right edge: its mip levels used to drop the last
    column alone but average it with the padding when stacked with a wider image (1.6 px boxes apart)."""
    import cv2

    from lrfer.io import load_image

    photo = cv2.resize(load_image(Path(__file__).resolve().parents[1] / "examples" / "group1.jpg"), (576, 384),
                       interpolation=cv2.INTER_AREA)[:, :309]
    image = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)
    wider = torch.full((3, 200, 600), 128, dtype=torch.uint8)
    alone, beside = detector.detect([image])[0], detector.detect([image, wider])[0]
    assert len(alone) == len(beside) > 0
    assert torch.allclose(alone.boxes, beside.boxes, atol=1e-3)


def test_r_and_o_net_score_their_crops_in_passes_with_the_same_results(detector, monkeypatch):
    """Crops are made and scored CROPS_PER_PASS boxes at a time (memory), with the outputs of one pass."""
    import cv2

    from lrfer.io import load_image

    photo = cv2.resize(load_image(Path(__file__).resolve().parents[1] / "examples" / "group1.jpg"), (640, 427),
                       interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)
    whole = detector.detect([image])[0]
    passes = []
    real_crop_boxes = mtcnn_mod.crop_boxes
    monkeypatch.setattr(mtcnn_mod, "CROPS_PER_PASS", 7)
    monkeypatch.setattr(mtcnn_mod, "crop_boxes", lambda *args: passes.append(len(args[2])) or real_crop_boxes(*args))
    in_passes = detector.detect([image])[0]
    assert len(whole) > 0 and max(passes) <= 7 and len(passes) > 3
    assert torch.allclose(whole.boxes, in_passes.boxes, atol=1e-4) and torch.allclose(whole.scores, in_passes.scores, atol=1e-5)


class OneImageAtATimeCascade:
    """Stands in for ``cv2.CascadeClassifier`` as OpenCV 4 builds it: ``detectMultiScale`` keeps the
    image it searches in the classifier (its feature evaluator), so two threads searching one
    classifier at once mix their images up. Returns one box the size of the image it ends up with."""

    both_inside = threading.Barrier(2, timeout=1)

    def detectMultiScale(self, gray: np.ndarray, **kwargs) -> object:  # noqa: N802 (OpenCV's name)
        self.image = gray
        try:
            self.both_inside.wait()  # the other thread's search starts meanwhile
        except threading.BrokenBarrierError:  # searches one at a time: nobody else came in
            pass
        return np.array([[0, 0, self.image.shape[1], self.image.shape[0]]], dtype=np.int32)


def test_haar_detector_shared_by_threads_searches_each_image_alone(monkeypatch):
    """One Recognizer may be shared by threads: with detector='haar' the threads shared one OpenCV
    classifier, and a face was found in another thread's image (or OpenCV raised
    ``vector::_M_range_check``)."""
    monkeypatch.setattr(detect_mod, "_load_haar_cascade", OneImageAtATimeCascade)
    OneImageAtATimeCascade.both_inside.reset()
    det = make_detector("haar", "cpu", min_face=12)
    sizes = {0: (40, 60), 1: (50, 30)}
    found: dict[int, list[list[float]]] = {}

    def search(me: int) -> None:
        found[me] = det.detect([torch.zeros(3, *sizes[me], dtype=torch.uint8)])[0].boxes.tolist()

    threads = [threading.Thread(target=search, args=(me,)) for me in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert found == {me: [[0.0, 0.0, float(w), float(h)]] for me, (h, w) in sizes.items()}


def test_haar_detector_pickles(monkeypatch):
    """A Recognizer pickles (README), but one with detector='haar' raised ``TypeError: cannot pickle
    'cv2.CascadeClassifier' object``: each copy now loads its own classifier."""
    import pickle

    class Unpicklable(FakeCascade):  # as cv2.CascadeClassifier
        def __reduce__(self):
            raise TypeError("cannot pickle 'cv2.CascadeClassifier' object")

    monkeypatch.setattr(detect_mod, "_load_haar_cascade", lambda: Unpicklable(np.array([[1, 2, 3, 4]], np.int32)))
    copy = pickle.loads(pickle.dumps(make_detector("haar", "cpu", min_face=20)))
    assert copy.min_face == 20 and copy.detect([torch.zeros(3, 8, 8, dtype=torch.uint8)])[0].boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]


def test_a_white_face_stays_white_when_aligned() -> None:
    """Aligned faces are pixels / 255: a white photo gives 1.0 wherever the crop is inside it (a divisor
    off by one darkened every face)."""
    white = torch.full((3, 100, 100), 255, dtype=torch.uint8)
    faces = align_faces([white], [Detections.from_boxes(torch.tensor([[20.0, 20.0, 80.0, 80.0]]))])
    assert torch.equal(faces[0, 0, 10:38, 10:38], torch.ones(28, 28))


def test_landmarks_all_at_one_point_fall_back_to_the_box_crop() -> None:
    """Five landmarks on one point (a detector's placeholder) define no similarity: the face gets the box
    crop, as a face without landmarks does, not a non-finite transform."""
    image = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 90, 90), dtype=np.uint8))
    box = torch.tensor([[15.0, 10.0, 75.0, 80.0]])
    collapsed = Detections.from_boxes(box, landmarks=torch.full((1, 5, 2), 40.0))
    torch.testing.assert_close(align_faces([image], [collapsed]), align_faces([image], [Detections.from_boxes(box)]))


def test_a_box_is_framed_by_its_mean_side() -> None:
    """A box without landmarks is scaled by its mean side onto FER2013's box (a 10 x 30 box, mean 20,
    onto a 20 x 20 one: scale 1), centre onto centre."""
    maps = align_mod.box_similarity(torch.tensor([[0.0, 0.0, 10.0, 30.0]]), torch.tensor([0.0, 0.0, 20.0, 20.0]))
    torch.testing.assert_close(maps, torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, -5.0]]]))


def zero_padded_crop(gray: torch.Tensor, left: int, top: int, size: int) -> torch.Tensor:
    """``gray[top : top + size, left : left + size]`` of an (H, W) image, black where it leaves the image."""
    pad = size + 1
    padded = torch.nn.functional.pad(gray, (pad, pad, pad, pad))
    return padded[top + pad : top + pad + size, left + pad : left + pad + size]


@pytest.mark.parametrize("path", ["cpu", "cpu_footprints", "device"])
@pytest.mark.parametrize("out_size", [24, 48, 96])
def test_a_face_at_the_templates_own_scale_is_its_photos_exact_crop(monkeypatch, path, out_size) -> None:
    """Landmarks on the template scaled to ``out_size``, or a box on FER2013's box scaled likewise, moved by
    whole pixels (tx, ty): the map is a pure shift, and aligned pixel (i, j) is the photo's pixel
    (ty + i, tx + j) exactly, black where the face is cut by the photo's edge. Pins the pixel-centre
    convention (no half-pixel shift), the template and box scaled to ``out_size``, zero padding (not
    the edge's values), and each face read from its own photo: five photos of several sizes, in several
    CPU groups (or one 3-D sampling call on the GPU path, run here on CPU), one photo without faces."""
    if path == "device":
        monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    if path == "cpu_footprints":
        monkeypatch.setattr(align_mod, "GRAY_FOOTPRINT_MIN_PIXELS", 0)  # gray only around the faces
    monkeypatch.setattr(align_mod, "CPU_STACK_BUDGET", 3 * 2 * 50 * 70)
    sizes = [(50, 60), (40, 70), (64, 64), (30, 40), (30, 40)]
    g = torch.Generator().manual_seed(31)
    grays = [torch.randint(0, 256, (h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    images = [interleaved(gray.expand(3, -1, -1)) for gray in grays]  # R = G = B: gray is the pixel value
    if path == "cpu":
        assert [len(group) for group in align_mod.cpu_image_groups(images)] == [2, 1, 2]
    k = out_size / 48
    offsets = {0: [(5, 3, "points"), (-7, 20, "box")], 1: [(40, -6, "box"), (12, 4, "points")],
               2: [(30, 35, "points")], 4: [(-3, -4, "points"), (20, 10, "box")]}  # photo 3: no face
    detections, expected = [], []
    for n, gray in enumerate(grays):
        boxes, points = [], []
        for tx, ty, kind in offsets.get(n, []):
            shift = torch.tensor([float(tx), float(ty)])
            boxes.append(align_mod.FER2013_FACE_BOX * k + shift.repeat(2))
            points.append(FER2013_TEMPLATE * k + shift if kind == "points" else torch.full((5, 2), float("nan")))
            expected.append(zero_padded_crop(gray.float() / 255, tx, ty, out_size))
        detections.append(Detections(torch.stack(boxes), torch.ones(len(boxes)), torch.stack(points)) if boxes else Detections.empty())
    faces = align_faces(images, detections, out_size=out_size)
    assert faces.shape == (len(expected), 1, out_size, out_size)
    torch.testing.assert_close(faces[:, 0], torch.stack(expected), atol=1e-4, rtol=0)
    assert all(crop.eq(0).any() for crop in expected) and faces.std() > 0.2  # edges cut, content kept


def test_aligned_faces_never_leave_0_to_1() -> None:
    """A white photo aligned under many rotations and scales: bilinear weights summing to 1 + 1 ulp give
    255.00002, so the output is clamped to the documented 0..1 (and is 1 inside the photo)."""
    g = torch.Generator().manual_seed(32)
    angles, scales = torch.rand(40, generator=g) * 2 - 1, torch.rand(40, generator=g) * 3 + 0.6
    maps = [similarity(float(a), float(s), 20.0, 25.0) for a, s in zip(angles, scales)]
    landmarks = torch.stack([apply(m, FER2013_TEMPLATE) for m in maps])
    white = torch.full((3, 120, 130), 255, dtype=torch.uint8)
    faces = align_faces([white], [Detections(torch.tensor([[0.0, 0, 100, 100]]).expand(40, 4), torch.ones(40), landmarks)])
    assert faces.min() >= 0 and faces.max() == 1
