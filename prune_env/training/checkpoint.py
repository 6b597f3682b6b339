"""Saving and loading networks, as data only: nothing a file holds can run code.

A base checkpoint stores the architecture's name and arguments and its weights; a compact
network is stored as a `prune_env.nn.record` (the base's architecture, the changes surgery
made, the tensors). Both are read with ``torch.load(weights_only=True)``: a file that does not
load that way (a pickled module, a crafted payload) is refused with a message naming it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.nn.device import cpu_copy
from prune_env.nn.models import build_model, input_shape
from prune_env.nn.record import RecordError, from_record, to_record


def read_tensors(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: plain data and tensors, never code.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the file, when it is not a torch file of plain data (corrupt, or a
            pickle of objects such as a whole module, which would run code to load).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} is not a {what} this version reads: it holds objects "
                         "other than tensors and plain data, which are never unpickled "
                         "(loading them could run code)") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path} is not a readable {what} (corrupt or truncated: {err})") \
            from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a {what}: it holds a {type(data).__name__}")
    return data


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file: a kill during the save keeps the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_base(path: str | Path, model: nn.Module, arch: str, meta: dict[str, Any]) -> Path:
    """Write a base model checkpoint (weights plus ``meta``: accuracies, data set, budget)."""
    path = Path(path)
    atomic_save({"arch": arch, "input_shape": input_shape(model),
                 "num_classes": meta["num_classes"], "state_dict": cpu_copy(model).state_dict(),
                 "meta": meta}, path)
    return path


def load_base(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by `save_base`; returns (model in eval mode, meta)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run `prune-env pretrain` first")
    data = read_tensors(path, "base checkpoint")
    try:
        channels, *size = data["input_shape"]
        model = build_model(data["arch"], channels, data["num_classes"], tuple(size))
        model.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not a base checkpoint written by `prune-env pretrain` "
                         f"({err})") from err
    return model.eval(), data["meta"]


def save_compact(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write a compact network as a record (architecture, changes, tensors) with ``meta``."""
    path = Path(path)
    atomic_save({"network": to_record(cpu_copy(model)), "meta": meta}, path)
    return path


def load_compact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a network written by `save_compact`; returns (model in eval mode, meta)."""
    data = read_tensors(path, "compact network")
    try:
        return from_record(data.get("network"), str(path)), data.get("meta", {})
    except RecordError as err:
        raise ValueError(str(err)) from err
