"""Grouped convs (RegNet, ResNeXt): every part keeps as many channels, and its own kernel.

Torch-Pruning cuts a grouped conv into unequal parts (a network that does not run) and keeps
every part's kernel columns at the first part's positions (a different network). Surgery
extends a group's union so that every part of each grouped conv keeps as many channels (the
extra ones zeroed like any union) and slices each part's kernel itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn


@dataclass(frozen=True)
class GroupedSide:
    """The channels of a grouped conv (not depthwise) that a pruning group holds, on its input
    or output side: ``idxs`` among ``size`` channels split into ``groups`` equal parts."""

    conv: nn.Conv2d
    inputs: bool
    idxs: tuple[int, ...]
    roots: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.conv.in_channels if self.inputs else self.conv.out_channels

    @property
    def groups(self) -> int:
        return self.conv.groups

    def kept_per_part(self, union: torch.Tensor) -> list[int]:
        """Channels kept in each part (those outside the pruning group stay)."""
        per = self.size // self.groups
        kept = [per] * self.groups
        for i, r in zip(self.idxs, self.roots, strict=True):
            kept[i // per] -= not bool(union[r])
        return kept


def grouped_convs(graph: tp.DependencyGraph, group) -> list[GroupedSide]:
    """The grouped convs (1 < groups < channels) a pruning group reaches, on either side."""
    sides = []
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        if not isinstance(module, nn.Conv2d) or module.groups in (1, module.in_channels):
            continue
        if graph.is_out_channel_pruning_fn(handler) or graph.is_in_channel_pruning_fn(handler):
            sides.append(GroupedSide(module, graph.is_in_channel_pruning_fn(handler),
                                     tuple(item.idxs), tuple(item.root_idxs)))
    return sides


def grouped_input_weight(side: GroupedSide, union: torch.Tensor) -> torch.Tensor:
    """A grouped conv's kernel without its removed inputs. Torch-Pruning keeps the same
    kernel columns for every part (those of the first), which is wrong wherever the parts
    drop channels at different positions: each part's filters keep their own part's."""
    conv = side.conv
    keep = torch.ones(conv.in_channels, dtype=torch.bool)
    for i, r in zip(side.idxs, side.roots, strict=True):
        keep[i] = bool(union[r])
    per_out = conv.out_channels // conv.groups
    kept = keep.view(conv.groups, -1)
    weight = conv.weight.detach()
    return torch.cat([weight[p * per_out:(p + 1) * per_out][:, kept[p]]
                      for p in range(conv.groups)])


def align_to_conv_groups(union: torch.Tensor, sides: list[GroupedSide]) -> None:
    """Keep, in place, as many channels in each part of every grouped conv the group reaches.

    A grouped conv cut to unequal parts does not run (Torch-Pruning slices it anyway: RegNet
    and ResNeXt were refused). The parts that keep fewer channels keep some of their dropped
    ones too, zeroed by `zero_fill` like any channel a coupled conv keeps: still exact.
    """
    changed = True
    while changed:  # one side's additions may unbalance another's
        changed = False
        for side in sides:
            kept = side.kept_per_part(union)
            per = side.size // side.groups
            need = [max(kept) - k for k in kept]
            for i, r in zip(side.idxs, side.roots, strict=True):
                if need[i // per] and not bool(union[r]):
                    union[r] = True
                    need[i // per] -= 1
                    changed = True
