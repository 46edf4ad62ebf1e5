"""lrfer.overlap: steps of work in flight at once on threads of their own, results in order."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from lrfer.overlap import StepCancelled, check_streams, overlapped, stop_if_cancelled

WAIT_S = 10  # generous: a lane that never comes fails the test, it does not hang it


class Source:
    """Items 0 .. n-1, recording how many were taken and by which threads."""

    def __init__(self, n: int) -> None:
        self.n, self.taken, self.takers = n, 0, set()

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.taken += 1
            self.takers.add(threading.get_ident())
            yield i


def long_step(i: int, cancelled: list[int]) -> int:
    """A step of about WAIT_S that checks stop_if_cancelled() between its parts; notes its cancellation."""
    try:
        for _ in range(int(WAIT_S / 0.01)):
            time.sleep(0.01)
            stop_if_cancelled()
    except StepCancelled:
        cancelled.append(i)
        raise
    return i


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_S / 2) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (far less than a long step takes)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_results_come_in_the_items_order_when_later_steps_end_first() -> None:
    ended: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        time.sleep(0.05 * (3 - i % 3))  # of three steps in flight, the last started ends first
        with lock:
            ended.append(i)
        return 10 * i

    assert list(overlapped(work, range(9), streams=3, device="cpu")) == [10 * i for i in range(9)]
    assert ended != sorted(ended)  # the steps did end out of order


def test_steps_run_at_once_up_to_the_number_of_streams() -> None:
    both = threading.Barrier(2, timeout=WAIT_S)  # passed only when two steps run at the same time
    running, most = 0, 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if i < 2:
            both.wait()
        time.sleep(0.01)
        with lock:
            running -= 1
        return i

    assert list(overlapped(work, range(8), streams=2, device="cpu")) == list(range(8))
    assert most == 2


def test_the_next_step_starts_before_a_result_is_handed_out() -> None:
    source = Source(10)
    steps = overlapped(lambda i: i, source, streams=2, device="cpu")
    assert next(steps) == 0
    assert source.taken == 3  # items 1 and 2 are on their way while the caller holds result 0
    assert source.takers == {threading.get_ident()}  # taken by the caller's thread only
    assert list(steps) == list(range(1, 10))


def test_an_error_comes_where_its_result_would_have_and_nothing_more_starts() -> None:
    source, started = Source(20), []

    def work(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("step 2 failed")
        time.sleep(0.05)
        return i

    steps = overlapped(work, source, streams=2, device="cpu")
    got = [next(steps), next(steps)]
    with pytest.raises(ValueError, match="step 2 failed"):
        next(steps)
    assert got == [0, 1]
    time.sleep(0.2)
    assert source.taken == 4 and max(started) <= 3  # 3 may have started beside 2; nothing after it


def test_stopping_early_leaves_at_once_and_starts_nothing_more() -> None:
    """Ctrl-C or SIGTERM while batches are scored: the command stops without waiting for them."""
    source, started, finished = Source(100), [], []
    release = threading.Event()

    def work(i: int) -> int:
        started.append(i)
        if i > 0:
            release.wait(WAIT_S)
        finished.append(i)
        return i

    steps = overlapped(work, source, streams=3, device="cpu")
    assert next(steps) == 0
    steps.close()  # steps 1 and 2 (and perhaps 3) are still running: close() does not wait for them
    assert finished == [0]
    release.set()
    assert wait_until(lambda: sorted(finished) == sorted(started))  # they ended on their threads
    assert source.taken == 4 and {0} <= set(started) <= {0, 1, 2, 3}  # those not yet running were cancelled


def test_an_interrupt_taking_the_first_items_stops_the_steps_already_started() -> None:
    """SIGTERM while the second batch is decoded: the first batch's step stops at its next check."""
    started: list[int] = []
    cancelled: list[int] = []
    running = threading.Event()

    def work(i: int) -> int:
        started.append(i)
        running.set()
        return long_step(i, cancelled)

    def source() -> Iterator[int]:
        yield 0
        assert running.wait(WAIT_S)  # step 0 is running when the interrupt comes
        raise KeyboardInterrupt  # SIGTERM while the second batch is decoded

    with pytest.raises(KeyboardInterrupt):
        next(overlapped(work, source(), streams=3, device="cpu"))
    assert wait_until(lambda: bool(cancelled))
    assert started == [0] and cancelled == [0]


