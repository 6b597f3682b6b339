"""Channel shuffles (ShuffleNetV2) made traceable, so that the rest of the network compacts.

Torch-Pruning cannot trace torchvision's `channel_shuffle` (a view, a transpose and a view:
its reshape index mapping divides by zero), so no ShuffleNetV2 could be traced at all. While
a dependency graph is built, `traceable_shuffles` gives each ShuffleNetV2 unit a
`ChannelShuffle` child that does the same permutation as one layer, with a pruner of its own:
the graph then ends at the shuffle, like at a conv. Channels that pass through a shuffle keep
their filters (surgery refuses masks on them; `prunable_convs` leaves them out); the convs
inside each unit's branches (the 1x1 expansion and the depthwise conv) compact as usual.
After the graph is built the units are torchvision's own again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

#: The units whose shuffle is a function call (module path and class name).
UNITS = ("torchvision.models.shufflenetv2.InvertedResidual",)


class ChannelShuffle(nn.Module):
    """``channel_shuffle(x, groups)`` as a layer: channel ``g * n + i`` of ``groups`` parts of
    ``n`` channels goes to position ``i * groups + g``."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups
        self.channels = 0  # known after the first forward (what the pruner reports)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.channels = x.shape[1]
        b, c, *rest = x.shape
        return x.view(b, self.groups, c // self.groups, *rest).transpose(1, 2).reshape(
            b, c, *rest)


class ChannelShufflePruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler for `ChannelShuffle`: its input and output are separate sides
    (distinct functions), so a group ends at the shuffle; surgery never prunes through it."""

    def prune_out_channels(self, layer: ChannelShuffle, idxs) -> ChannelShuffle:
        raise RuntimeError("channels that pass through a channel shuffle cannot be pruned")

    def prune_in_channels(self, layer: ChannelShuffle, idxs) -> ChannelShuffle:
        raise RuntimeError("channels that pass through a channel shuffle cannot be pruned")

    def get_out_channels(self, layer: ChannelShuffle) -> int:
        return layer.channels

    def get_in_channels(self, layer: ChannelShuffle) -> int:
        return layer.channels


def _is_unit(module: nn.Module) -> bool:
    kind = type(module)
    return f"{kind.__module__}.{kind.__qualname__}" in UNITS


def has_shuffles(model: nn.Module) -> bool:
    return any(_is_unit(m) for m in model.modules())


def _unit_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ShuffleNetV2 unit, its shuffle done by the ``shuffle`` child."""
    if self.stride == 1:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch2(x2)), dim=1)
    else:
        out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
    return self.shuffle(out)


_TRACEABLE: dict[type, type] = {}


def _traceable(kind: type) -> type:
    if kind not in _TRACEABLE:
        _TRACEABLE[kind] = type(kind.__name__, (kind,), {"forward": _unit_forward})
    return _TRACEABLE[kind]


@contextmanager
def traceable_shuffles(model: nn.Module) -> Iterator[None]:
    """Inside the block, every ShuffleNetV2 unit shuffles with a `ChannelShuffle` child."""
    units = [m for m in model.modules() if _is_unit(m)]
    classes = [type(m) for m in units]
    for unit, kind in zip(units, classes, strict=True):
        unit.shuffle = ChannelShuffle(2)
        unit.__class__ = _traceable(kind)
    try:
        yield
    finally:
        for unit, kind in zip(units, classes, strict=True):
            del unit.shuffle
            unit.__class__ = kind


#: Pruners for this module's layers, to pass to every Torch-Pruning dependency graph.
CUSTOM_PRUNERS: dict[type[nn.Module], tp.pruner.function.BasePruningFunc] = {
    ChannelShuffle: ChannelShufflePruner()}
