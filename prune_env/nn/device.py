"""Where a network lives: its device, and running CPU-only work on a network that lives
elsewhere.

A network under pruning lives on the training device (a GPU, say) from the base's loading to
the final report. Inputs made for it (tracing, timing, features) are made where it is
(`module_device`). Surgery builds new modules, and Torch-Pruning's graph holds plain Python
indices; it runs on a CPU copy and moves the result back (`on_cpu`), a copy of a few
megabytes against a step's seconds of fine-tuning.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import torch
from torch import nn

R = TypeVar("R")


def module_device(model: nn.Module) -> torch.device:
    """The device of the network's first parameter or buffer (the CPU for none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether two device names are one device ("cuda" is "cuda:0", the current one)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_copy(model: nn.Module) -> nn.Module:
    """The network itself when it lives on the CPU, else a CPU copy (the caller's network
    stays where it is)."""
    if module_device(model).type == "cpu":
        return model
    return copy.deepcopy(model).cpu()


def moved_result(result: R, device: torch.device) -> R:
    """``result`` (a network, or a record with a ``model`` field) moved to ``device``."""
    if isinstance(result, nn.Module):
        return cast(R, result.to(device))
    model = getattr(result, "model", None)
    if isinstance(model, nn.Module):
        model.to(device)
    return result


def to_cpu(value: Any) -> Any:
    """A tensor (or a mapping of them, masks by name say) on the CPU; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, Mapping):
        return {k: to_cpu(v) for k, v in value.items()}
    return value


def on_cpu(function: Callable[..., R]) -> Callable[..., R]:
    """Decorate a function whose first argument is a network and which returns a network
    (or a record holding one in ``model``): it runs on a CPU copy of the network (tensor
    arguments moved too) and its result goes back to the device the network lives on."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        model = args[0]
        assert isinstance(model, nn.Module), "on_cpu: the first argument is the network"
        device = module_device(model)
        if device.type == "cpu":
            return function(*args, **kwargs)
        result = function(cpu_copy(model), *map(to_cpu, args[1:]),
                          **{k: to_cpu(v) for k, v in kwargs.items()})
        return moved_result(result, device)

    return wrapper