def first_line_printed_without_deadlock(code: str, what: str) -> str:
    """``code`` run in a process of its own: deadlocked kept threads (not daemons) would hang every later
    test and pytest's exit, instead of failing the test."""
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=6 * WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} deadlocked")
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[0]


def test_a_step_may_itself_use_the_same_streams() -> None:
    """Both kept threads ran a step that waited for the other's inner steps: forever."""
    code = (
        "from lrfer.overlap import overlapped\n"
        "def outer(i):\n"
        "    return sum(overlapped(lambda j: i * j, range(3), streams=2, device='cpu'))\n"
        "print(list(overlapped(outer, range(4), streams=2, device='cpu')))\n"
    )
    printed = first_line_printed_without_deadlock(code, "a step calling overlapped with its own threads")
    assert printed == str([3 * i for i in range(4)])


def test_one_stream_runs_in_the_calling_thread() -> None:
    threads = list(overlapped(lambda i: threading.get_ident(), range(3), streams=1, device="cpu"))
    assert threads == [threading.get_ident()] * 3


def test_several_streams_run_on_threads_of_their_own_kept_for_later_calls() -> None:
    """cuDNN's plans are made per thread: new threads for every call would make them again."""
    def thread_of(i: int) -> int:
        time.sleep(0.01)
        return threading.get_ident()

    def kept() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name.startswith("lrfer-stream-cpu")}

    first = set(overlapped(thread_of, range(6), streams=2, device="cpu"))
    kept_after_first = kept()
    again = set(overlapped(thread_of, range(6), streams=2, device="cpu"))
    assert threading.get_ident() not in first and len(first) >= 2  # more: other tests asked for more streams
    assert first <= kept_after_first and first <= kept() and again <= kept()  # the first call's threads live on


@pytest.mark.parametrize("streams", [0, -1, True, 1.5, "2", None])
def test_streams_must_be_a_positive_integer(streams: object) -> None:
    with pytest.raises(ValueError, match="streams must be an integer >= 1"):
        check_streams(streams)
    with pytest.raises(ValueError, match="streams must be an integer >= 1"):
        next(overlapped(lambda i: i, range(3), streams, "cpu"))  # type: ignore[arg-type]


def test_steps_run_with_the_callers_torch_threads() -> None:
    """torch.set_num_threads sets the calling thread's count only: the kept threads take the caller's."""
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            assert set(overlapped(lambda i: torch.get_num_threads(), range(4), streams=2, device="cpu")) == {threads}
    finally:
        torch.set_num_threads(before)


def test_a_stopped_caller_ends_its_running_steps_at_their_next_check() -> None:
    running, cancelled = threading.Event(), []

    def work(i: int) -> int:
        if i == 0:
            return 0
        if i == 1:  # step 1 itself: step 2 could run while 1 was still queued, and close() then cancel it
            running.set()
        return long_step(i, cancelled)

    stop_if_cancelled()  # outside a step: nothing
    steps = overlapped(work, range(10), streams=2, device="cpu")
    assert next(steps) == 0
    assert running.wait(WAIT_S)
    steps.close()
    assert wait_until(lambda: 1 in cancelled) and set(cancelled) <= {1, 2}


