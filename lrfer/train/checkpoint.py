"""Resumable training checkpoints in safetensors + JSON (no pickle, like the served weights).

A checkpoint is ``checkpoint.json`` and the tensors file it names (``checkpoint-<token>.safetensors``).
Saving writes a new tensors file, then atomically replaces the JSON: that replacement is the one commit
point, so a run killed at any moment leaves the JSON naming a complete tensors file of the same epoch.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save


#: Random bytes in a tensors file's name (``checkpoint-<8 hex digits>.safetensors``).
TOKEN_BYTES = 4
RESTART_ADVICE = "delete it to start the run over, or train in another work dir (lrfer train --work-dir DIR)"


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


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as the safetensors file ``path``, with the mode the umask gives ordinary files.

    Not safetensors' ``save_file``: it (0.8 at least) writes through a temporary file of mode 0600 renamed
    into place, so checkpoints were private to their owner while the work dir's other files and the exported
    weights (0644 under the usual umask) were not."""
    path.write_bytes(save(tensors, metadata=metadata))


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    meta: dict[str, Any]) -> None:
    """Write the checkpoint ``path`` (its ``.json`` and a tensors file next to it) in one atomic commit."""
    json_path = path.with_suffix(".json")
    tensors_file = json_path.with_name(f"{json_path.stem}-{secrets.token_hex(TOKEN_BYTES)}.safetensors")
    legacy = _legacy_tensors(path)
    tensors: dict[str, torch.Tensor] = {}
    meta = dict(meta, optimizers={}, tensors=tensors_file.name)
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().contiguous().clone() for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        flat, opt_meta = optimizer_to_flat(f"optim_{name}", optimizer)
        tensors.update(flat)
        meta["optimizers"][name] = opt_meta
    write_tensors(tensors_file, tensors)
    pending = json_path.with_name(json_path.name + ".tmp")
    pending.write_text(json.dumps(meta, indent=1))
    pending.replace(json_path)  # the commit point
    _remove_uncommitted(json_path, tensors_file, legacy)


def _legacy_tensors(path: Path) -> Path | None:
    """``checkpoint.safetensors`` when the checkpoint ``path`` now is one of the layout before the
    commit point (its JSON names no tensors file), else None (that name may be anyone's file)."""
    try:
        meta = checkpoint_meta(path)
    except ValueError:  # damaged or another program's: it has no tensors of ours
        return None
    return path.with_suffix(".safetensors") if meta is not None and "tensors" not in meta else None


def _remove_uncommitted(json_path: Path, committed: Path, legacy: Path | None) -> None:
    """Delete the tensors of earlier epochs and of saves cut short, and the replaced ``legacy`` file: only
    files of this module's names (``<stem>-<token>.safetensors``); any other file of the work dir stays."""
    own = re.compile(rf"{re.escape(json_path.stem)}-[0-9a-f]{{{2 * TOKEN_BYTES}}}\.safetensors")
    stale = [p for p in json_path.parent.glob(f"{json_path.stem}-*.safetensors") if own.fullmatch(p.name)]
    for file in [*stale, *([legacy] if legacy is not None else [])]:
        if file != committed:
            file.unlink(missing_ok=True)


def checkpoint_meta(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The JSON part of the checkpoint ``path`` (epoch, history, recipe, ...), or None if there is none;
    ValueError naming the file when it is damaged, or lacks a key of ``required`` (another program's)."""
    json_path = path.with_suffix(".json")
    if not json_path.exists():
        return None
    advice = RESTART_ADVICE
    try:
        meta = json.loads(json_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{json_path} is damaged ({err}); {advice}") from None
    missing = [key for key in ("optimizers", *required) if key not in meta] if isinstance(meta, dict) else None
    if missing is None or missing:
        what = "not a JSON object" if missing is None else f"no {', '.join(missing)}"
        raise ValueError(f"{json_path} is not an lrfer training checkpoint ({what}); {advice}")
    return meta


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Load the checkpoint ``path`` into ``modules`` and ``optimizers``; return its JSON part."""
    meta = checkpoint_meta(path)
    if meta is None:
        raise FileNotFoundError(f"no checkpoint {path.with_suffix('.json')}")
    # Checkpoints written before the JSON named its tensors file kept them in checkpoint.safetensors.
    tensors = _read_tensors(path.parent / meta.get("tensors", path.with_suffix(".safetensors").name), path)
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    for name, optimizer in optimizers.items():
        optimizer_from_flat(f"optim_{name}", optimizer, tensors, meta["optimizers"][name])
    return meta


def _read_tensors(tensors_file: Path, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint ``path``; ValueError naming the file when it is missing or damaged
    (a work dir copied without it, a disk that filled up), instead of safetensors' bare error."""
    from safetensors import SafetensorError

    try:
        return load_file(str(tensors_file))
    except (OSError, SafetensorError) as err:
        problem = "is missing" if isinstance(err, FileNotFoundError) else f"cannot be read ({err})"
        raise ValueError(f"{tensors_file}, the tensors of {path.with_suffix('.json')}, {problem}; the checkpoint "
                         f"cannot be resumed: {RESTART_ADVICE}") from None
