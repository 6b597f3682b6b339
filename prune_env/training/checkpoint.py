"""Saving and loading networks: base models by architecture + weights, compact ones whole.

A base checkpoint stores the architecture's name and arguments, so it loads into a freshly
built model; a compact network has shapes no constructor knows, so it is pickled whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.nn.models import build_model


def save_base(path: str | Path, model: nn.Module, arch: str, meta: dict[str, Any]) -> Path:
    """Write a base model checkpoint (weights plus ``meta``: accuracies, data set, budget)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"arch": arch, "input_shape": tuple(model.input_shape),
                "num_classes": meta["num_classes"], "state_dict": model.state_dict(),
                "meta": meta}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
    return path


def load_base(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by `save_base`; returns (model in eval mode, meta)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run `prune-env pretrain` first")
    data = torch.load(path, map_location="cpu", weights_only=True)
    channels, *size = data["input_shape"]
    model = build_model(data["arch"], channels, data["num_classes"], tuple(size))
    model.load_state_dict(data["state_dict"])
    return model.eval(), data["meta"]


def save_compact(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Pickle a compact network whole, with its report metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "meta": meta}, path)
    return path


def load_compact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a network written by `save_compact` (trusted files only: it is a pickle)."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    return data["model"].eval(), data["meta"]
