"""Counting FLOPs and parameters of a (compact) network.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per
multiply-accumulate of convolutions (grouped ones included) and matrix products, and nothing
for BatchNorm, activations or additions: the convention of the pruning literature.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prune_env.nn.device import module_device


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """FLOPs of one forward pass at ``batch`` images of ``input_shape`` (C, H, W)."""
    was = model.training
    model.eval()
    x = torch.zeros(batch, *input_shape, device=module_device(model))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return int(counter.get_total_flops())
