"""Uniform allocation: one keep ratio for every group, L1-ranked filters (Li et al. 2017).

The reference point of a pruning search: the L1-uniform baseline prunes at this ratio, and
the L2PF agent starts its keep ratios there so that its first tries explore around it.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from prune_env.nn.groups import FilterGroup
from prune_env.nn.surgery import compact


def l1_of_group(model: nn.Module, group: FilterGroup) -> torch.Tensor:
    """Each filter's L1 norm summed over the group's convs (the `l1` feature, unscaled)."""
    total = torch.zeros(group.size)
    for conv, idxs in zip(group.convs, group.local, strict=True):
        weight = cast(nn.Conv2d, model.get_submodule(conv)).weight.detach()
        total += weight.abs().flatten(1).sum(1)[list(idxs)]
    return total


def uniform_network(env, ratio: float) -> nn.Module:
    """The base network with each group's L1-largest ``ratio`` of filters (no fine-tuning)."""
    keep: dict[str, torch.Tensor] = {}
    for group in env.base_groups:
        scores = l1_of_group(env.base_model, group)
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[torch.argsort(-scores)[: max(1, round(ratio * group.size))]] = True
        keep |= group.keep_for(mask)
    return compact(env.base_model, keep)


def uniform_ratio_for(env, target: float, step: float = 0.05) -> float:
    """The largest uniform keep ratio (a multiple of ``step``) whose L1-pruned network meets
    ``target`` on the environment's looked-up cost.

    ``env`` is an unwrapped `prune_env.envs.prune.PruneEnv`. The search runs on the base network
    without fine-tuning (the cost does not depend on the weights), so it costs only surgeries
    and table lookups. Not on measured latency: on a shared machine one measured ratio varies
    by about 0.03 from run to run, no better than the table, and would make the ratio (and
    the run) differ between two runs of the same seed. Where even the smallest ratio misses
    the target (on overhead-bound hardware, say) that smallest ratio is returned.
    """
    ratios = [round(k * step, 4) for k in range(int(round(1 / step)), 0, -1)]
    for ratio in ratios:
        cost = env.meter.costs(uniform_network(env, ratio))[env.cost_key]
        if cost <= target * env.base_cost:
            return ratio
    return ratios[-1]
