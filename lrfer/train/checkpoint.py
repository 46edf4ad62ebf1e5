"""Resumable training checkpoints in safetensors + JSON (no pickle, like the served weights)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def optimizer_to_flat(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (per parameter) and JSON-able metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value.contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    meta: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and ``path.with_suffix('.json')`` atomically enough for resume."""
    tensors: dict[str, torch.Tensor] = {}
    meta = dict(meta, optimizers={})
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().contiguous().clone() for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        flat, opt_meta = optimizer_to_flat(f"optim_{name}", optimizer)
        tensors.update(flat)
        meta["optimizers"][name] = opt_meta
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    tmp.replace(path)


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    tensors = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    for name, optimizer in optimizers.items():
        optimizer_from_flat(f"optim_{name}", optimizer, tensors, meta["optimizers"][name])
    return meta
