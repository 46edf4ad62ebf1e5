"""In-place additions and multiplications in inference graphs (lrfer.inplace): the same outputs, and
never a write into something read later (the input, a weight, an alias of a live tensor)."""
from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import lrfer
from lrfer.inplace import compute_in_place
from lrfer.recognizer import fold_batchnorm


def in_place_ops(graph_module: nn.Module) -> list[str]:
    if not isinstance(graph_module, fx.GraphModule):
        return []
    return [str(n) for n in graph_module.graph.nodes if n.op == "call_method" and n.target in ("add_", "mul_")]


@pytest.mark.parametrize("name", lrfer.list_models())
def test_zoo_networks_give_the_same_outputs_bit_for_bit(name: str) -> None:
    rec = lrfer.load(name, device="cpu", detector=None)
    folded = fold_batchnorm(rec.model)
    res, chans = rec.spec.resolution, rec.spec.in_chans
    if name.startswith("gmenet"):
        assert len(in_place_ops(rec._network)) >= 10  # its attention blocks: the pass did its work
    g = torch.Generator().manual_seed(len(name))
    with torch.inference_mode():
        for batch in (1, 5, rec._cpu_chunk):
            x = torch.randn(batch, chans, res, res, generator=g).contiguous(memory_format=torch.channels_last)
            kept = x.clone()
            assert torch.equal(rec._network(x), folded(x))
            assert torch.equal(x, kept)  # the input is never written


def test_only_cpu_float32_networks_compute_in_place() -> None:
    assert in_place_ops(lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None)._network)
    assert not in_place_ops(lrfer.load("gmenet-fer2013-16px", device="cpu", detector=None, precision="bf16")._network)


class Tricky(nn.Module):
    """Sums and products whose first operand must not be written: the input, a weight, a smaller
    (broadcast) tensor, a view of a tensor read later, a tensor that the second operand views."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.other = nn.Conv2d(2, 2, 1)
        self.scale = nn.Parameter(torch.rand(1, 2, 1, 1) + 0.5)
        self.same = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        from_input = x * 2.0  # the input
        from_weight = self.scale * a  # a weight
        pooled = a.mean(dim=(2, 3), keepdim=True)
        broadcast = pooled + a  # (N, C, 1, 1) + (N, C, H, W): the result is larger than the first operand
        alias = self.same(a) * 3.0  # an alias of a, which is read below
        viewed = a.view(a.shape) + a  # the second operand is the first's storage
        fresh = self.other(x)
        last = fresh * from_weight  # fresh and read nowhere else: may be written
        buffer = self.other(a)
        source = self.conv(x)  # read nowhere else
        written = torch.add(source, 1.0, out=buffer)  # returns the buffer, which is read below
        doubled = written * 2.0
        total = from_input + from_weight + broadcast + alias + viewed + last + a + doubled + buffer
        return x + total  # the input, read by nothing after this: still never written


def _operands(node: fx.Node) -> tuple[str, ...]:
    """What a node adds or multiplies, by where each operand comes from: "x", a module or weight name,
    a method or function name ("product" for a multiplication, "add" for a sum), or the constant."""
    names = []
    for arg in node.args:
        if not isinstance(arg, fx.Node):
            names.append(repr(arg))
            continue
        name = str(getattr(arg.target, "__name__", arg.target)).rstrip("_")
        names.append("product" if name == "mul" else name)
    return tuple(names)


def test_writes_only_into_tensors_nothing_reads_later() -> None:
    model = Tricky().eval()
    fast = compute_in_place(fx.symbolic_trace(model), torch.rand(3, 2, 5, 5))
    products_and_sums = [n for n in fast.graph.nodes if str(getattr(n.target, "__name__", n.target)).rstrip("_") in ("add", "mul")]
    in_place = {_operands(n): n.op == "call_method" for n in products_and_sums}
    assert in_place[("x", "2.0")] is False and in_place[("x", "add")] is False  # the caller's input
    assert in_place[("scale", "conv")] is False  # a weight
    assert in_place[("mean", "conv")] is False  # smaller than the result
    assert in_place[("same", "3.0")] is False  # an alias of the convolution's output, read later
    assert in_place[("view", "conv")] is False  # the second operand shares the first's storage
    assert in_place[("add", "2.0")] is False  # torch.add(..., out=buffer) returns the buffer, read later
    assert in_place[("other", "product")] is True  # the one safe product: the test can tell
    x = torch.rand(4, 2, 5, 5)
    before = x.clone()
    with torch.inference_mode():
        assert torch.equal(fast(x), model(x))
    assert torch.equal(x, before)


class MoreTricky(nn.Module):
    """More first operands that must not be written: one read by the very next node, one that an
    in-place module or function returned (its input read later), one whose second operand is a
    transposed view of it, an expanded (broadcast) view, one of a narrower dtype than the result, and
    a weight of the result's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.table = nn.Parameter(torch.rand(3, 2, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        summed = a + 1.0
        doubled = a * 2.0  # reads a right after the sum
        b = self.conv(x)
        after_module = self.relu(b) + 1.0  # ReLU(inplace=True) returns b, read below
        c = self.conv(x)
        after_function = torch.nn.functional.relu(c, inplace=True) + 1.0  # returns c, read below
        d = self.conv(x)
        crossed = d + d.transpose(2, 3)  # the second operand is the first, transposed
        wide = self.conv(x).mean(1, keepdim=True).expand(-1, 2, -1, -1) + self.conv(x)  # one value per pixel
        mixed = self.conv(x).half() + self.conv(x)  # float16 + float32 is float32
        weighted = self.table * self.conv(x)  # a weight
        pooled = self.conv(x).mean((2, 3))
        flat = torch.flatten(pooled, 1) + 1.0  # flattening (N, C) returns pooled itself, read below
        return (flat + pooled)[:, :, None, None] + summed + doubled + after_module + b + after_function + c + crossed + wide + mixed + weighted


def test_no_write_into_an_alias_a_narrower_dtype_or_a_weight() -> None:
    model = MoreTricky().eval()
    x = torch.rand(3, 2, 4, 4)
    fast = compute_in_place(fx.symbolic_trace(model), x)
    table = model.table.detach().clone()
    with torch.no_grad():
        for _ in range(2):
            got, want = fast(x), model(x)
            assert got.dtype == want.dtype == torch.float32
            assert torch.equal(got, want)
    assert torch.equal(model.table.detach(), table)
    assert in_place_ops(fast)  # some sums are still computed in place: the test can tell
