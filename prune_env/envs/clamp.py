"""AMC's budget clamp (He et al. 2018, "resource-constrained compression"): before a group is
pruned, the most filters it may keep such that the target can still be reached.

An agent that only sees the reward's target term can learn, as sb3's PPO did here (README),
that pruning costs accuracy at every step and the miss only at the end, and stop pruning.
AMC instead limits each action: the group may keep at most as many filters as lets the
network reach the target if every group after it were then cut to the floor of its
filters. The agent decides how to spread the cut; the target is met by construction (by the
looked-up cost: exactly in FLOPs, within a few percent in latency, which is not monotone in
the filters kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from prune_env.envs.target import largest_count
from prune_env.nn.groups import merge_keep
from prune_env.nn.importance import L1
from prune_env.nn.surgery import compact

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv

#: AMC's smallest preserve ratio of a layer (its ``lbound``): the most a group ahead is
#: assumed to give up.
FLOOR = 0.2


def most_kept(env: PruneEnv, keep_of: Callable[[int], np.ndarray], wanted: int,
              floor: float = FLOOR, least: int = 1) -> int:
    """The largest count, at most ``wanted``, of the current group's filters to keep that
    leaves the target reachable: the looked-up cost of the network with this group keeping
    ``keep_of(count)`` (a mask over its filters) and every group ahead its L1-strongest
    ``floor`` is at most target x base cost.

    ``wanted`` itself where it qualifies (one surgery and lookup, about 0.05 s on ResNet-20);
    else bisection, as if the cost grew with the count (a looked-up latency does, to a few
    percent); ``least`` where not even that qualifies: the group cut as far as the action
    allows (1 filter, or AMC's lower bound) without removing it. A count of 0 (remove the
    group's branches) cuts the most and passes as is; so does every count when the cost is
    energy, which is metered, not looked up.
    """
    bench, state = env.bench, env.episode_state
    group = state.group
    if group is None or wanted == 0 or bench.cost_name == "energy":
        return wanted
    ahead: dict[str, torch.Tensor] = {}
    for other in env.groups_ahead:
        mask = torch.zeros(other.size, dtype=torch.bool)
        mask[torch.argsort(-L1()(state.model, other))[: max(1, round(floor * other.size))]] = 1
        merge_keep(ahead, other.keep_for(mask))
    budget = bench.aim * bench.base_cost

    def meets(count: int) -> bool:
        keep = dict(ahead)
        merge_keep(keep, group.keep_for(torch.as_tensor(keep_of(count), dtype=torch.bool)))
        return bench.meter.costs(compact(state.model, keep))[bench.cost_key] <= budget

    if wanted <= least or meets(wanted):
        return wanted
    return largest_count(meets, least, wanted - 1)
