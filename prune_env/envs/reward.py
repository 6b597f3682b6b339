"""Reward functions of the environment, selectable by name.

``psi-phi`` (default): try-and-learn's reward (Huang et al. 2018) per step, extended as
"Learning to Prune Faster" asks with a term for the fine-tuning compute spent:

    r_t = psi * phi - finetune_weight * finetune_fraction
    psi = (b - drop) / b        drop = base accuracy - accuracy after this step's fine-tune
    phi = log(cost_before / cost_after)   in the chosen cost (latency, energy, FLOPs, params)

plus, at the episode's end, ``+target_bonus`` if cost <= target * base cost, else
``-target_bonus * (cost / base - target) / target``.

``amc``: AMC's episode reward (He et al. 2018), -error * log(cost) at the end only, the cost
in absolute units (FLOPs, parameters, microseconds, microjoules), plus the same target term;
steps give 0.

``amc-constrained``: AMC's reward for resource-constrained compression, R = -error at the
end, where the budget clamp (``prune_env.envs.clamp``) rather than the reward meets the
target; the target term is kept for the few percent a looked-up latency can still miss by.
Departure: each step still pays ``finetune_weight * finetune_fraction``, because this
action also chooses a fine-tune duration, which AMC's does not (AMC scores each network
without fine-tuning); without a price -error alone would pay for the whole budget at
every step.

``accuracy-cost``: a plain trade-off at each step, (accuracy gain) - (cost ratio change),
plus the target term; useful as a dense sanity check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prune_env.catalog import REWARDS


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward.

    Attributes:
        name: one of REWARDS.
        allowed_drop: b, the accuracy drop (absolute, e.g. 0.02 = 2 points) at which psi = 0.
        finetune_weight: price of a full fine-tuning budget at one step.
        target: cost target as a fraction of the base cost (e.g. 0.5).
        target_bonus: size of the end-of-episode target term.
    """

    name: str = "psi-phi"
    allowed_drop: float = 0.02
    finetune_weight: float = 0.05
    target: float = 0.5
    target_bonus: float = 1.0

    def __post_init__(self):
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}: choose one of {', '.join(REWARDS)}")
        if self.allowed_drop <= 0:
            raise ValueError("allowed_drop must be > 0 (it divides the accuracy drop)")
        if not 0 < self.target <= 1:
            raise ValueError("target is a fraction of the base cost, in (0, 1]")


def step_reward(cfg: RewardConfig, base_acc: float, acc: float, cost_before: float,
                cost_after: float, base_cost: float, finetune_fraction: float) -> float:
    """Reward of one pruning step (before any end-of-episode term)."""
    if cfg.name == "amc":
        return 0.0
    if cfg.name == "amc-constrained":
        return -cfg.finetune_weight * finetune_fraction
    if cfg.name == "accuracy-cost":
        return (acc - base_acc) - (cost_after - cost_before) / base_cost
    psi = (cfg.allowed_drop - (base_acc - acc)) / cfg.allowed_drop
    phi = math.log(max(cost_before, 1e-12) / max(cost_after, 1e-12))
    return psi * phi - cfg.finetune_weight * finetune_fraction


def final_reward(cfg: RewardConfig, acc: float, cost: float, base_cost: float,
                 absolute_cost: float) -> float:
    """The end-of-episode term: target met or missed (and AMC's reward).

    Args:
        absolute_cost: the cost in FLOPs, parameters, microseconds or microjoules (for AMC).
    """
    ratio = cost / base_cost
    if ratio <= cfg.target:
        term = cfg.target_bonus
    else:
        term = -cfg.target_bonus * (ratio - cfg.target) / cfg.target
    if cfg.name == "amc":
        # AMC's -error * log(cost), cost in absolute units (FLOPs, parameters, microseconds,
        # microjoules) so that log(cost) > 0 and both a lower error and a smaller cost help.
        term += -(1.0 - acc) * math.log(max(absolute_cost, 1.0))
    elif cfg.name == "amc-constrained":
        term += -(1.0 - acc)
    return term
