"""Dynamic gating at a fixed setting: one budget r for every gate (FTWT's own protocol),
chosen as the largest r whose estimated cost meets the environment's target minus a margin
(see `budget_for`)."""

from __future__ import annotations

import numpy as np

from baselines.gating.network import GatedNetwork, mean_active
from prune_env.envs.target import OutOfReach, largest_value


class FixedBudget:
    """The gating environment's policy of one budget ``r`` at every gate.

    Args:
        budget: r in [0, 1].
        finetune: fine-tune fraction at every step.
    """

    def __init__(self, budget: float, finetune: float = 0.2):
        self.budget, self.finetune = float(budget), float(finetune)

    def predict(self, obs: np.ndarray, state=None, episode_start=None,
                deterministic: bool = True):
        return np.array([self.budget, self.finetune], np.float32), state


def budget_for(env, target: float, samples: int = 256, tolerance: float = 0.005,
               margin: float = 0.04) -> float:
    """The largest r (to ``tolerance``) at which the base network's teacher masks, averaged
    over ``samples`` validation images, give an estimated cost within ``target - margin`` of
    the base's (`GateEnv.cost_of_active`). The predictors learn those masks during the
    episode (calibrated to fire as often), but the masks drift as the backbone fine-tunes:
    ``margin`` absorbs that (measured: +0.015 to +0.025 of the base cost on the synthetic
    data)."""
    bench = env.bench
    gated = GatedNetwork(bench.base_model)
    images = bench.data.val.images[:samples]

    def meets(r: float) -> bool:
        cost = env.cost_of_active(mean_active(gated, images, r))
        return cost <= (target - margin) * bench.base_cost

    if not meets(0.0):
        raise OutOfReach(f"gating cannot reach a {bench.cost_name} target of {target} here: "
                         "even one filter per gated conv (r = 0) costs more than the target "
                         f"minus its margin {margin}; choose a higher --target")
    return largest_value(meets, 0.0, 1.0, tolerance)
