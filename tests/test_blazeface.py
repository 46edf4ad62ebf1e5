"""Fast, self-contained tests of the BlazeFace port and of the combined (default) detector."""
from __future__ import annotations

import pytest
import torch

from lrfer import ChecksumError
from lrfer.faces import Detections, estimate_similarity, make_detector
from lrfer.faces import blazeface as bf
from lrfer.faces import detect as detect_mod
from lrfer.faces import mtcnn as mtcnn_mod
from lrfer.faces.align import FER2013_TEMPLATE
from lrfer.faces.mtcnn import MipVolume, pairwise_overlap


@pytest.fixture(scope="module")
def blazeface() -> bf.BlazeFace:
    return bf.BlazeFace()


def test_network_loads_strictly_with_verified_hash():
    net = bf.load_network()
    assert not net.training
    assert set(net.state_dict()) == set(bf._verified_state_dict())
    assert all(v.dtype == torch.float32 for v in net.state_dict().values())


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / "blazeface_full_range.safetensors"
    bad.write_bytes(bf.WEIGHTS_FILE.read_bytes()[:-1] + b"x")
    monkeypatch.setattr(bf, "WEIGHTS_FILE", bad)
    bf._verified_state_dict.cache_clear()
    try:
        with pytest.raises(ChecksumError, match="sha256"):
            bf.load_network()
    finally:
        bf._verified_state_dict.cache_clear()


def test_network_output_shapes():
    with torch.inference_mode():
        logits, regression = bf.load_network()(torch.zeros(2, 3, 192, 192))
    assert logits.shape == (2, 48 * 48) and regression.shape == (2, 48 * 48, 16)


def test_depth_to_space_follows_tflite_channel_order():
    head = bf.Head(1, 2)  # 1x1 conv to 8 channels, depthwise stride 2, depth-to-space to 2 channels
    with torch.no_grad():
        head.pw.weight.zero_()
        head.pw.bias.copy_(torch.arange(8.0))
        head.dw.weight.zero_()
        head.dw.weight[:, 0, 1, 1] = 1  # identity at the sampled pixels
        head.dw.bias.zero_()
        out = head(torch.zeros(1, 1, 4, 4))
    # TFLite: input channel (i * 2 + j) * C + c lands at pixel (2h + i, 2w + j), output channel c.
    for i in range(2):
        for j in range(2):
            for c in range(2):
                assert out[0, c, i, j] == (i * 2 + j) * 2 + c


def test_anchors_are_cell_centres():
    anchors = bf.anchor_centres(4)
    assert anchors.shape == (16, 2)
    assert anchors[0].tolist() == [0.125, 0.125] and anchors[1].tolist() == [0.375, 0.125]


def test_decode_places_boxes_and_keypoints_around_anchors():
    grid = 4
    logits = torch.full((1, grid * grid), -200.0)
    logits[0, 5] = 0.0  # anchor (row 1, col 1): centre (72, 72) in a 192 frame
    regression = torch.zeros(1, grid * grid, 16)
    regression[0, 5, :4] = torch.tensor([10.0, -4.0, 40.0, 20.0])
    regression[0, 5, 4:6] = torch.tensor([-8.0, 2.0])
    scores, boxes, keypoints = bf.decode(logits, regression)
    assert scores[0, 5] == pytest.approx(0.5) and scores[0, 0] == pytest.approx(0.0)  # logits clipped at -100
    assert boxes[0, 5].tolist() == pytest.approx([62.0, 58.0, 102.0, 78.0])
    assert keypoints[0, 5, 0].tolist() == pytest.approx([64.0, 74.0])
    assert keypoints.shape == (1, grid * grid, 6, 2)



