"""Recorded graphs for the fixed-shape network calls off the CPU (lrfer.graphs, opt-in; issue 4).

CUDA graphs need a GPU (tests/test_cuda.py records real ones). Here the bookkeeping around them runs
on the CPU with a stand-in recording (``lrfer.graphs.EagerReplay``) that behaves as a CUDA graph does: ``replay()`` recomputes the
network on the recording's own input buffer into the same output tensors every time. So these tests
check what lrfer adds: one recording per shape and setting, inputs padded with zero rows, outputs
copied out (never the graph's buffers), turns taken between threads, the eager call when recording
fails.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from torch import nn

import lrfer
from lrfer import graphs, shapes
from lrfer.faces import align as align_mod


@pytest.fixture
def recorded(monkeypatch):
    """Graphs on, recorded on the CPU with :class:`lrfer.graphs.EagerReplay`; yields the recordings made."""
    made: list[graphs.EagerReplay] = []

    def capture(net, inputs):
        graph, outputs = graphs.capture_eager(net, inputs)
        made.append(graph)
        return graph, outputs

    monkeypatch.setattr(graphs, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(graphs, "capture_cuda", capture)
    monkeypatch.setattr(graphs, "_enabled", True)
    graphs.forget()
    yield made
    graphs.forget()


class RowSums(nn.Module):
    """Rows that see the whole batch: a stale row left in the graph's input would change every output."""

    def forward(self, x):
        return x * 2 + x.sum(dim=0, keepdim=True), x.mean(dim=(1, 2, 3))


class Doubles(nn.Module):
    def forward(self, x):
        return x * 2


def test_graphs_are_off_by_default_and_follow_enable(monkeypatch):
    monkeypatch.setattr(graphs, "_enabled", False)
    x = torch.zeros(2, 3, device="meta")
    assert not graphs.enabled()
    graphs.enable()
    assert graphs.enabled() and not graphs.wanted(torch.zeros(2, 3))  # the CPU never records
    graphs.enable(False)
    assert not graphs.enabled() and not graphs.wanted(x)


def test_one_recording_per_shape_and_eager_results(recorded):
    net = Doubles()
    for n in (1, 5, 64, 17):
        x = torch.randn(n, 2, 3, 3)
        torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=64, max_rows=64), x * 2)
    assert len(recorded) == 1 and recorded[0].inputs.shape == (64, 2, 3, 3)
    assert recorded[0].replays == 4
    x = torch.randn(100, 2, 3, 3)  # two calls of 64 rows: the same recording
    torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=64, max_rows=64), x * 2)
    assert len(recorded) == 1 and recorded[0].replays == 6


def test_rows_past_the_call_are_zero_as_in_the_eager_padded_call(recorded):
    """A call of 5 rows after one of 60: the graph's input rows 5..63 must be zero again, or the
    network (which mixes rows here) sees the last call's faces."""
    net = RowSums()
    for n in (60, 5, 30):
        x = torch.randn(n, 1, 2, 2)
        got = shapes.run_bucketed(net, x, min_rows=64)
        want = tuple(o[:n] for o in net(shapes.pad_rows(x, 64)))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    assert len(recorded) == 1


def test_outputs_are_copies_not_the_graphs_buffers(recorded):
    net = Doubles()
    first_in, second_in = torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 5.0)
    first = shapes.run_bucketed(net, first_in, min_rows=8)
    second = shapes.run_bucketed(net, second_in, min_rows=8)
    torch.testing.assert_close(first, first_in * 2)  # a view of the graph's outputs would now hold 10s
    torch.testing.assert_close(second, second_in * 2)
    assert first.data_ptr() != second.data_ptr()


def test_a_new_layout_or_precision_is_a_new_recording(recorded):
    net = Doubles()
    x = torch.randn(4, 3, 5, 5)
    shapes.run_bucketed(net, x, min_rows=8)
    shapes.run_bucketed(net, x.contiguous(memory_format=torch.channels_last), min_rows=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shapes.run_bucketed(net, x, min_rows=8)
    shapes.run_bucketed(net, x, min_rows=8)
    assert len(recorded) == 3
    assert recorded[1].inputs.is_contiguous(memory_format=torch.channels_last)


def test_recordings_go_with_their_network(recorded):
    net = Doubles()
    shapes.run_bucketed(net, torch.randn(2, 1, 1, 1), min_rows=4)
    assert len(graphs._recorded) == 1
    del net
    import gc

    gc.collect()
    assert len(graphs._recorded) == 0


def test_threads_take_turns_and_get_their_own_rows(recorded):
    net = Doubles()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(30):
                x = torch.full((1 + (seed + i) % 7, 4), float(seed * 100 + i))
                torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=8), x * 2)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(recorded) == 1


