"""Simple policies: keep-all, random, and L1-norm at a uniform ratio (Li et al. 2017).

Each is a policy with stable-baselines3's ``predict(obs, deterministic=True) ->
(action, state)``, reading only the observation the environment gives every agent.
"""

from __future__ import annotations

import numpy as np

from prune_env.envs.observation import ObservationLayout


class SimplePolicy:
    """Base of the simple policies: a fixed fine-tune fraction, a keep rule per group.

    Args:
        max_filters: the environment's ``action_space["keep"].n``.
        finetune: fine-tune fraction chosen at every step.
    """

    def __init__(self, max_filters: int, finetune: float = 0.2):
        self.layout = ObservationLayout(max_filters)
        self.finetune = float(finetune)

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def predict(self, obs: np.ndarray, state=None, episode_start=None,
                deterministic: bool = True):
        n = self.layout.group_size(obs)
        keep = np.zeros(self.layout.max_filters, dtype=np.int8)
        keep[:n] = self.keep(obs, n)
        return {"keep": keep, "finetune": np.array([self.finetune], np.float32)}, state


class KeepAll(SimplePolicy):
    """Keeps every filter: the unpruned reference (fine-tuning still applies)."""

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        return np.ones(n, dtype=np.int8)


class RandomKeep(SimplePolicy):
    """Keeps a random ``ratio`` of each group's filters (seeded)."""

    def __init__(self, max_filters: int, ratio: float = 0.5, finetune: float = 0.2,
                 seed: int = 0):
        super().__init__(max_filters, finetune)
        self.ratio = ratio
        self.rng = np.random.default_rng(seed)

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        keep = np.zeros(n, dtype=np.int8)
        keep[self.rng.choice(n, max(1, round(self.ratio * n)), replace=False)] = 1
        return keep


class L1Uniform(SimplePolicy):
    """Keeps the ``ratio`` of each group's filters with the largest L1 norm (Li et al. 2017)."""

    def __init__(self, max_filters: int, ratio: float = 0.5, finetune: float = 0.2):
        super().__init__(max_filters, finetune)
        self.ratio = ratio

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        return self.layout.strongest(obs, max(1, round(self.ratio * n)))


POLICIES = {"keep-all": KeepAll, "random": RandomKeep, "l1": L1Uniform}


def make_policy(name: str, max_filters: int, *, ratio: float = 0.5, finetune: float = 0.2,
                seed: int = 0) -> SimplePolicy:
    """A simple policy by name (keep-all, random, l1)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}")
    if name == "keep-all":
        return KeepAll(max_filters, finetune)
    if name == "random":
        return RandomKeep(max_filters, ratio, finetune, seed)
    return L1Uniform(max_filters, ratio, finetune)