def test_faces_keep_confident_wide_enough_anchors_in_image_pixels_with_eyes_nose_and_mouth():
    """Guards BlazeFace's last stage: the ``threshold`` and ``min_face`` it was built with (also under a
    zoomed-out look's ``min_widths``), the letterbox undone per axis for boxes and keypoints, and the
    five alignment points: right eye (smaller x), left eye, nose tip, mouth centre twice."""
    detector = bf.BlazeFace(threshold=0.7, min_face=30)
    scores = torch.tensor([[0.9, 0.6, 0.95]])  # a face; one under the threshold; one too small
    boxes = torch.tensor([[[60.0, 50.0, 100.0, 110.0], [0.0, 0.0, 40.0, 40.0], [150.0, 150.0, 160.0, 160.0]]])
    points = torch.tensor([[70.0, 60.0], [90.0, 61.0], [80.0, 75.0], [80.0, 90.0], [60.0, 70.0], [100.0, 70.0]])
    keypoints = torch.stack([points, points + 100, points + 100])[None]
    params = torch.tensor([[0.5, 0.25, 16.0, 40.0]])  # frame = image * scale + pad
    for min_widths in (None, torch.tensor([5.0])):
        (faces,) = detector._faces(scores, boxes, keypoints, params, min_widths)
        assert faces.scores.tolist() == pytest.approx([0.9])
        assert faces.boxes.tolist() == [[88.0, 40.0, 168.0, 280.0]]
        assert faces.landmarks[0].tolist() == [[108.0, 80.0], [148.0, 84.0], [128.0, 140.0], [128.0, 200.0], [128.0, 200.0]]



def test_a_box_regressed_to_a_negative_height_is_not_a_face():
    """Only the width was checked: a regression with a negative height gave a face with y2 < y1."""
    detector = bf.BlazeFace(threshold=0.7, min_face=10)
    scores = torch.tensor([[0.9, 0.95]])
    boxes = torch.tensor([[[60.0, 50.0, 100.0, 110.0], [0.0, 80.0, 40.0, 40.0]]])
    keypoints = torch.zeros(1, 2, bf.NUM_KEYPOINTS, 2)
    (faces,) = detector._faces(scores, boxes, keypoints, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert faces.boxes.tolist() == [[60.0, 50.0, 100.0, 110.0]]


def test_second_look_at_a_photo_without_faces_is_zoomed_out_and_keeps_only_large_faces(monkeypatch):
    """Guards the close-up pass: only photos where the first look found nothing get a second one, at
    ZOOM_OUT_FILL of the frame, keeping faces of at least ZOOM_OUT_MIN_FRACTION of the long side."""
    calls = []

    def look(self, images, volume, fill, positions=None, min_fraction=0.0):
        calls.append((len(images), fill, positions, min_fraction))
        return [Detections.from_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]])) if fill == 1.0 and n == 0
                else Detections.empty() for n in range(len(images))]

    monkeypatch.setattr(bf.BlazeFace, "_detect", look)
    images = [torch.zeros(3, 60, 80, dtype=torch.uint8), torch.zeros(3, 90, 60, dtype=torch.uint8)]
    found = bf.BlazeFace().detect(images)
    assert [len(d) for d in found] == [1, 0]
    assert calls == [(2, 1.0, None, 0.0), (1, bf.ZOOM_OUT_FILL, [1], bf.ZOOM_OUT_MIN_FRACTION)]
    assert bf.BlazeFace(close_ups=False).detect(images) and len(calls) == 3


def test_weighted_nms_blends_overlapping_boxes_and_keeps_disjoint_ones():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.3, 0.6])
    points = boxes[:, None, :2].expand(3, 6, 2).clone()
    out_boxes, out_scores, out_points = bf.weighted_nms(boxes, scores, points)
    assert out_scores.tolist() == pytest.approx([0.9, 0.6])
    assert out_boxes[0].tolist() == pytest.approx([0.25, 0.25, 10.25, 10.25])  # (0.9 * 0 + 0.3 * 1) / 1.2
    assert out_points[0, 0].tolist() == pytest.approx([0.25, 0.25])
    assert out_boxes[1].tolist() == pytest.approx([50.0, 50.0, 60.0, 60.0])
    empty = bf.weighted_nms(boxes[:0], scores[:0], points[:0])
    assert [t.shape[0] for t in empty] == [0, 0, 0]


