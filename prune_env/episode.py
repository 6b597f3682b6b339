"""One pruning episode with a simple policy, as the ``prune-env episode`` command runs it,
and the environment options every command builds from its arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import prune_env  # noqa: F401  (registers the environment)
from baselines.simple import make_policy
from prune_env.data import load_data
from prune_env.pretrain import PretrainConfig
from prune_env.rundir import new_run_dir


def env_options(args: argparse.Namespace, data) -> dict[str, Any]:
    """The environment's arguments from the command line (shared by train and baseline)."""
    return {"model": args.model, "dataset": args.dataset, "data": data, "cost": args.cost,
            "target": args.target, "reward": args.reward, "allowed_drop": args.allowed_drop,
            "max_finetune_steps": args.max_finetune_steps, "val_samples": args.val_samples,
            # fixed here, so that worker processes (which train on fewer threads) predict
            # latency from the same table entries as the main process
            "device": args.device, "threads": args.threads or torch.get_num_threads(),
            "checkpoint": args.checkpoint,
            "seed": args.seed, "latency_table": args.latency_table,
            "pretrain": PretrainConfig(args.epochs, args.batch_size, args.lr, args.seed)}


def run_episode(args: argparse.Namespace) -> tuple[dict, Path]:
    """Run one episode of ``args.policy``; returns (report, run directory)."""
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download,
                     seed=args.seed, synthetic_size=args.synthetic_size,
                     image_size=args.image_size)
    env = gym.make("prune_env/Prune-v0", **env_options(args, data))
    # created only once the environment stands, so a bad option leaves no empty run behind
    run_dir = new_run_dir(args.runs_dir, args.model, args.dataset, args.policy, args.seed)
    (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
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
        for key in ("accuracy", "cost_ratio", "latency_ms", "finetune_seconds"):
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
