"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread avoids thread contention with other jobs on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 16 px baseline (width 8, temperature 1.5) saved like a zoo model: fast
    to load and run, no training."""
    import torch

    from lrfer.constants import CLASSES
    from lrfer.models import build_model
    from lrfer.zoo import save_weights

    torch.manual_seed(0)
    model = build_model("baseline", width=8, input_size=16)
    entry = {
        "name": "baseline-fer2013-16px", "arch": "baseline", "config": {"width": 8}, "dataset": "fer2013",
        "resolution": 16, "in_chans": 1, "classes": list(CLASSES), "mean": [0.5], "std": [0.25],
        "source": {"kind": "bundled"}, "temperature": 1.5,
        "license": {"code": "MIT", "weights": "test only", "data": "FER2013 research-only"},
    }
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_weights(model.state_dict(), path, entry)
    return path


def _slot_backed(array: object) -> bool:
    """Whether ``array``'s chain of numpy bases ends in a :class:`~lrfer.io.DecodeSlots` slot's lease."""
    import numpy as np

    base = getattr(array, "base", None)
    while isinstance(base, np.ndarray):
        base = base.base
    return type(base).__name__ == "_SlotLease"


@pytest.fixture
def slot_backed() -> Callable[[object], bool]:
    """:func:`_slot_backed`: whether a decoded array views a reusable decoding slot."""
    return _slot_backed


@pytest.fixture
def wait_for_forked_child() -> Callable[[int], str]:
    """The end of a test script that forked a child ``pid``: wait up to ``seconds`` for it and exit with
    its status, or kill it and exit with 'the child hung' (the script imports os, sys and time)."""
    def lines(seconds: int) -> str:
        return (f"deadline = time.monotonic() + {seconds}\n"
                "while time.monotonic() < deadline:\n"
                "    done, status = os.waitpid(pid, os.WNOHANG)\n"
                "    if done:\n"
                "        sys.exit(os.waitstatus_to_exitcode(status))\n"
                "    time.sleep(0.05)\n"
                "os.kill(pid, 9)\n"
                "sys.exit('the child hung')\n")
    return lines
