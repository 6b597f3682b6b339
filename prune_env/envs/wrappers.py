"""Wrappers that adapt the environment to other agents' habits."""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class FlatActionWrapper(gym.ActionWrapper):
    """A flat Box action for agents that cannot take Dict actions (stable-baselines3).

    The action is ``Box(0, 1, (max_filters + 1,))``: the first ``max_filters`` entries are
    keep scores (a filter is kept where its score > 0.5), the last is the fine-tune fraction.

    Example:
        >>> env = FlatActionWrapper(gymnasium.make("prune_env/Prune-v0"))  # doctest: +SKIP
        >>> model = stable_baselines3.PPO("MlpPolicy", env).learn(64)     # doctest: +SKIP
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        keep_space = cast(spaces.Dict, env.action_space)["keep"]
        size = cast(int, cast(spaces.MultiBinary, keep_space).n)  # MultiBinary(max_filters)
        self.action_space = spaces.Box(0.0, 1.0, (size + 1,), np.float32)

    def action(self, action: np.ndarray) -> dict[str, Any]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, "
                             f"got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError("action holds NaN or infinity")
        finetune = np.clip(action[-1:], 0.0, 1.0)  # agents' Gaussian samples overshoot
        return {"keep": (action[:-1] > 0.5).astype(np.int8), "finetune": finetune}
