"""Reusable CPU buffers of lrfer.faces.workspace: reuse, no sharing between live tensors, and the
detection volumes that use them."""
from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

from lrfer.faces import workspace
from lrfer.faces.mtcnn import MipVolume


@pytest.fixture(autouse=True)
def _own_buffers():
    workspace.release()
    yield
    workspace.release()


def test_a_freed_tensor_s_memory_is_reused_by_the_next_request():
    first = workspace.reusable_empty("t", (4, 5))
    address = first.data_ptr()
    del first
    second = workspace.reusable_empty("t", (2, 3))  # smaller: the same buffer's start
    assert second.data_ptr() == address
    del second
    assert workspace.reusable_empty("other", (4, 5)).data_ptr() != address  # slots are separate


def test_a_live_tensor_never_shares_memory_with_the_next_one():
    first = workspace.reusable_empty("t", (4, 5))
    first.fill_(1.0)
    view = first[1:]
    second = workspace.reusable_empty("t", (4, 5))
    second.fill_(2.0)
    assert first.data_ptr() != second.data_ptr()
    assert bool((first == 1.0).all()) and bool((view == 1.0).all())


def test_a_larger_request_grows_the_buffer():
    small = workspace.reusable_empty("t", (2,))
    del small
    large = workspace.reusable_empty("t", (1000,))
    large.fill_(3.0)
    assert large.shape == (1000,) and bool((large == 3.0).all())
    address = large.data_ptr()
    del large
    assert workspace.reusable_empty("t", (10,)).data_ptr() == address


def test_memory_order_and_dtype():
    x = workspace.reusable_empty("t", (2, 3, 4, 5), order=(0, 2, 3, 1))
    assert x.shape == (2, 3, 4, 5) and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    del x
    y = workspace.reusable_empty("t", (3, 4), dtype=torch.int32)
    assert y.dtype == torch.int32 and y.is_contiguous()
    with pytest.raises(ValueError, match="permutation"):
        workspace.reusable_empty("t", (3, 4), order=(0, 0))


def test_buffers_over_the_limit_are_not_kept(monkeypatch):
    monkeypatch.setattr(workspace, "MAX_REUSED_BYTES", 64)
    big = workspace.reusable_empty("t", (17,))  # 68 bytes: fresh memory, nothing kept
    assert big.shape == (17,) and "t" not in workspace._slots.buffers
    kept = workspace.reusable_empty("t", (16,))  # 64 bytes: kept for the next request
    assert workspace._slots.buffers["t"][0].data_ptr() == kept.data_ptr()


def test_a_buffer_made_in_inference_mode_works_outside_it():
    with torch.inference_mode():
        inside = workspace.reusable_empty("t", (3,))
        inside.fill_(1.0)
    del inside
    outside = workspace.reusable_empty("t", (3,))
    outside.add_(1.0)  # an in-place update of an inference tensor would raise here
    assert not outside.is_inference()


def test_each_thread_has_its_own_buffers():
    mine = workspace.reusable_empty("t", (8,))
    address = mine.data_ptr()
    del mine
    theirs = []

    def detect_in_a_thread() -> None:
        theirs.append(workspace.reusable_empty("t", (8,)).data_ptr())
        theirs.append(weakref.ref(workspace._slots.buffers["t"][0]))

    thread = threading.Thread(target=detect_in_a_thread)
    thread.start()
    thread.join()
    assert theirs[0] != address
    assert workspace.reusable_empty("t", (8,)).data_ptr() == address
    gc.collect()
    assert theirs[1]() is None  # the thread's buffer went with the thread


def test_two_live_detection_volumes_keep_their_own_photos():
    gen = torch.Generator().manual_seed(3)
    photos = [torch.randint(0, 256, (40, 60, 3), dtype=torch.uint8, generator=gen).permute(2, 0, 1) for _ in range(2)]
    first, second = MipVolume([photos[0]]), MipVolume([photos[1]])
    level0 = [first.level(0), second.level(0)]  # both alive at once
    table = [first.integral(0), second.integral(0)]
    resized = [v.resized([0], 40, 60, (20, 30)) for v in (first, second)]
    for n, photo in enumerate(photos):
        assert torch.equal(level0[n][0, :, 0], photo.float())
        assert int(table[n][-1, -1].sum()) == int(photo.sum())
        expected = torch.nn.functional.interpolate(photo[None].float(), size=(20, 30), mode="area")
        torch.testing.assert_close(resized[n], expected, rtol=0, atol=0)
    del first, second, level0, table, resized
    again = MipVolume([photos[1]]).level(0)  # the buffers are free again: reused, right values
    assert torch.equal(again[0, :, 0], photos[1].float())


