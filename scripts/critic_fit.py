"""Can a DDPG critic predict an off-policy run's returns? Fit one offline on the random
warm-up episodes of a run's replay buffer and score it on held-out episodes.

Usage: .venv/bin/python scripts/critic_fit.py RUN_DIR [--episodes 40] [--updates 240 2000]
       [--seed 0]

RUN_DIR is a `prune-env train --agent ddpg|td3|amc` run (its ``replay.npz``). The first
``--episodes`` episodes of the buffer (the warm-up's: random actions) are split by episode,
three quarters to fit and a quarter held out. For each target (one-step TD, as sb3's DDPG
trains; the episode's return from each step, as AMC's search and `agents.sb3.AMC` do) and
each observation (the full one; the descriptor only, AMC's layer embedding) a fresh critic
(two layers of 300, AMC's) is trained for each number of ``--updates`` (batch 64, lr 1e-3,
gamma 1, tau 0.01, the actor at 1e-4), and the table gives the correlation of Q(s, a) with
the return that followed, on the fitted and on the held-out episodes, and the share of the
actor's outputs within 0.05 of the range's ends (saturated). Above it, the correlation of
each episode's return with the action taken at each step, over all the episodes used. The README's "AMC in the same
environment" quotes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3 import AMC
from prune_env.envs.observation import ObservationLayout


def episodes_of(replay: Path, count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` whole episodes of the buffer in the order they ran (the
    environments' i-th episodes side by side), each as arrays over its steps."""
    with np.load(replay, allow_pickle=False) as arrays:
        data = {k: arrays[k] for k in ("observations", "next_observations", "actions",
                                       "rewards", "dones")}
        if bool(arrays["full"]):
            raise SystemExit(f"{replay} has wrapped around: its first episodes are gone")
        end = int(arrays["pos"])
    by_env: list[list[dict[str, np.ndarray]]] = []
    for env in range(data["rewards"].shape[1]):
        ends = np.flatnonzero(data["dones"][:end, env]) + 1
        by_env.append([{k: v[a:b, env] for k, v in data.items()}
                       for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)])
    ordered = [e for group in zip(*by_env, strict=False) for e in group]
    if len(ordered) < count:
        raise SystemExit(f"{replay} holds {len(ordered)} whole episodes, fewer than "
                         f"--episodes {count}")
    return ordered[:count]


def returns(episode: dict[str, np.ndarray]) -> np.ndarray:
    """The return from each step on (gamma 1)."""
    return np.cumsum(episode["rewards"][::-1])[::-1].astype(np.float32)


def stack(episodes: list[dict[str, np.ndarray]], width: int, mc: bool) -> dict[str, np.ndarray]:
    obs = np.concatenate([e["observations"][:, :width] for e in episodes])
    nxt = np.concatenate([e["next_observations"][:, :width] for e in episodes])
    g = np.concatenate([returns(e) for e in episodes])
    rewards = g if mc else np.concatenate([e["rewards"] for e in episodes])
    dones = np.ones_like(g) if mc else np.concatenate([e["dones"] for e in episodes])
    return {"obs": obs, "next": nxt, "actions": np.concatenate([e["actions"] for e in episodes]),
            "rewards": rewards, "dones": dones, "returns": g}


def action_correlations(episodes: list[dict[str, np.ndarray]]) -> np.ndarray:
    """(steps, action size): the correlation, over episodes of one length, of the episode's
    return with the action taken at each step."""
    steps = len(episodes[0]["rewards"])
    same = [e for e in episodes if len(e["rewards"]) == steps]
    total = np.array([e["rewards"].sum() for e in same])
    actions = np.stack([e["actions"] for e in same])  # (episodes, steps, action size)
    return np.array([[np.corrcoef(actions[:, t, k], total)[0, 1]
                      for k in range(actions.shape[2])] for t in range(steps)])


def fit(train: dict[str, np.ndarray], test: dict[str, np.ndarray], updates: int,
        seed: int) -> tuple[float, float, float]:
    """(train correlation, held-out correlation, saturated share) of a critic fitted on
    ``train`` for ``updates`` steps."""
    width, size = train["obs"].shape[1], len(train["obs"])

    class Shapes(gym.Env):  # only the spaces: the agent never steps it
        observation_space = spaces.Box(-1.0, 1.0, (width,), np.float32)
        action_space = spaces.Box(-1.0, 1.0, (train["actions"].shape[1],), np.float32)

    agent = AMC("MlpPolicy", DummyVecEnv([Shapes]), seed=seed, learning_starts=0,
                batch_size=64, gamma=1.0, tau=0.01, buffer_size=size, device="cpu",
                policy_kwargs={"net_arch": [300, 300]})
    agent.set_logger(configure(None, []))
    buffer = agent.replay_buffer
    assert buffer is not None
    buffer.observations[:size, 0] = train["obs"]
    buffer.next_observations[:size, 0] = train["next"]
    buffer.actions[:size, 0] = train["actions"]
    buffer.rewards[:size, 0] = train["rewards"]
    buffer.dones[:size, 0] = train["dones"]
    buffer.pos, buffer.full = 0, True
    if updates:
        agent.train(gradient_steps=updates, batch_size=64)
    def q(data: dict[str, np.ndarray]) -> np.ndarray:
        obs, act = torch.as_tensor(data["obs"]), torch.as_tensor(data["actions"])
        return agent.critic(obs, act)[0].numpy().ravel()

    with torch.no_grad():
        corr = [float(np.corrcoef(q(d), d["returns"])[0, 1]) for d in (train, test)]
        actor = agent.actor(torch.as_tensor(test["obs"])).numpy()
    return corr[0], corr[1], float((np.abs(actor) > 0.95).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=40,
                        help="first episodes of the buffer to use, the warm-up's (default: 40)")
    parser.add_argument("--updates", type=int, nargs="+", default=[240, 2000],
                        help="critic updates to try (default: 240 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    episodes = episodes_of(args.run_dir / "replay.npz", args.episodes)
    cut = len(episodes) * 3 // 4
    full = episodes[0]["observations"].shape[1]
    print(f"{len(episodes)} episodes: {cut} fitted, {len(episodes) - cut} held out\n")
    corr = action_correlations(episodes)
    print("correlation of the return with each step's action (keep ratio, fine-tune):")
    print("  " + "  ".join(f"{t}: {a:+.2f} {b:+.2f}" for t, (a, b) in enumerate(corr)) + "\n")
    print("| target | observation | updates | corr. fitted | corr. held out | actor saturated |")
    print("|---|---|---|---|---|---|")
    for mc in (False, True):
        for width in (full, ObservationLayout.n_desc):
            train, test = stack(episodes[:cut], width, mc), stack(episodes[cut:], width, mc)
            for updates in args.updates:
                a, b, sat = fit(train, test, updates, args.seed)
                name = "descriptor" if width < full else "full"
                print(f"| {'return' if mc else 'one-step'} | {name} ({width}) | {updates} | "
                      f"{a:.2f} | {b:.2f} | {sat:.2f} |")


if __name__ == "__main__":
    main()
