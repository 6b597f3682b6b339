"""Wrappers that adapt the environment to other agents' habits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from prune_env.envs.clamp import FLOOR, most_kept
from prune_env.envs.observation import ObservationLayout

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv


def _checked(action: np.ndarray, space: spaces.Box) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32)
    if action.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape}, got {action.shape}")
    if not np.isfinite(action).all():
        raise ValueError("action holds NaN or infinity")
    return action


def _max_filters(env: gym.Env) -> int:
    keep_space = cast(spaces.Dict, env.action_space)["keep"]
    return cast(int, cast(spaces.MultiBinary, keep_space).n)  # MultiBinary(max_filters)


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
        self.action_space = spaces.Box(0.0, 1.0, (_max_filters(env) + 1,), np.float32)

    @staticmethod
    def finetune_of(action: np.ndarray) -> float:
        """The fine-tune fraction ``action`` stands for."""
        return float(np.clip(action[-1], 0.0, 1.0))  # agents' Gaussian samples overshoot

    def action(self, action: np.ndarray) -> dict[str, Any]:
        action = _checked(action, cast(spaces.Box, self.action_space))
        finetune = np.array([self.finetune_of(action)], np.float32)
        return {"keep": (action[:-1] > 0.5).astype(np.int8), "finetune": finetune}


class RatioActionWrapper(gym.Wrapper):
    """AMC's action for agents with a continuous policy (stable-baselines3): a keep ratio per
    group, the filters chosen by L1 norm, and the fine-tune fraction.

    The action is ``Box(-1, 1, (2,))``, the symmetric range sb3's Gaussian and squashed
    policies start centred in: ``(a + 1) / 2`` is the fraction of the group's filters kept
    (the ``round(ratio x size)`` of largest L1 norm; none removes the group's residual
    branches where it can, as the Dict action does) and the fine-tune fraction. A policy
    then decides 2 numbers per step instead of one per filter (65 on ResNet-20), which is
    what lets it learn in tens of episodes (He et al., AMC, 2018). As AMC's, the kept count
    is then clamped so that the target stays reachable (`prune_env.envs.clamp.most_kept`:
    every group ahead cut to ``floor`` of its filters must bring the looked-up cost to the
    target), so that every episode meets it by the table (exactly in FLOPs; within the few
    percent a looked-up latency is not monotone in the filters); ``clamp=False`` leaves the
    reward's target term as all the agent is told (PPO then learned to stop pruning: README).

    Example:
        >>> env = RatioActionWrapper(gymnasium.make("prune_env/Prune-v0"))  # doctest: +SKIP
        >>> model = stable_baselines3.SAC("MlpPolicy", env).learn(64)      # doctest: +SKIP
    """

    #: The smallest keep ratio an action stands for (0: none kept, the branches removed).
    least = 0.0

    def __init__(self, env: gym.Env, clamp: bool = True, floor: float = FLOOR):
        super().__init__(env)
        self.clamp, self.floor = clamp, floor
        self.layout = ObservationLayout(_max_filters(env))
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._obs: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        self._obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        return self._obs, float(reward), terminated, truncated, info

    @staticmethod
    def fractions(action: np.ndarray) -> tuple[float, float]:
        """(keep ratio, fine-tune fraction) of ``action``."""
        ratio, finetune = (np.clip(action, -1.0, 1.0) + 1.0) / 2.0  # sb3's samples overshoot
        return float(ratio), float(finetune)

    @staticmethod
    def finetune_of(action: np.ndarray) -> float:
        """The fine-tune fraction ``action`` stands for."""
        return RatioActionWrapper.fractions(action)[1]

    def action(self, action: np.ndarray) -> dict[str, Any]:
        """The Dict action ``action`` stands for in the current group."""
        assert self._obs is not None
        ratio, finetune = self.fractions(_checked(action, cast(spaces.Box, self.action_space)))
        obs, n = self._obs, self.layout.group_size(self._obs)
        least = max(1, round(self.least * n)) if self.least > 0 else 0
        count = max(least, round((self.least + (1 - self.least) * ratio) * n))
        if self.clamp:
            count = most_kept(cast("PruneEnv", self.env.unwrapped),
                              lambda k: self.layout.strongest(obs, k), count, self.floor,
                              max(1, least))
        keep = np.zeros(self.layout.max_filters, dtype=np.int8)
        keep[:n] = self.layout.strongest(obs, count)
        return {"keep": keep, "finetune": np.array([finetune], np.float32)}


class AMCActionWrapper(RatioActionWrapper):
    """`RatioActionWrapper` within AMC's bounds: ``(a + 1) / 2`` spans keep ratios from
    AMC's lower bound (`FLOOR`, 0.2) to 1, and the clamp never cuts below it either (where
    even every group at the bound misses the target by the table, the episode misses it).

    Why it matters: DDPG's actor saturates at the ends of its range (README: 2 of 3 seeds of
    AMC on the unbounded ratio learned -1 at every group within 30 episodes: every branch
    removed, chance accuracy). At AMC's bounds a saturated actor's network still trains
    (test 0.78 at a 0.7 target there), though DDPG learned no better on either.
    """

    least = FLOOR


class DescriptorObservation(gym.ObservationWrapper):
    """Only the group's descriptor (`prune_env.envs.observation.DESCRIPTOR`: its place,
    shape, cost shares and the episode's state so far) as observation: AMC's layer
    embedding, for agents whose action chooses filters without looking at them (the ratio
    actions keep them by L1 norm). Wrap it outside the action wrapper, which reads the
    filters' features from the full observation."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Box(-1.0, 1.0, (ObservationLayout.n_desc,), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(ObservationLayout.descriptor(observation), np.float32)


#: The flat actions an sb3 agent can take, by ``--sb3-action`` name
#: (`prune_env.catalog.SB3_ACTIONS`).
SB3_ACTIONS: dict[str, type[RatioActionWrapper] | type[FlatActionWrapper]] = {
    "ratio": RatioActionWrapper, "amc": AMCActionWrapper, "filters": FlatActionWrapper}
