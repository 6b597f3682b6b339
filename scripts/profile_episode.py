"""Where an episode's time goes: profile one L1 episode and group the time by phase.

Usage: .venv/bin/python scripts/profile_episode.py [--model resnet20] [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import gymnasium as gym

import prune_env  # noqa: F401
from baselines.simple import make_policy

# phase -> the function whose cumulative time it is
PHASES = {"surgery": "compact_report", "fine-tune": "train_steps", "validation": "evaluate",
          "groups": "filter_groups", "features": "_group_features",
          "observation": "_observation", "step costs": "costs", "episode end": "_finish"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--finetune", type=float, default=0.2, help="fine-tune fraction")
    args = parser.parse_args()
    env = gym.make("prune_env/Prune-v0", model=args.model, dataset=args.dataset)
    policy = make_policy("l1", env.unwrapped.max_filters, ratio=0.5, finetune=args.finetune)
    obs, _ = env.reset(seed=0)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    done = False
    while not done:
        obs, _, done, _, _ = env.step(policy.predict(obs)[0])
    profile.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    print("| phase | seconds | share |\n|---|---|---|")
    for phase, function in PHASES.items():
        seconds = sum(v[3] for k, v in stats.items() if k[2] == function)
        print(f"| {phase} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    print(f"| episode | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