def sequential_weighted_nms(boxes, scores, keypoints, iou_threshold=bf.NMS_IOU):
    """MediaPipe's blending NMS written as its greedy loop, one face per iteration (the reference)."""
    order = scores.argsort(descending=True)
    out_boxes, out_scores, out_points = [], [], []
    while order.numel() > 0:
        overlap = pairwise_overlap(boxes[order[0]][None], boxes[order])[0]
        group, order = order[overlap > iou_threshold], order[overlap <= iou_threshold]
        weights = scores[group] / scores[group].sum()
        out_boxes.append((boxes[group] * weights[:, None]).sum(0))
        out_points.append((keypoints[group] * weights[:, None, None]).sum(0))
        out_scores.append(scores[group[0]])
    return torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_points)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_nms_matches_the_sequential_greedy_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n = 300
    corner = torch.rand(n, 2, generator=g) * 300
    size = 20 + torch.rand(n, 1, generator=g) * 60
    boxes = torch.cat([corner, corner + size], dim=1)  # many overlapping clusters
    scores = torch.rand(n, generator=g)
    points = torch.rand(n, 6, 2, generator=g) * 300
    got = bf.weighted_nms(boxes, scores, points)
    expected = sequential_weighted_nms(boxes, scores, points)
    assert got[1].tolist() == expected[1].tolist()
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-3)


def test_letterbox_centres_the_image_and_records_the_mapping():
    wide = torch.full((3, 100, 400), 255, dtype=torch.uint8)
    batch, params = bf.letterbox([wide])
    assert batch.shape == (1, 3, 192, 192)
    sx, sy, px, py = params[0].tolist()
    assert sx == pytest.approx(192 / 400) and sy == pytest.approx(48 / 100) and (px, py) == (0, 72)
    assert batch[0, :, 72:120].min() == pytest.approx(1.0)  # the image, white -> +1
    assert batch[0, :, :72].max() == -1.0 and batch[0, :, 120:].max() == -1.0  # black border


def test_blazeface_finds_nothing_in_blank_images(blazeface):
    out = blazeface.detect([torch.zeros(3, 64, 80, dtype=torch.uint8), torch.full((3, 300, 200), 128, dtype=torch.uint8)])
    assert [len(d) for d in out] == [0, 0]
    assert out[0].landmarks.shape == (0, 5, 2)
    assert blazeface.detect([]) == []


def test_blazeface_rejects_bad_images_and_settings(blazeface):
    with pytest.raises(ValueError):
        blazeface.detect([torch.zeros(3, 32, 32)])
    with pytest.raises(ValueError, match="threshold"):
        bf.BlazeFace(threshold=1.5)


def test_duplicated_mouth_centre_aligns_like_symmetric_corners():
    # BlazeFace gives a mouth centre; Detections carry it as both mouth corners.
    angle, scale, shift = 0.2, 3.0, torch.tensor([40.0, 25.0])
    rot = torch.tensor([[torch.cos(torch.tensor(angle)), -torch.sin(torch.tensor(angle))],
                        [torch.sin(torch.tensor(angle)), torch.cos(torch.tensor(angle))]])
    face = (FER2013_TEMPLATE @ rot.T) * scale + shift
    collapsed = face.clone()
    collapsed[3:] = face[3:].mean(dim=0)
    full = estimate_similarity(face[None], FER2013_TEMPLATE)
    from_centre = estimate_similarity(collapsed[None], FER2013_TEMPLATE)
    mapped = from_centre[0, :, :2] @ face[:3].T + from_centre[0, :, 2:]
    assert (mapped.T - FER2013_TEMPLATE[:3]).abs().max() < 0.3  # eyes and nose land within 0.3 px
    assert torch.allclose(full, from_centre, atol=0.02)


def test_mtcnn_pyramid_stops_at_max_face_fraction():
    det = mtcnn_mod.MTCNN(min_face=20, max_face_fraction=0.05)
    assert det.detect([torch.zeros(3, 300, 300, dtype=torch.uint8)])[0].boxes.shape == (0, 4)  # 15 px < 20: no scale
    with pytest.raises(ValueError, match="max_face_fraction"):
        mtcnn_mod.MTCNN(max_face_fraction=0)


def test_onet_landmarks_inside_given_boxes():
    onet = mtcnn_mod.load_network("onet")
    img = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    volume = mtcnn_mod.MipVolume([img])
    boxes = torch.tensor([[20.0, 10.0, 80.0, 90.0]])
    with torch.inference_mode():
        points = mtcnn_mod.onet_landmarks(onet, volume, boxes, torch.zeros(1, dtype=torch.long))
    assert points.shape == (1, 5, 2) and torch.isfinite(points).all()
    assert mtcnn_mod.onet_landmarks(onet, volume, boxes[:0], torch.zeros(0, dtype=torch.long)).shape == (0, 5, 2)