@pytest.mark.parametrize("detector", ["auto", "mtcnn"])
def test_the_detectors_stop_before_a_group_of_photos_when_cancelled(detector: str, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    from lrfer import overlap
    from lrfer.faces import blazeface, mtcnn
    from lrfer.faces.detect import make_detector

    det = make_detector(detector, "cpu")
    networks_run: list[str] = []
    for cls in (blazeface.BlazeFaceFullRange, mtcnn.PNet):  # the first network each detector runs on a group
        monkeypatch.setattr(cls, "__call__", lambda self, *a, _call=cls.__call__, **k: networks_run.append("net")
                            or _call(self, *a, **k))
    photo = torch.zeros(3, 96, 128, dtype=torch.uint8)
    stop = threading.Event()
    overlap._this_thread.stop = stop
    try:
        assert len(det.detect([photo])) == 1 and networks_run  # not stopped: runs
        networks_run.clear()
        stop.set()
        with pytest.raises(overlap.StepCancelled):
            det.detect([photo])
        assert not networks_run
    finally:
        overlap._this_thread.stop = None


def test_predict_stops_between_its_stages_when_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import lrfer
    from lrfer import overlap
    from lrfer.faces.detect import Detections

    stop = threading.Event()

    class StoppedWhileDetecting:
        device = torch.device("cpu")

        def detect(self, images: list[torch.Tensor]) -> list[Detections]:
            stop.set()  # Ctrl-C while this step detects
            return [Detections.empty() for _ in images]

    rec = lrfer.load(device="cpu", detector=None)
    rec.detector = StoppedWhileDetecting()
    aligned: list[int] = []
    monkeypatch.setattr(rec, "align", lambda *args: aligned.append(1))
    overlap._this_thread.stop = stop
    try:
        with pytest.raises(overlap.StepCancelled):
            rec.predict(np.zeros((96, 128, 3), np.uint8))
        assert not aligned
    finally:
        overlap._this_thread.stop = None


def test_the_haar_detector_stops_before_each_photo_when_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--detector haar`` (and facenet) checked nowhere before alignment: an interrupted run's exit
    waited for the detection of every photo of the batches being scored."""
    from lrfer import overlap
    from lrfer.faces import detect

    searched: list[int] = []

    class Cascade:
        def detectMultiScale(self, gray: object, **kwargs: object) -> tuple[()]:  # noqa: N802 - OpenCV's name
            searched.append(1)
            return ()

    monkeypatch.setattr(detect, "_load_haar_cascade", Cascade)
    det = detect.make_detector("haar", "cpu")
    photos = [torch.zeros(3, 96, 128, dtype=torch.uint8)] * 3
    stop = threading.Event()
    overlap._this_thread.stop = stop
    try:
        assert len(det.detect(photos)) == 3 and len(searched) == 3  # not stopped: every photo
        searched.clear()
        stop.set()
        with pytest.raises(overlap.StepCancelled):
            det.detect(photos)
        assert not searched
    finally:
        overlap._this_thread.stop = None


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork on this platform")
def test_a_child_forked_after_the_threads_started_makes_its_own(wait_for_forked_child: Callable[[int], str]) -> None:
    """The kept threads are not copied by ``os.fork`` but their executors are, counting an idle thread:
    a child that overlapped steps after its parent had waited forever for them."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import os, sys, time\n"
              "from lrfer.overlap import overlapped\n"
              "assert list(overlapped(lambda x: x * x, range(5), 2, 'cpu')) == [0, 1, 4, 9, 16]\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    os._exit(0 if list(overlapped(lambda x: x + 1, range(5), 2, 'cpu')) == [1, 2, 3, 4, 5] else 3)\n"
              + wait_for_forked_child(20))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr


