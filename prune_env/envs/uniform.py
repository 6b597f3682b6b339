"""Uniform allocation: one keep ratio for every group, L1-ranked filters (Li et al. 2017).

The reference point of a pruning search: the L1-uniform baseline prunes at this ratio, and
the L2PF agent starts its keep ratios there so that its first tries explore around it.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_env.envs.bench import Bench
from prune_env.envs.target import largest_count
from prune_env.nn.groups import merge_keep
from prune_env.nn.importance import L1
from prune_env.nn.surgery import compact


def uniform_network(bench: Bench, ratio: float) -> nn.Module:
    """The base network with each group's L1-largest ``ratio`` of filters (no fine-tuning)."""
    keep: dict[str, torch.Tensor] = {}
    for group in bench.base_groups:
        scores = L1()(bench.base_model, group)
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[torch.argsort(-scores)[: max(1, round(ratio * group.size))]] = True
        merge_keep(keep, group.keep_for(mask))
    return compact(bench.base_model, keep)


def uniform_ratio_for(bench: Bench, target: float, step: float = 0.05) -> float:
    """The largest uniform keep ratio (a multiple of ``step``) whose L1-pruned network meets
    ``target`` on the looked-up cost (`prune_env.envs.target.largest_count`).

    The search runs on the base network without fine-tuning (the cost does not depend on the
    weights), so it costs only surgeries and table lookups. Not on measured latency: on a
    shared machine one measured ratio varies by about 0.03 from run to run, no better than
    the table, and would make the ratio (and the run) differ between two runs of the same
    seed. Where even the smallest ratio misses the target (on overhead-bound hardware, say)
    that smallest ratio is returned.
    """
    def meets(k: int) -> bool:
        cost = bench.meter.costs(uniform_network(bench, round(k * step, 4)))[bench.cost_key]
        return cost <= target * bench.base_cost

    # 20 settings: scanned from the top, since looked-up latency is not quite monotone
    return round(largest_count(meets, 1, int(round(1 / step)), monotone=False) * step, 4)
