"""Inference graphs that add and multiply into tensors nothing reads afterwards (``torch.fx``).

In GME-Net's attention blocks every ``x * attention`` and ``x + shortcut`` made a new feature map (8 MiB
per 256 faces in GME-Net-16's first stage) to allocate, fault in and write. Computed into their
first operand instead, with the same outputs bit for bit (the same operations on the same values),
the default model's ``predict_crops`` ran 1.04-1.31x faster on 2 cores in five runs of 20 interleaved
rounds (``benchmarks/in_place.py``; 0.98-1.04x for the smallest networks and the 48 px reference).

:func:`compute_in_place` rewrites ``a + b`` / ``a * b`` as ``a.add_(b)`` / ``a.mul_(b)`` only where
that cannot be seen: ``a`` is a whole tensor that the graph made itself (not the input, a weight or
a view), nothing reads it or any alias of it afterwards, and it already has the result's shape and
dtype (shapes and dtypes from one run on an example input). Only for graphs run without autocast:
there a mixed-dtype sum would keep the first operand's dtype instead of promoting.
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

#: The elementwise operations rewritten, and their in-place methods.
IN_PLACE_METHODS = {operator.add: "add_", torch.add: "add_", operator.mul: "mul_", torch.mul: "mul_"}
#: Modules whose output is always a new tensor (unless built with ``inplace=True``).
NEW_TENSOR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.AvgPool2d,
                      nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
                      nn.SiLU, nn.Hardswish, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.Upsample)
#: Functions and methods whose output is always a new tensor.
NEW_TENSOR_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                        torch.div, torch.cat, torch.stack, torch.sigmoid, torch.tanh, torch.relu, torch.softmax,
                        F.relu, F.conv2d, F.linear, F.softmax, F.interpolate, F.avg_pool2d, F.max_pool2d,
                        F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.mean, torch.amax, torch.sum}
NEW_TENSOR_METHODS = {"mean", "amax", "sum", "sigmoid", "relu", "softmax", "add", "mul", "sub", "div"}


def compute_in_place(graph_module: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """A copy of ``graph_module`` (sharing its parameters) whose eligible additions and multiplications
    are computed into their first operand. ``example``: an input batch of at least two rows, for the
    shapes and dtypes (with one row, a tensor made from weights alone could pass for a batch).

    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(2, 2, 3, padding=1)
    ...     def forward(self, x):
    ...         return torch.relu(self.conv(x) * torch.sigmoid(x.mean(1, keepdim=True)) + x)
    >>> block = fx.symbolic_trace(Block())
    >>> fast = compute_in_place(block, torch.rand(3, 2, 4, 4))
    >>> [n.target for n in fast.graph.nodes if n.op == "call_method"]
    ['mean', 'mul_', 'add_']
    >>> x = torch.rand(5, 2, 4, 4)
    >>> torch.equal(fast(x), block(x))
    True
    """
    rewritten = fx.GraphModule(graph_module, copy.deepcopy(graph_module.graph))
    # ShapeProp's own run() makes a (disabled) tqdm bar, which starts tqdm's monitor thread and fixes
    # the process's multiprocessing start method: its nodes are run here instead.
    prop = ShapeProp(rewritten)
    prop.env, prop.args_iter = {}, iter([example])
    with torch.no_grad():
        for node in rewritten.graph.nodes:
            prop.env[node] = prop.run_node(node)
    prop.env.clear()
    modules = dict(rewritten.named_modules())
    order = {node: i for i, node in enumerate(rewritten.graph.nodes)}
    owners: dict[fx.Node, fx.Node] = {}  # node -> the node that made the tensor it returns (or views)
    for node in rewritten.graph.nodes:
        owners[node] = _storage_owner(node, modules, owners)
        if node.op == "call_function" and node.target in IN_PLACE_METHODS and _can_compute_into_first(node, owners, order):
            node.op, node.target = "call_method", IN_PLACE_METHODS[node.target]
            owners[node] = owners[node.args[0]]
    rewritten.recompile()
    return rewritten


def _storage_owner(node: fx.Node, modules: dict[str, nn.Module], owners: dict[fx.Node, fx.Node]) -> fx.Node:
    """The node that made the storage of ``node``'s output: ``node`` itself for an operation known to
    return a new tensor; otherwise (views, identities, in-place modules, anything else) the owner of
    its first input's, to be safe."""
    if node.op in ("placeholder", "get_attr"):
        return node
    out = node.kwargs.get("out")
    if isinstance(out, fx.Node):  # returns the tensor it wrote into
        return owners[out]
    if node.op == "call_module":
        assert isinstance(node.target, str)  # a call_module node's target is the module's name
        module = modules[node.target]
        if isinstance(module, NEW_TENSOR_MODULES) and not getattr(module, "inplace", False):
            return node
    elif node.op == "call_function" and node.target in NEW_TENSOR_FUNCTIONS and not _writes_elsewhere(node):
        return node
    elif node.op == "call_method" and node.target in NEW_TENSOR_METHODS:
        return node
    first = next(iter(node.all_input_nodes), None)
    return owners[first] if first is not None else node


def _writes_elsewhere(node: fx.Node) -> bool:
    """``inplace=True`` or ``out=``: the function returns a tensor it was given."""
    return bool(node.kwargs.get("inplace", False)) or node.kwargs.get("out") is not None


def _can_compute_into_first(node: fx.Node, owners: dict[fx.Node, fx.Node], order: dict[fx.Node, int]) -> bool:
    """Whether ``node`` (``a + b`` or ``a * b``) may write into ``a``: a whole tensor made by the graph,
    with the result's shape and dtype, not shared with ``b``, and read by nothing after ``node``."""
    first, second = (*node.args, None)[:2]
    if not isinstance(first, fx.Node) or node.kwargs or len(node.args) != 2:
        return False
    owner = owners[first]
    if owner.op in ("placeholder", "get_attr") or not _whole_tensor_of_result_type(first, node, owner):
        return False
    if isinstance(second, fx.Node) and owners[second] is owner:
        return False
    sharing = [n for n, o in owners.items() if o is owner]
    return all(order[user] <= order[node] for n in sharing for user in n.users)


def _whole_tensor_of_result_type(first: fx.Node, node: fx.Node, owner: fx.Node) -> bool:
    metas: list[Any] = [n.meta.get("tensor_meta") for n in (first, node, owner)]  # TensorMetadata where known
    if any(not hasattr(m, "shape") for m in metas):
        return False
    first_meta, node_meta, owner_meta = metas
    return first_meta.shape == node_meta.shape == owner_meta.shape and first_meta.dtype == node_meta.dtype