def test_a_thread_started_during_the_steps_gets_the_callers_torch_threads() -> None:
    """torch.set_num_threads on a kept thread also set torch's default for threads that first use torch:
    a thread started while a first list predict ran (a web server's next request) kept one thread."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import threading, torch\n"
              "from lrfer.overlap import overlapped\n"
              "torch.set_num_threads(2)\n"
              "seen, both_started = [], threading.Barrier(2, timeout=30)\n"
              "def step(i):\n"
              "    both_started.wait()  # each kept thread has set its count (and put the default back)\n"
              "    newcomer = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))\n"
              "    newcomer.start(); newcomer.join()\n"
              "    return torch.get_num_threads()\n"
              "print(list(overlapped(step, range(2), 2, 'cpu', threads=1)), sorted(seen))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[1,", "1]", "[2,", "2]"]


def test_steps_run_on_the_threads_asked_for_and_the_caller_keeps_its_own() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = list(overlapped(lambda _: torch.get_num_threads(), range(4), 2, "cpu", threads=1))
        assert seen == [1, 1, 1, 1] and torch.get_num_threads() == 2
        assert list(overlapped(lambda _: torch.get_num_threads(), range(4), 2, "cpu")) == [2, 2, 2, 2]
    finally:
        torch.set_num_threads(before)


def test_the_threads_kept_are_as_many_as_the_most_streams_asked() -> None:
    """A set of threads per number of streams: ``predict(..., streams=4)`` on lists of 2, 3 and 4
    photos (their streams cut to their steps) kept 2 + 3 + 4 threads, each with its detection buffers
    (682 MiB for 1920 px photos against the 4 threads' 303). One pool per device now, replaced by a
    larger one when more streams are asked (grown now); a call still has at most its streams steps running.
    Checked in a process of its own: other tests' threads are kept too."""
    import subprocess
    import sys

    code = (
        "import threading, time\n"
        "from lrfer.overlap import overlapped\n"
        "lock, running, most = threading.Lock(), [0], [0]\n"
        "def step(i):\n"
        "    with lock:\n"
        "        running[0] += 1; most[0] = max(most[0], running[0])\n"
        "    time.sleep(0.01)\n"
        "    with lock:\n"
        "        running[0] -= 1\n"
        "    return threading.get_ident()\n"
        "within = []\n"
        "for n in (2, 3, 4, 3, 2):\n"
        "    most[0] = 0\n"
        "    last = set(overlapped(step, range(8), streams=n, device='cpu'))\n"
        "    within.append(most[0] <= n)\n"
        "for _ in range(200):  # the replaced pools' threads end\n"
        "    kept = {t.ident for t in threading.enumerate() if t.name.startswith('lrfer-stream-cpu')}\n"
        "    if len(kept) <= 4:\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "print(len(kept), all(within), last <= kept)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=6 * WAIT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "True", "True"]


def test_a_second_caller_does_not_wait_behind_a_busy_lane_while_another_is_free() -> None:
    """Steps handed to the lanes in turn when submitted: a second caller's first step went to lane 0 and
    waited out the first caller's long step there, while lane 1 had nothing to do."""
    release, first_done = threading.Event(), threading.Event()

    def first(i: int) -> int:
        if i == 0:
            release.wait(WAIT_S)  # lane 0 busy until released
        else:
            first_done.set()
        return i

    done: list[list[int]] = []
    caller = threading.Thread(target=lambda: list(overlapped(first, range(2), streams=2, device="cpu")))
    second = threading.Thread(target=lambda: done.append(list(overlapped(lambda i: i, range(4), 2, "cpu"))))
    caller.start()
    try:
        assert first_done.wait(WAIT_S)
        second.start()
        second.join(WAIT_S / 4)
        assert done == [[0, 1, 2, 3]], "the second caller waited for the busy lane"
    finally:
        release.set()
        caller.join(WAIT_S)
        if second.ident is not None:
            second.join(WAIT_S)


def test_a_step_may_use_another_device_whose_steps_come_back_to_its_own() -> None:
    """A step on the CPU's kept threads called overlapped for another device, whose steps called it for
    the CPU again: queued behind the CPU steps that waited for them, forever (with any streams: one
    pool per device serves every count). "meta" stands in for a GPU."""
    code = (
        "from lrfer.overlap import overlapped\n"
        "def on_other(i):\n"
        "    return sum(overlapped(lambda j: i * j, range(3), streams=3, device='cpu'))\n"
        "def on_cpu(i):\n"
        "    return sum(overlapped(on_other, range(2), streams=2, device='meta'))\n"
        "print(list(overlapped(on_cpu, range(4), streams=2, device='cpu')))\n"
    )
    printed = first_line_printed_without_deadlock(
        code, "a step calling overlapped on another device, whose steps came back to this one,")
    assert printed == str([3] * 4)


def test_steps_nesting_calls_for_two_devices_in_opposite_directions_do_not_wait_for_each_other() -> None:
    """One caller's steps on the CPU's kept threads called overlapped for another device while another
    caller's steps on that device's kept threads called it for the CPU: every thread of both pools
    waited for a step queued behind the other pool's, forever (each chain alone was run inline, the two
    together were not). "meta" stands in for a GPU."""
    code = (
        "import threading\n"
        "from lrfer.overlap import overlapped\n"
        "all_running = threading.Barrier(4, timeout=30)  # both pools' threads busy with outer steps\n"
        "def nesting(there):\n"
        "    def outer(i):\n"
        "        if i < 2:  # the first two steps of each caller: all the threads of both pools\n"
        "            all_running.wait()\n"
        "        return sum(overlapped(lambda j: i * j, range(3), streams=2, device=there))\n"
        "    return outer\n"
        "results = {}\n"
        "def call(here, there):\n"
        "    results[here] = list(overlapped(nesting(there), range(4), streams=2, device=here))\n"
        "callers = [threading.Thread(target=call, args=pair) for pair in (('cpu', 'meta'), ('meta', 'cpu'))]\n"
        "for caller in callers:\n"
        "    caller.start()\n"
        "for caller in callers:\n"
        "    caller.join()\n"
        "print(results['cpu'] == results['meta'] == [3 * i for i in range(4)])\n"
    )
    printed = first_line_printed_without_deadlock(code, "steps nesting overlapped for two devices both ways")
    assert printed == "True"


def test_steps_queued_when_more_streams_are_asked_run_on_the_threads_added() -> None:
    """A pool too small was replaced by a larger one: the steps already queued on the old pool stayed
    there, behind another caller's long steps, while the new pool's threads had nothing to do."""
    code = (
        "import threading, time\n"
        "from lrfer.overlap import overlapped\n"
        "release, both_busy = threading.Event(), threading.Barrier(3, timeout=30)\n"
        "def long_step(i):\n"
        "    both_busy.wait()\n"
        "    release.wait(60)\n"
        "    return i\n"
        "def queued_items():\n"
        "    yield 0\n"
        "    queued.set()  # item 0 is queued behind the long steps, item 1 is about to be\n"
        "    yield from range(1, 4)\n"
        "queued, done = threading.Event(), []\n"
        "long_caller = threading.Thread(target=lambda: list(overlapped(long_step, range(2), 2, 'cpu')))\n"
        "def queued_call():\n"
        "    done.extend(overlapped(lambda i: i, queued_items(), 2, 'cpu'))\n"
        "queued_caller = threading.Thread(target=queued_call)\n"
        "long_caller.start()\n"
        "both_busy.wait()  # the 2 kept threads run the long steps\n"
        "queued_caller.start()\n"
        "queued.wait(30)\n"
        "time.sleep(0.2)\n"
        "assert list(overlapped(lambda i: i, range(3), 3, 'cpu')) == [0, 1, 2]  # asks for a third thread\n"
        "queued_caller.join(10)\n"
        "print(done == [0, 1, 2, 3])\n"
        "release.set()\n"
        "long_caller.join()\n"
        "queued_caller.join()\n"
    )
    printed = first_line_printed_without_deadlock(code, "steps queued before more streams were asked")
    assert printed == "True", "the queued steps waited for the long steps while new threads were free"
