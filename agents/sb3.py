"""stable-baselines3 agents (PPO, A2C, SAC, DDPG, TD3, and AMC's DDPG) on the environment,
through a flat action.

sb3 takes no Dict action, so these agents see one of `prune_env.envs.wrappers.SB3_ACTIONS`:
by default AMC's ``Box(-1, 1, (2,))`` (the keep ratio of each group, filters chosen by L1
norm, and the fine-tune fraction: `RatioActionWrapper`), or ``Box(0, 1, max_filters + 1)``
(a keep score per filter thresholded at 0.5, then the fine-tune fraction:
`FlatActionWrapper`), on which a Gaussian policy cuts at random. Their defaults are sb3's,
except the rollout and replay sizes, scaled to episodes of a dozen slow steps (sb3's PPO
default of 2048 steps per update would be days of fine-tuning here); every sb3 keyword can
be overridden (``prune-env train --agent ppo --sb3 n_steps=48 learning_rate=1e-4``).

`AMC` (``--agent amc --sb3-action amc``) is AMC's search (He et al. 2018) in this
environment: sb3's DDPG on the clamped ratio action, trained as AMC's released code trains
it (return targets, the actor at a tenth of the critic's rate, the descriptor as
observation), explored with AMC's Gaussian noise of scale 0.5 (in AMC's [0, 1] ratio
units) shrinking by 0.95 each episode after a noise-free random warm-up (`DecayingNoise`);
``--reward amc-constrained`` gives AMC's reward for this resource-constrained mode
(-error; the accuracy-guaranteed mode's -error x log(cost) is ``--reward amc``).
Departures: the action also picks a fine-tune duration, priced per step (AMC scores each
network unfine-tuned), and the noise is clipped to the action's range, not drawn from a
truncated normal (sb3's noise does not see the action it perturbs). Plain ``--agent
ddpg`` on the same action, with sb3's one-step targets and one learning rate, did not
learn here (README, "AMC in the same environment").

TD3 (Fujimoto et al. 2018: two critics and the smaller of their targets, delayed actor
updates) takes the same noise: it is DDPG with the fixes for the critic's overestimation,
tried because DDPG's actor ran to a corner of the action range; TD3's ran to the same one
(README, "AMC in the same environment"), so overestimation is not the cause; `AMC`'s
training rule learns on the same action and reward.
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from prune_env.envs.records import EpisodeLog
from prune_env.envs.wrappers import SB3_ACTIONS, DescriptorObservation, FlatActionWrapper


class ReturnReplayBuffer(ReplayBuffer):
    """AMC's credit assignment: once an episode ends, each of its transitions is given the
    return from its step on (``gamma``-discounted; AMC's 1: the end reward plus the step
    prices still to pay) and marked terminal, so that the critic regresses Q(s, a) on the
    episode's outcome directly (AMC's search stores the final reward with every step).

    Why: the end reward otherwise reaches the first groups only by bootstrapping back
    through a dozen steps of a critic that is still untrained when the actor starts to
    follow it. On the 40 random episodes of a DDPG run's warm-up, a critic trained on
    one-step targets predicted held-out returns with correlation 0.12 after 240 updates; on
    these targets, 0.35 (``scripts/critic_fit.py``; README, "AMC in the same environment").
    With one-step targets and AMC's other settings the agent learned too, more slowly
    (one seed: return 0.64 over the last 30 of 90 episodes, against 0.80). Transitions of
    an episode not yet ended keep their one-step target, which means the same thing (Q is
    the return to go); a truncated episode (no end reward) is left as sb3 stored it. ``returns=False``
    (``--sb3 "replay_buffer_kwargs={'returns': False}"``) keeps sb3's one-step targets, to
    measure what the return targets do.
    """

    def __init__(self, *args: Any, gamma: float = 1.0, returns: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gamma, self.returns = gamma, returns
        self.open: list[list[int]] = [[] for _ in range(self.n_envs)]

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray,
            reward: np.ndarray, done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        pos = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        if not self.returns:  # the ablation: sb3's one-step targets
            return
        for env in range(self.n_envs):
            self.open[env].append(pos)
            if done[env]:
                self.close(env)

    def close(self, env: int) -> None:
        """Give the ended episode of environment ``env`` its returns."""
        steps, self.open[env] = self.open[env], []
        if self.timeouts[steps[-1], env]:
            return
        ret = 0.0
        for pos in reversed(steps):
            ret = float(self.rewards[pos, env]) + self.gamma * ret
            self.rewards[pos, env] = ret
            self.dones[pos, env] = 1.0


class AMC(DDPG):
    """AMC's DDPG (He et al. 2018) as its released search code sets it: the actor learns at
    a tenth of the critic's rate (1e-4 against 1e-3), both with two hidden layers of 300,
    on `ReturnReplayBuffer`'s targets, updated once per transition (AMC updates after each
    episode; sb3 trains by episodes only with one environment), from a replay of the last
    100 episodes, after a random warm-up of a third of the episodes
    (AMC's 100 of 300) with AMC's noise (`DecayingNoise`). It sees only the group's
    descriptor (`DescriptorObservation`, AMC's layer embedding), not the per-filter features:
    its action keeps filters by L1 norm, and on the 336 inputs of ResNet-20's full
    observation a critic fitted its training returns (correlation 0.99) but not held-out
    ones (0.24; 0.33 on the descriptor: ``scripts/critic_fit.py``).

    Departures: sb3's DDPG (no moving-average reward baseline: with a return target the
    baseline only shifts Q), the fine-tune fraction as a second action, and the noise
    clipped rather than drawn from a truncated normal.
    """

    actor_lr_scale = 0.1

    def _update_learning_rate(self, optimizers: Any) -> None:
        super()._update_learning_rate(optimizers)
        for group in self.actor.optimizer.param_groups:
            group["lr"] *= self.actor_lr_scale


ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "sac": SAC,
                                              "ddpg": DDPG, "td3": TD3, "amc": AMC}


class DecayingNoise(ActionNoise):
    """AMC's exploration: Gaussian noise whose scale shrinks by ``decay`` at each episode's
    end (``reset``) once the ``warmup`` episodes of random actions are over (AMC's 100).
    During the warm-up it is zero: sb3 adds the noise to its uniform warm-up actions too,
    and at scale 1 that piled two fifths of them on the range's ends (clipped), where AMC's
    warm-up is uniform. ``episodes``: episodes this environment already ran (a resumed
    run)."""

    def __init__(self, size: int, sigma: float = 1.0, decay: float = 0.95, episodes: int = 0,
                 warmup: int = 0):
        super().__init__()
        self.size, self.sigma0, self.decay, self.episodes = size, sigma, decay, episodes
        self.warmup = warmup

    @property
    def sigma(self) -> float:
        return self.sigma0 * self.decay ** max(0, self.episodes - self.warmup)

    def __call__(self) -> np.ndarray:
        if self.episodes < self.warmup:
            return np.zeros(self.size, np.float32)
        return np.random.normal(0.0, self.sigma, self.size).astype(np.float32)

    def reset(self) -> None:
        self.episodes += 1


def default_kwargs(name: str, episode_steps: int, n_envs: int, action_size: int = 2,
                   done_before: int = 0, episodes: int = 0) -> dict[str, Any]:
    """sb3 hyper-parameters scaled to this environment's short, slow episodes;
    ``done_before``: episodes of a resumed run (DDPG's noise has shrunk by then);
    ``episodes``: the run's budget (AMC's warm-up is a third of it)."""
    if name == "ppo":
        steps = 2 * episode_steps
        return {"n_steps": steps, "batch_size": max(2, steps * n_envs // 4), "n_epochs": 4}
    if name == "a2c":
        return {"n_steps": episode_steps}
    off_policy: dict[str, Any] = {"learning_starts": 2 * episode_steps, "batch_size": 32,
                                  "buffer_size": 10_000, "train_freq": 1, "gradient_steps": 1}
    if name in ("ddpg", "td3", "amc"):  # AMC's 0.5 of a [0, 1] ratio is 1.0 of sb3's [-1, 1]
        off_policy["action_noise"] = DecayingNoise(action_size, episodes=done_before // n_envs)
    if name == "amc":  # its released search code's settings (`AMC`)
        warmup = max(1, episodes // 3) if episodes else 2
        return off_policy | {
            "learning_starts": warmup * episode_steps, "batch_size": 64,
            "buffer_size": 100 * episode_steps, "learning_rate": 1e-3, "tau": 0.01,
            "gamma": 1.0, "gradient_steps": n_envs,
            "policy_kwargs": {"net_arch": [300, 300]},
            "replay_buffer_class": ReturnReplayBuffer}
    return off_policy


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """``["n_steps=48", "learning_rate=1e-4"]`` -> ``{"n_steps": 48, "learning_rate": 1e-4}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--sb3 takes key=value pairs, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a plain string, e.g. activation names
    return out


def flat(env: gym.Env, action: str, agent: str) -> gym.Env:
    """``env`` as sb3 agent ``agent`` sees it: with the flat action ``action``
    (`SB3_ACTIONS`), and for `AMC` only the group's descriptor as observation."""
    env = SB3_ACTIONS[action](env)
    return DescriptorObservation(env) if agent == "amc" else env


def make_vec(env_fn: Callable[[], gym.Env], n_envs: int, seed: int,
             action: str = "ratio", agent: str = "ppo") -> VecEnv:
    """``n_envs`` environments as agent ``agent`` sees them (`flat`), in subprocesses when
    more than one."""

    def flat_env():
        # no oversubscription of the cores, and never more threads than the process was given
        share = (os.cpu_count() or 1) // n_envs
        torch.set_num_threads(max(1, min(torch.get_num_threads(), share)))
        return flat(env_fn(), action, agent)

    cls = SubprocVecEnv if n_envs > 1 else DummyVecEnv
    # spawn: a forked child hangs once it runs OpenMP work on several threads (timing does)
    kwargs = {"start_method": "spawn"} if n_envs > 1 else None
    return make_vec_env(flat_env, n_envs=n_envs, seed=seed, vec_env_cls=cls,
                        vec_env_kwargs=kwargs)


def make_agent(name: str, vec_env: VecEnv, seed: int, overrides: dict[str, Any],
               episode_steps: int, done_before: int = 0, episodes: int = 0) -> BaseAlgorithm:
    """A fresh sb3 agent with this environment's defaults, then the user's overrides."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown sb3 agent {name!r}: choose one of {', '.join(ALGORITHMS)}")
    size = int(np.prod(vec_env.action_space.shape or (1,)))
    kwargs = default_kwargs(name, episode_steps, vec_env.num_envs, size,
                            done_before, episodes) | overrides
    if kwargs.get("replay_buffer_class") is ReturnReplayBuffer:
        kwargs["replay_buffer_kwargs"] = {"gamma": kwargs["gamma"]} | kwargs.get(
            "replay_buffer_kwargs", {})
    noise = kwargs.get("action_noise")
    if isinstance(noise, DecayingNoise):  # each environment's share of the warm-up's steps
        noise.warmup = kwargs["learning_starts"] // (episode_steps * vec_env.num_envs)
    return ALGORITHMS[name]("MlpPolicy", vec_env, seed=seed, verbose=0, device="cpu", **kwargs)


class EpisodeCallback(BaseCallback):
    """Sums each environment's step infos into episode logs and hands them to ``on_episode``;
    stops training once ``episodes`` episodes are done in all.

    Args:
        on_episode: called with each finished episode's log; returns nothing.
        episodes: the total budget (a resumed run counts its earlier episodes).
        done_before: episodes finished before this ``learn`` call.
        finetune_of: the fine-tune fraction a flat action stands for (its wrapper's).
    """

    def __init__(self, on_episode: Callable[[EpisodeLog], None], episodes: int,
                 done_before: int = 0,
                 finetune_of: Callable[[np.ndarray], float] = FlatActionWrapper.finetune_of):
        super().__init__()
        self.on_episode, self.episodes, self.done = on_episode, episodes, done_before
        self.finetune_of = finetune_of
        self.running: list[dict[str, float]] = []

    def _on_training_start(self) -> None:
        self.running = [{"reward": 0.0, "finetune_steps": 0,
                         "finetune_sum": 0.0, "steps": 0} for _ in range(self.training_env.num_envs)]

    def _on_step(self) -> bool:
        actions = self.locals["actions"]
        for i, (info, reward, done) in enumerate(zip(self.locals["infos"],
                                                     self.locals["rewards"],
                                                     self.locals["dones"], strict=True)):
            run = self.running[i]
            run["reward"] += float(reward)
            run["finetune_steps"] += info["finetune_steps"]
            run["finetune_sum"] += self.finetune_of(actions[i])
            run["steps"] += 1
            if done:
                self.on_episode(self.episode_log(run, info))
                self.done += 1
                self.running[i] = dict.fromkeys(run, 0.0)
        return self.done < self.episodes

    def episode_log(self, run: dict[str, float], info: dict[str, Any]) -> EpisodeLog:
        return EpisodeLog(
            episode=self.done, reward=run["reward"], accuracy=info["accuracy"],
            cost_ratio=info["cost_ratio"], latency_ms=info["latency_ms"],
            energy_mj=info["energy_mj"], flops=info["flops"], params=info["params"],
            finetune_seconds=info["episode_finetune_seconds"],
            finetune_steps=int(run["finetune_steps"]),
            # no tries: the steps it fine-tuned are all its search spent
            search_finetune_steps=int(run["finetune_steps"]),
            finetune_mean=run["finetune_sum"] / max(run["steps"], 1),
            kept=info["kept_filters"])


def save_agent(agent: BaseAlgorithm, run_dir: Path) -> None:
    """The agent (and an off-policy agent's replay buffer as plain arrays), written
    atomically."""
    tmp = run_dir / "agent.tmp.zip"
    agent.save(tmp)
    tmp.replace(run_dir / "agent.zip")
    if isinstance(agent, OffPolicyAlgorithm):
        buffer = agent.replay_buffer
        if buffer is None:
            raise RuntimeError("the agent has no replay buffer to save (model not set up)")
        arrays = {k: getattr(buffer, k) for k in REPLAY_ARRAYS}
        tmp = run_dir / "replay.tmp.npz"
        np.savez(tmp, pos=buffer.pos, full=buffer.full, **arrays)
        tmp.replace(run_dir / "replay.npz")


#: What a replay buffer holds besides its position (saved as arrays, never pickled).
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones",
                 "timeouts")


def load_agent(name: str, run_dir: Path, fresh: BaseAlgorithm) -> BaseAlgorithm:
    """Reload a checkpointed agent onto ``fresh``'s environments without unpickling anything.

    sb3's zip stores some attributes with cloudpickle (spaces, schedules, classes), which
    would run whatever a crafted file holds; they are taken from ``fresh``, an agent built
    with the same hyper-parameters, instead (run-time state such as the last observation is
    left to sb3 to reset). The weights and optimiser (.pth files) sb3 reads as tensors only.
    """
    path = run_dir / "agent.zip"
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not an agent saved by this run ({err})") from err
    pickled = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    custom = {k: getattr(fresh, k, None) for k in pickled}
    agent = ALGORITHMS[name].load(path, env=fresh.get_env(), device="cpu",
                                  custom_objects=custom)
    replay = run_dir / "replay.npz"
    if isinstance(agent, OffPolicyAlgorithm) and replay.exists():
        buffer = agent.replay_buffer
        if buffer is None:
            raise RuntimeError(f"the agent loaded from {path} has no replay buffer")
        with np.load(replay, allow_pickle=False) as arrays:
            for key in REPLAY_ARRAYS:
                setattr(buffer, key, arrays[key])
            buffer.pos = int(arrays["pos"])
            buffer.full = bool(arrays["full"])
    return agent
