"""Where an episode's time goes: profile one episode and group the time by phase.

Usage: .venv/bin/python scripts/profile_episode.py [--agent l1|l2pf] [--model resnet20]
       [--dataset fashion-mnist] [--checkpoint PATH] [--target 0.7] [--finetune 0.2]
       [--val-samples 2000] [--max-finetune-steps 50] [--threads 1]

``--agent l1`` profiles a plain episode (with the timed report at its end); ``--agent l2pf``
one training episode of the L2PF agent (tries, snapshots, policy updates; no report).
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
          "observation": "_observation", "step costs (measurement)": "costs",
          "episode end (timed report)": "_finish", "agent: policy update": "update",
          "agent: snapshot/restore": ("snapshot", "restore")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--finetune", type=float, default=0.2,
                        help="fine-tune fraction of the l1 policy")
    parser.add_argument("--agent", default="l1", choices=("l1", "l2pf"))
    parser.add_argument("--val-samples", type=int, default=2000)
    parser.add_argument("--max-finetune-steps", type=int, default=50)
    parser.add_argument("--checkpoint", default=None,
                        help="base network (default: checkpoints/{model}-{dataset}.pt)")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for timing")
    args = parser.parse_args()
    env = gym.make("prune_env/Prune-v0", model=args.model, dataset=args.dataset,
                   checkpoint=args.checkpoint, target=args.target, threads=args.threads,
                   val_samples=args.val_samples, max_finetune_steps=args.max_finetune_steps,
                   final_report=args.agent == "l1")
    profile = cProfile.Profile()
    if args.agent == "l2pf":
        from agents.l2pf import L2PF, L2PFConfig

        agent = L2PF(env, L2PFConfig(tries=4))
        start = time.perf_counter()
        profile.enable()
        agent.run_episode()
    else:
        policy = make_policy("l1", env.unwrapped.bench.max_filters, ratio=0.5, finetune=args.finetune)
        obs, _ = env.reset(seed=0)
        start = time.perf_counter()
        profile.enable()
        done = False
        while not done:
            obs, _, done, _, _ = env.step(policy.predict(obs)[0])
    profile.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    print("| phase | seconds | share |\n|---|---|---|")
    work = 0.0
    for phase, functions in PHASES.items():
        names = (functions,) if isinstance(functions, str) else functions
        seconds = sum(v[3] for k, v in stats.items() if k[2] in names)
        if phase in ("fine-tune", "validation"):
            work += seconds
        print(f"| {phase} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    print(f"| episode | {total:.2f} | 100% |")
    print(f"\noverhead (all but fine-tune and validation): {100 * (1 - work / total):.1f}%")


if __name__ == "__main__":
    main()
