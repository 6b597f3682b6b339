"""Filter groups: the filters that must be pruned together, in forward order.

A group is what one environment step decides. Convs whose outputs are added together (the
convs closing the residual branches of a stage, the stem or projection that feeds them) or
that a depthwise conv ties together share their filters' indices, so one keep mask covers all
of them. Torch-Pruning's dependency graph finds the coupling; this module names it.

Example:
    >>> model = build_model("resnet20", 1, 10, (28, 28))   # doctest: +SKIP
    >>> [g.convs for g in filter_groups(model)][:2]        # doctest: +SKIP
    [['0', '3.branch.3', '4.branch.3', '5.branch.3'], ['3.branch.0']]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch_pruning as tp
from torch import nn

from prune_env.nn.blocks import residual_blocks
from prune_env.nn.models import example_input
from prune_env.nn.surgery import (
    dependency_graph,
    evaluating,
    mixes_channels,
    prunable_convs,
    reaches_shuffle,
    split_group,
)


@dataclass(frozen=True)
class FilterGroup:
    """Filters pruned together.

    Attributes:
        leader: the first conv of the group in forward order (names the group).
        convs: every conv whose output filters are in the group, forward order.
        local: for each conv, its filter index for each of the group's filters.
        size: number of filters (the length of the keep mask).
        removable: every conv lies in a residual branch (`prune_env.nn.blocks`), so dropping
            all filters removes those branches instead of cutting the network.
        widths: each conv's number of filters. A conv may hold more than the group's: a
            depthwise conv reading a concatenation is in one group per input of the concat.
    """

    leader: str
    convs: tuple[str, ...]
    local: tuple[tuple[int, ...], ...]
    size: int
    removable: bool
    widths: tuple[int, ...] = ()

    def keep_for(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-conv keep masks (for `prune_env.nn.surgery.compact`) of a group mask; the
        filters of a conv outside the group are kept. Combine several groups' with
        `merge_keep`."""
        widths = self.widths or tuple(max(idxs) + 1 for idxs in self.local)
        out = {}
        for conv, idxs, width in zip(self.convs, self.local, widths, strict=True):
            local = torch.ones(width, dtype=torch.bool)
            local[list(idxs)] = mask
            out[conv] = local
        return out


def merge_keep(keep: dict[str, torch.Tensor], more: dict[str, torch.Tensor]) -> None:
    """Add ``more``'s masks to ``keep``, in place; a conv in both keeps what both keep (a
    conv two groups share, each deciding some of its filters)."""
    for conv, mask in more.items():
        keep[conv] = keep[conv] & mask if conv in keep else mask


def forward_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the convs in the order a forward pass calls them."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def filter_groups(model: nn.Module, x: torch.Tensor | None = None,
                  graph: tp.DependencyGraph | None = None) -> list[FilterGroup]:
    """The prunable filter groups of ``model`` in forward order.

    Groups whose filters nothing reads (the network's output layer, a segmentation head) are
    left out: pruning them would change what the network outputs. So are groups holding a
    conv that a channel-mixing norm reads, or whose channels pass through a channel shuffle
    (`prunable_convs`).

    Args:
        graph: the model's dependency graph if one is at hand (`CompactResult.graph`), to
            save tracing it again.
    """
    x = example_input(model, 2) if x is None else x
    with evaluating(model):
        order = forward_order(model, x)
        if graph is None:
            graph = dependency_graph(model, x)
    names = {m: n for n, m in model.named_modules()}
    mixed = (set(order) - set(prunable_convs(model, x))
             if any(mixes_channels(m) for m in model.modules()) else set())
    in_branches = set().union(*(b.layers for b in residual_blocks(model)))
    rank = {n: i for i, n in enumerate(order)}
    seen: set[str] = set()
    groups = []
    for name in order:
        if name in seen:
            continue
        conv = cast(nn.Conv2d, model.get_submodule(name))  # forward_order names convs
        pruner = graph.get_pruner_of_module(conv)
        group = graph.get_pruning_group(conv, pruner.prune_out_channels,
                                        list(range(conv.out_channels)))
        producers, consumers = split_group(graph, group)
        members = sorted(((names[m], idxs, roots) for m, idxs, roots in producers
                          if isinstance(m, nn.Conv2d)), key=lambda p: rank.get(p[0], 1 << 30))
        seen |= {n for n, _, _ in members}
        if not consumers or mixed & {n for n, _, _ in members} or reaches_shuffle(group):
            continue
        local = tuple(tuple(i for _, i in sorted(zip(roots, idxs, strict=True)))
                      for _, idxs, roots in members)
        convs = tuple(n for n, _, _ in members)
        removable = all(n in in_branches for n in convs)
        widths = tuple(cast(nn.Conv2d, model.get_submodule(n)).out_channels for n in convs)
        groups.append(FilterGroup(convs[0], convs, local, conv.out_channels, removable,
                                  widths))
    return groups