def test_a_view_that_outlives_the_tensor_lent_keeps_its_memory():
    """Only the tensor handed out was watched: a view of it (``stack_images(...)[0]``), or an array
    made from it (``integral_image(...).numpy()``), kept after the tensor itself was dropped, was
    overwritten by the next request for the slot."""
    first = workspace.reusable_empty("t", (4, 5))
    first.fill_(1.0)
    view, array = first[1:], first.numpy()
    del first
    second = workspace.reusable_empty("t", (4, 5))
    second.fill_(2.0)
    assert bool((view == 1.0).all()) and (array == 1.0).all()
    del second, view, array
    third = workspace.reusable_empty("t", (4, 5))  # nothing uses the buffer any more: reused again
    assert third.data_ptr() == workspace._slots.buffers["t"][0].data_ptr()


def test_a_view_of_a_stacked_photo_keeps_its_values():
    from lrfer.faces.align import integral_image, stack_images

    dark, bright = (torch.full((3, 30, 40), v, dtype=torch.uint8) for v in (10, 200))
    plane = stack_images([dark])[0]  # the (C, N, H, W) volume of a single photo, its tensor dropped
    table = integral_image(dark)[-1]
    stack_images([bright])
    integral_image(bright)
    assert float(plane.max()) == 10.0 and int(table[-1, 0]) == 10 * 30 * 40


def test_without_torch_s_use_count_the_tensor_lent_last_still_decides(monkeypatch):
    """Where torch does not count a storage's users, the weak reference to the tensor lent last is
    what keeps a live tensor's memory from the next request."""
    monkeypatch.setattr(workspace, "_memory_users", lambda buffer: None)
    first = workspace.reusable_empty("t", (4, 5))
    first.fill_(1.0)
    second = workspace.reusable_empty("t", (4, 5))
    second.fill_(2.0)
    assert first.data_ptr() != second.data_ptr() and bool((first == 1.0).all())
    address = first.data_ptr()
    del first, second
    assert workspace.reusable_empty("t", (4, 5)).data_ptr() == address  # freed: reused


def test_release_of_every_thread_frees_the_buffers_of_threads_that_live_on() -> None:
    """``Recognizer.predict`` detects a list's steps on kept threads that never end: ``release()`` in the
    caller freed nothing of theirs, ``release(every_thread=True)`` does."""
    import threading

    made, freed, done = threading.Event(), threading.Event(), threading.Event()
    held: list[int] = []

    def kept() -> None:
        workspace.reusable_empty("test-every", (64, 64))
        made.set()
        freed.wait(10)
        held.append(len(workspace._slots.buffers))
        done.set()

    thread = threading.Thread(target=kept)
    thread.start()
    made.wait(10)
    workspace.release()
    assert any("test-every" in buffers for buffers in list(workspace._every_thread.values()))
    workspace.release(every_thread=True)
    freed.set()
    done.wait(10)
    thread.join()
    assert held == [0]


def test_release_of_every_thread_while_a_thread_starts_using_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that first asked for a buffer (a kept thread's first step, a server's new worker) while
    ``release(every_thread=True)`` went over the threads' buffers: RuntimeError "dictionary changed size
    during iteration" (a few seconds of threads starting beside a loop of release() met it)."""
    started: list[threading.Thread] = []

    class NewThreadMidway(weakref.WeakValueDictionary):  # type: ignore[type-arg]
        def values(self):  # type: ignore[no-untyped-def]
            for n, buffers in enumerate(super().values()):
                if n == 0:  # a thread takes its first buffer now
                    thread = threading.Thread(target=workspace.reusable_empty, args=("test-midway", (4,)))
                    thread.start()
                    thread.join(0.5)  # with a lock it waits for release(), which would otherwise wait for it
                    started.append(thread)
                yield buffers

    workspace.reusable_empty("test-midway", (4,))  # this thread's buffers: one to go over
    monkeypatch.setattr(workspace, "_every_thread", NewThreadMidway(workspace._every_thread))
    workspace.release(every_thread=True)
    for thread in started:
        thread.join(10)
    assert started and not any(thread.is_alive() for thread in started)