def test_merge_small_faces_keeps_only_small_confident_new_faces():
    large = Detections.from_boxes(torch.tensor([[100.0, 100.0, 300.0, 300.0]]), torch.tensor([0.8]))
    small = Detections.from_boxes(
        torch.tensor([
            [120.0, 120.0, 160.0, 160.0],  # inside the large face: a duplicate
            [500.0, 50.0, 530.0, 80.0],  # small, confident, new: kept
            [600.0, 50.0, 630.0, 80.0],  # small and new but not confident
            [700.0, 50.0, 900.0, 250.0],  # confident but large: BlazeFace's call
            # wider than the pyramid's 1/20 (50 px), as O-Net's refined boxes come out: kept up to 1/10
            [400.0, 400.0, 476.0, 476.0],
            [600.0, 400.0, 702.0, 502.0],  # past 1/10: BlazeFace's call
        ]),
        torch.tensor([0.99, 0.99, 0.90, 0.99, 0.99, 0.99]),
    )
    merged = detect_mod.merge_small_faces(large, small, long_side=1000)
    assert merged.boxes.tolist() == [[100.0, 100.0, 300.0, 300.0], [500.0, 50.0, 530.0, 80.0],
                                     [400.0, 400.0, 476.0, 476.0]]
    assert merged.scores.tolist() == pytest.approx([0.8, 0.99, 0.99])


def test_make_detector_auto_and_blazeface():
    auto = make_detector("auto", "cpu", min_face=16)
    assert isinstance(auto, detect_mod.CombinedDetector) and isinstance(auto, detect_mod.Detector)
    assert auto.mtcnn.min_face == 16 and auto.mtcnn.max_face_fraction == detect_mod.SMALL_FACE_FRACTION
    out = auto.detect([torch.zeros(3, 100, 100, dtype=torch.uint8)])
    assert len(out) == 1 and len(out[0]) == 0
    fast = make_detector("BlazeFace", "cpu")
    assert isinstance(fast, detect_mod.CombinedDetector) and not fast.small_faces and auto.small_faces



def test_make_detector_hands_its_settings_to_every_stage(monkeypatch):
    """Guards make_detector's wiring: min_face reaches BlazeFace and MTCNN (and Haar), pnet_precision
    MTCNN's P-Net, close_ups BlazeFace, for each name that takes them."""
    auto = make_detector("auto", min_face=30, pnet_precision="bf16", close_ups=False)
    assert (auto.blazeface.min_face, auto.mtcnn.min_face, auto.mtcnn.pnet_precision) == (30, 30, "bf16")
    assert auto.small_faces and not auto.blazeface.close_ups
    blaze = make_detector("blazeface", min_face=25, close_ups=False)
    assert blaze.blazeface.min_face == 25 and not blaze.small_faces and not blaze.blazeface.close_ups
    mtcnn = make_detector("mtcnn", min_face=30, pnet_precision="bf16")
    assert (mtcnn.min_face, mtcnn.pnet_precision) == (30, "bf16")
    monkeypatch.setattr(detect_mod, "_load_haar_cascade", object)  # no OpenCV cascade needed
    assert make_detector("haar", min_face=40).min_face == 40


def test_letterbox_of_mixed_sizes_equals_one_image_at_a_time():
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
              for shape in [(3, 100, 400), (3, 300, 200), (3, 100, 400), (3, 57, 57), (3, 300, 200)]]
    batch, params = bf.letterbox(images)
    for n, img in enumerate(images):
        alone, alone_params = bf.letterbox([img])
        assert torch.allclose(batch[n], alone[0], atol=1e-5)
        assert params[n].tolist() == alone_params[0].tolist()
    volume = MipVolume(images[:1] + images[2:3])  # from a volume's mip level: the same as without
    from_volume, _ = bf.letterbox(images[:1] + images[2:3], volume=volume)
    assert torch.allclose(from_volume[1], bf.letterbox([images[2]], volume=MipVolume([images[2]]))[0][0], atol=1e-5)


