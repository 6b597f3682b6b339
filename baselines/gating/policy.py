"""Dynamic gating at a fixed setting: one budget r for every gate (FTWT's own protocol),
chosen as the largest r whose estimated cost meets the environment's target minus a margin
(see `budget_for`)."""

from __future__ import annotations

import numpy as np

from baselines.gating.network import GatedNetwork, mean_active


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
    gated = GatedNetwork(env.base_model)
    images = env.data.val.images[:samples]
    if env.cost_of_active(mean_active(gated, images, 0.0)) > (target - margin) * env.base_cost:
        raise ValueError(f"gating cannot reach a {env.cost_name} target of {target} here: even "
                         "one filter per gated conv (r = 0) costs more than the target minus "
                         f"its margin {margin}; choose a higher --target")
    lo, hi = 0.0, 1.0
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if env.cost_of_active(mean_active(gated, images, mid)) <= (target - margin) * env.base_cost:
            lo = mid
        else:
            hi = mid
    return lo
