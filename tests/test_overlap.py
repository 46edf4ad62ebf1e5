"""lrfer.overlap: steps of work in flight at once on threads of their own, results in order."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from lrfer.overlap import check_streams, overlapped

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
    source, started, done = Source(20), [], []

    def work(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("step 2 failed")
        time.sleep(0.05)
        done.append(i)
        return i

    steps = overlapped(work, source, streams=2, device="cpu")
    got = [next(steps), next(steps)]
    with pytest.raises(ValueError, match="step 2 failed"):
        next(steps)
    assert got == [0, 1]
    assert source.taken == 4 and max(started) <= 3  # 3 may have started beside 2; nothing after it
    assert sorted(done) == sorted(set(started) - {2})  # and ended before the error came out


def test_stopping_early_ends_the_running_steps_and_their_threads() -> None:
    source, started, finished = Source(100), [], []

    def work(i: int) -> int:
        started.append(i)
        time.sleep(0.02)
        finished.append(i)
        return i

    steps = overlapped(work, source, streams=3, device="cpu")
    assert next(steps) == 0
    steps.close()
    assert sorted(finished) == sorted(started)  # close() returned after the running steps ended
    assert source.taken == 4 and set(started) >= {0, 1, 2}  # 3 was taken; it may have been cancelled unstarted


def test_one_stream_runs_in_the_calling_thread() -> None:
    threads = list(overlapped(lambda i: threading.get_ident(), range(3), streams=1, device="cpu"))
    assert threads == [threading.get_ident()] * 3


def test_several_streams_run_on_threads_of_their_own_kept_for_later_calls() -> None:
    """cuDNN's plans are made per thread: new threads for every call would make them again."""
    def thread_of(i: int) -> int:
        time.sleep(0.01)
        return threading.get_ident()

    first = set(overlapped(thread_of, range(6), streams=2, device="cpu"))
    again = set(overlapped(thread_of, range(6), streams=2, device="cpu"))
    assert threading.get_ident() not in first and len(first) == 2
    assert again == first
    names = {t.name for t in threading.enumerate() if t.ident in first}
    assert all(name.startswith("lrfer-stream-cpu") for name in names) and len(names) == 2


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