def test_a_network_that_cannot_be_recorded_runs_eagerly_with_one_warning(recorded, monkeypatch, caplog):
    calls = []

    def failing(net, inputs):
        calls.append(inputs.shape)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "capture_cuda", failing)
    net = Doubles()
    with caplog.at_level(logging.WARNING, logger="lrfer.graphs"):
        for n in (3, 5):
            x = torch.randn(n, 2)
            torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=8), x * 2)
    assert len(calls) == 1
    warnings = [r for r in caplog.records if r.name == "lrfer.graphs"]
    assert len(warnings) == 1 and "not permitted when stream is capturing" in warnings[0].getMessage()


def test_precision_settings_name_autocast():
    assert graphs.precision_settings("cpu")[0] is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert graphs.precision_settings("cpu")[0] == torch.bfloat16


def test_autocast_without_cache_keeps_the_callers_dtype_and_restores_the_cache():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with graphs.autocast_without_cache("cpu"):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert not torch.is_autocast_cache_enabled()
        assert torch.is_autocast_cache_enabled()
    with graphs.autocast_without_cache("cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_photo_pipeline_with_graphs_gives_the_faces_without_them(recorded, monkeypatch):
    """The GPU's code path on the CPU, with and without recorded graphs: BlazeFace, R-Net, O-Net and
    the expression model (channels_last inputs, tuple outputs) give the same faces. Fewer photo rows
    and crops per call than on a GPU keep the test fast."""
    from lrfer.faces import blazeface as blazeface_mod
    from lrfer.faces import mtcnn as mtcnn_mod

    monkeypatch.setattr(blazeface_mod, "PHOTO_ROWS", 4)
    monkeypatch.setattr(mtcnn_mod, "NET_CHUNK", 32)
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)
    photo = lrfer.load_image(lrfer.__file__.rsplit("/lrfer/", 1)[0] + "/examples/group1.jpg")
    import cv2

    photo = cv2.resize(photo, (480, round(photo.shape[0] * 480 / photo.shape[1])), interpolation=cv2.INTER_AREA)
    rec = lrfer.load("gmenet-fer2013-16px", device="cpu")
    monkeypatch.setattr(graphs, "_enabled", False)
    eager = rec.predict([photo, photo[:, ::-1].copy()])
    monkeypatch.setattr(graphs, "_enabled", True)
    graphed = rec.predict([photo, photo[:, ::-1].copy()])
    again = rec.predict([photo[:, ::-1].copy()])
    assert sum(map(len, eager)) >= 3
    assert [[f.label for f in faces] for faces in graphed] == [[f.label for f in faces] for faces in eager]
    for faces_g, faces_e in zip(graphed + again, eager + eager[1:]):
        for g, e in zip(faces_g, faces_e):
            np.testing.assert_allclose(g.box, e.box, atol=1e-3)
            np.testing.assert_allclose(list(g.probs.values()), list(e.probs.values()), atol=1e-5)
    networks = {type(r.net()).__name__ for r in recorded}
    assert {"ONet"} <= networks and len(networks) >= 3  # BlazeFace's network, O-Net, the expression model
    assert all(r.replays >= 1 for r in recorded)


def test_only_calls_padded_to_their_floor_are_recorded(recorded):
    """Each recording keeps a memory pool for its network's life: calls above the floor (the expression
    model takes any number of faces, 256 at least) run eagerly rather than keep one per batch size."""
    net = Doubles()
    for n in (100, 300, 600, 1200, 2400):
        x = torch.randn(n, 1, 2, 2)
        torch.testing.assert_close(shapes.run_bucketed(net, x, min_rows=256), x * 2)
    assert [r.inputs.shape[0] for r in recorded] == [256]


def test_train_and_eval_mode_are_recorded_apart(recorded):
    net = nn.Sequential(nn.Dropout(0.5))
    x = torch.ones(4, 8)
    torch.testing.assert_close(shapes.run_bucketed(net.eval(), x, min_rows=8), x)
    torch.manual_seed(0)
    assert (shapes.run_bucketed(net.train(), x, min_rows=8) == 0).any()  # dropout, as the eager call
    assert len(recorded) == 2


def test_recording_never_uses_a_kept_threads_stream(monkeypatch):
    """torch hands out its 32 pooled streams per device in turn: the 33rd torch.cuda.Stream() is the
    first one again. A scoring thread's stream taken as the capture stream would put that thread's work
    into the recording."""
    import itertools

    from lrfer import overlap

    counter = itertools.count()

    class PooledStream:
        def __init__(self, device=None):
            self.cuda_stream = 1000 + next(counter) % 32

    monkeypatch.setattr(torch.cuda, "Stream", PooledStream)
    monkeypatch.setattr(overlap, "own_streams", {1000 + i for i in range(31)})
    for _ in range(40):
        assert graphs.capture_stream("cuda").cuda_stream == 1031