def test_batched_weighted_nms_keeps_images_apart():
    gen = torch.Generator().manual_seed(1)
    per_image = []
    for _ in range(3):
        corner = torch.rand(12, 2, generator=gen) * 100
        boxes = torch.cat([corner, corner + 20 + 10 * torch.rand(12, 2, generator=gen)], dim=1)
        per_image.append((boxes, torch.rand(12, generator=gen), torch.rand(12, bf.NUM_KEYPOINTS, 2, generator=gen) * 100))
    per_image[1] = (per_image[0][0].clone(), *per_image[1][1:])  # image 1's boxes on top of image 0's
    boxes, scores, points = (torch.cat(parts) for parts in zip(*per_image))
    images = torch.arange(3).repeat_interleave(12)
    got_boxes, got_scores, got_points, got_images = bf.batched_weighted_nms(boxes, scores, points, images)
    for n, (b, s, p) in enumerate(per_image):
        want_boxes, want_scores, want_points = bf.weighted_nms(b, s, p)
        mine = got_images == n
        order = got_scores[mine].argsort(descending=True)
        assert torch.allclose(got_boxes[mine][order], want_boxes, atol=1e-4)
        assert torch.equal(got_scores[mine][order], want_scores)
        assert torch.allclose(got_points[mine][order], want_points, atol=1e-4)


def test_merge_small_faces_of_many_images_at_once_keeps_images_apart():
    large = [Detections.from_boxes(torch.tensor([[100.0, 100.0, 300.0, 300.0]])), Detections.empty(),
             Detections.from_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0], [400.0, 400.0, 600.0, 600.0]]))]
    same_spot = torch.tensor([[120.0, 120.0, 160.0, 160.0]])  # a duplicate in image 0, new in images 1 and 2
    small = [Detections.from_boxes(same_spot, torch.tensor([0.99])), Detections.from_boxes(same_spot, torch.tensor([0.99])),
             Detections.from_boxes(torch.cat([same_spot, torch.tensor([[410.0, 410.0, 440.0, 440.0]])]), torch.tensor([0.99, 0.99]))]
    merged = detect_mod.merge_small_faces_per_image(large, small, [1000, 1000, 1000])
    assert [m.boxes.tolist() for m in merged] == [
        [[100.0, 100.0, 300.0, 300.0]],
        [[120.0, 120.0, 160.0, 160.0]],
        [[0.0, 0.0, 50.0, 50.0], [400.0, 400.0, 600.0, 600.0], [120.0, 120.0, 160.0, 160.0]],
    ]
    for big, little, got in zip(large, small, merged):
        assert torch.equal(detect_mod.merge_small_faces(big, little, 1000).boxes, got.boxes)


def test_split_by_image_keeps_order_and_empty_images():
    faces = Detections.from_boxes(torch.arange(20.0).view(5, 4), torch.arange(5.0))
    parts = detect_mod.split_by_image(faces, torch.tensor([2, 0, 2, 2, 0]), 4)
    assert [p.scores.tolist() for p in parts] == [[1.0, 4.0], [], [0.0, 2.0, 3.0], []]
    assert [len(p) for p in detect_mod.split_by_image(Detections.empty(), torch.zeros(0, dtype=torch.long), 2)] == [0, 0]


@pytest.mark.parametrize("detector", ["auto", "blazeface"])
def test_a_face_that_fills_the_photo_is_found(tiny_path, detector: str) -> None:
    """Close-ups (a portrait, a folder of face crops) gave no face: BlazeFace misses a face that fills
    its 192 px input, and MTCNN in "auto" searches only faces up to 1/20 of the photo. A photo without
    a face gets a second, zoomed-out look."""
    from pathlib import Path

    import cv2
    import numpy as np

    import lrfer

    photo = lrfer.load_image(Path(__file__).resolve().parents[1] / "examples" / "group1.jpg")
    rec = lrfer.load(tiny_path, device="cpu", detector=detector)
    boxes = [[int(round(v)) for v in face.box] for face in rec.predict(photo)]
    assert len(boxes) == 3
    crops = [np.ascontiguousarray(photo[y1:y2, x1:x2]) for x1, y1, x2, y2 in boxes]
    for size in (48, 192):
        found = rec.predict([cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA) for crop in crops])
        assert [len(faces) for faces in found] == [1, 1, 1]
        assert all(faces[0].face_px > 0.8 * size for faces in found)
    rng = np.random.default_rng(0)
    assert rec.predict([rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), np.zeros((200, 200, 3), np.uint8)]) == [[], []]
    # close_ups=False: no second look (faster on photos without a face), so the close-up is missed again
    fast = lrfer.load(tiny_path, device="cpu", detector=detector, close_ups=False)
    assert fast.predict(cv2.resize(crops[0], (192, 192), interpolation=cv2.INTER_AREA)) == []
