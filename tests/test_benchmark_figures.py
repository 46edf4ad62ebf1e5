"""Figures the GPU session's benchmarks print, checked on CPU: what they time on the GPU's code path
(``cpu_tuned`` switched off) and how they add up the profiler's device time."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_detect_stages_time_pnet_on_the_gpu_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the CPU P-Net runs on propose_padded's canvases, not through run_pnet: the "P-Net" column
    of ``pipeline.py --detect-stages`` read 0 ms on CUDA, its time counted as "other"."""
    import pipeline
    from lrfer.faces import align as align_mod
    from lrfer.faces import make_detector

    detector = make_detector("mtcnn", "cpu", min_face=20)
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(align_mod, "cpu_tuned", lambda tensor: False)  # the GPU's code path, on the CPU
    with pipeline.timed_calls(torch.device("cpu"), list(pipeline.DETECT_STAGES)) as spent:
        detector.detect([image])
    assert spent["P-Net"] > 0, dict(spent)


def test_gpu_busy_counts_each_kernel_once() -> None:
    """``predict_folder.py --torch-profile``: kineto links each kernel to the operator that launched it
    (its ``self_device_time_total``) and keeps the kernel as a device event of its own; summing every
    event's self device time counted each kernel twice ("GPU busy" up to 2x, above 100 %)."""
    import predict_folder
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import EventList, FunctionEvent

    # Before torch 2.4 unified the profiler's devices, use_device named a PrivateUse1 backend only and
    # CUDA was the default (None), the time self_cuda_time_total.
    cuda = "cuda" if predict_folder.SELF_DEVICE_TIME == "self_device_time_total" else None
    op = FunctionEvent(1, "aten::conv2d", 0, 0, 50, use_device=cuda, stack=[])
    op.append_kernel("kernel", 0, 1000)  # as torch.autograd.profiler._parse_kineto_results does
    kernel = FunctionEvent(2, "kernel", 0, 10, 1010, use_device=cuda, device_type=DeviceType.CUDA, stack=[])
    events = EventList([op, kernel], use_device=cuda)
    events._build_tree()
    averages = events.key_averages()
    assert "Self CUDA time total: 1.000ms" in averages.table(sort_by=predict_folder.SELF_DEVICE_TIME)
    assert predict_folder.device_busy_us(averages) == 1000


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's (/proc)")
def test_a_childs_peak_memory_is_its_own_not_its_parents() -> None:
    """``video.py``, ``predict_memory.py`` and ``photo_memory.py`` print the peak memory of a ``lrfer``
    process they start: read as ``ru_maxrss``, it began at the benchmark's own resident memory (Linux
    keeps the larger across ``exec``), so video.py's memory rows were the benchmark's size (a model
    and decoded frames: 500-970 MB, "flat" at any length), not the command's (about 330 MB)."""
    import subprocess
    import sys

    import numpy as np
    from _common import IMPORT_PEAK_RSS

    held = np.ones(400 * 2**20 // 8)  # 400 MiB resident here while the child runs
    held[:: 4096 // 8] = 2.0
    code = IMPORT_PEAK_RSS + "\nimport resource; print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    own, inherited = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout.split())
    assert inherited > 400  # what the benchmarks read before
    assert own < 400 < inherited, (own, inherited)
    del held


def test_host_calls_count_a_replay_as_one_call_and_its_insides_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_calls.py``: with graphs on, a recorded network's operators are not counted (a GPU launches
    the graph once), the replay is, and so are the copies in and out; without graphs every operator is."""
    import host_calls
    from torch import nn

    from lrfer import graphs, shapes

    class Three(nn.Module):  # three counted operators per call
        def forward(self, x):
            return (x * 2 + 1).relu()

    counter = host_calls.CountedCalls()
    monkeypatch.setattr(graphs, "DEVICE_TYPES", frozenset({"cpu"}))
    monkeypatch.setattr(graphs, "capture_cuda", host_calls.counting_capture(counter))
    monkeypatch.setattr(graphs, "_replay", host_calls.counting_replays(counter, graphs._replay))
    net, x = Three(), torch.randn(5, 4)
    graphs.forget()
    counts = []
    for on in (False, True, True):
        monkeypatch.setattr(graphs, "_enabled", on)
        counter.by_place.clear()
        with counter:
            out = shapes.run_bucketed(net, x, min_rows=8)
        torch.testing.assert_close(out, (x * 2 + 1).relu())
        counts.append(dict(counter.by_place))
    graphs.forget()
    assert sum(counts[0].values()) >= 4  # the padding, then three operators
    assert "graph replay" not in counts[0] and counts[2]["graph replay"] == 1
    assert not any(place.endswith((":forward", ":replay")) for place in counts[2]), counts[2]  # the insides
    assert sum(counts[2].values()) < sum(counts[0].values()) + 1
    assert counts[2].get("graphs.py:_replay", 0) >= 1 and counts[2].get("graphs.py:_rows", 0) == 1
