"""Uniform allocation: one keep ratio for every group, L1-ranked filters (Li et al. 2017).

The reference point of a pruning search: the L1-uniform baseline prunes at this ratio, and
the L2PF agent starts its keep ratios there so that its first tries explore around it.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_env.groups import FilterGroup
from prune_env.surgery import compact


def l1_of_group(model: nn.Module, group: FilterGroup) -> torch.Tensor:
    """Each filter's L1 norm summed over the group's convs (the `l1` feature, unscaled)."""
    total = torch.zeros(group.size)
    for conv, idxs in zip(group.convs, group.local, strict=True):
        weight = model.get_submodule(conv).weight.detach()
        total += weight.abs().flatten(1).sum(1)[list(idxs)]
    return total


def uniform_ratio_for(env, target: float, step: float = 0.05) -> float:
    """The largest uniform keep ratio whose L1-pruned network meets ``target`` (predicted).

    ``env`` is an unwrapped `prune_env.env.PruneEnv`. Pruning is done on the base network
    without fine-tuning (the cost does not depend on the weights), so the search costs only
    surgeries and table lookups. Where even the smallest ratio misses the target (on
    overhead-bound hardware, say) that smallest ratio is returned.
    """
    scores = {g.leader: l1_of_group(env.base_model, g) for g in env.base_groups}
    ratio = 1.0
    while ratio > step + 1e-9:
        ratio = round(ratio - step, 4)
        keep = {}
        for group in env.base_groups:
            mask = torch.zeros(group.size, dtype=torch.bool)
            mask[torch.argsort(-scores[group.leader])[: max(1, round(ratio * group.size))]] = True
            keep |= group.keep_for(mask)
        cost = env.meter.costs(compact(env.base_model, keep))[env.cost_key]
        if cost <= target * env.base_cost:
            return ratio
    return ratio
