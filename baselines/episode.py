"""One pruning episode with a simple policy, as the ``prune-env episode`` command runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import prune_env  # noqa: F401  (registers the environment)
from baselines.simple import make_policy
from prune_env.data.datasets import load_data
from prune_env.runs.options import env_options
from prune_env.runs.rundir import run_directory


def run_episode(args: argparse.Namespace) -> tuple[dict, Path]:
    """Run one episode of ``args.policy``; returns (report, run directory)."""
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download,
                     seed=args.seed, synthetic_size=args.synthetic_size,
                     image_size=args.image_size)
    env = gym.make("prune_env/Prune-v0", **env_options(args, data))
    # created only once the environment stands, so a bad option leaves no empty run behind
    with run_directory(args.runs_dir, args.model, args.dataset, args.policy, args.seed,
                       vars(args)) as run_dir:
        env.unwrapped.report_dir = run_dir
        policy = make_policy(args.policy, env.unwrapped.max_filters, ratio=args.ratio,
                             finetune=args.finetune, seed=args.seed)
        writer = SummaryWriter(str(run_dir))
        obs, _ = env.reset(seed=args.seed)
        bar = tqdm(total=len(env.unwrapped.base_groups), desc=f"episode {args.policy}",
                   unit="group")
        done, step, info = False, 0, {}
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, reward, done, _, info = env.step(action)
            for key in ("accuracy", "cost_ratio", "latency_ms", "finetune_steps"):
                writer.add_scalar(f"step/{key}", info[key], step)
            writer.add_scalar("step/reward", reward, step)
            step += 1
            bar.update(1)
            bar.set_postfix(acc=f"{info['accuracy']:.3f}", cost=f"{info['cost_ratio']:.2f}")
        bar.close()
        report = info["final"]
        writer.add_scalar("episode/reward", report["episode_reward"], 0)
        writer.add_scalar("episode/test_accuracy", report["pruned"]["test_accuracy"], 0)
        writer.add_scalar("episode/speedup", report["speedup"], 0)
        writer.close()
        return report, run_dir
