"""``prune-env train``: train an agent, watch it in TensorBoard, get the pruned network.

Reads top to bottom as a cleanrl script does: arguments (see `prune_env.cli.main`), set-up, the
training loop with logging and checkpoints, then the final network (`prune_env.runs.finalize`).

A run lives in ``runs/{model}-{dataset}__{agent}__{seed}__{timestamp}``: ``args.json``, the
TensorBoard events, ``checkpoint.pt`` (L2PF) or ``agent.zip`` (sb3) with ``progress.json``,
and at the end ``report.json``, ``compact.pt``, ``model.onnx``, ``model.ts``. A killed run
continues with ``prune-env train --resume RUN_DIR`` from its last checkpoint.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import prune_env  # noqa: F401  (registers the environment)
from agents import sb3
from agents.l2pf import L2PF, L2PFConfig
from prune_env.cli.main import reparse
from prune_env.data.datasets import load_data
from prune_env.envs.wrappers import FlatActionWrapper
from prune_env.runs.export import FORMATS
from prune_env.runs.finalize import Candidate, finalize, measured_ratio, policy_episode
from prune_env.runs.options import env_options
from prune_env.runs.rundir import run_directory
from prune_env.runs.tensorboard import EpisodeLogger
from prune_env.training.checkpoint import atomic_save, read_tensors


def load_args_for(args: argparse.Namespace) -> argparse.Namespace:
    """A resumed run's own arguments (its args.json, checked as the command line is); a
    fresh run's as given.

    Raises:
        FileNotFoundError, ValueError: the directory is not an unfinished `prune-env train`
            run, or its args.json holds what the command line would refuse.
    """
    if not args.resume:
        return args
    run_dir = Path(args.resume)
    path = run_dir / "args.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: --resume takes a run directory made by "
                                "`prune-env train`")
    if (run_dir / "report.json").exists():
        raise ValueError(f"{run_dir} has finished (it has report.json): nothing to resume; "
                         "start a new run instead")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(saved, dict) or "agent" not in saved or "episodes" not in saved:
        raise ValueError(f"{run_dir} was not made by `prune-env train` (its args.json has no "
                         "agent): only training runs resume")
    checked = reparse("train", {k: v for k, v in saved.items() if k != "resume"}, str(path))
    checked.resume = args.resume
    return checked


def check_sb3_keys(args: argparse.Namespace) -> None:
    """Unknown ``--sb3`` keys are an error before anything is built (sb3 would only fail
    after the environment was made)."""
    if args.agent == "l2pf":
        return
    known = set(inspect.signature(sb3.ALGORITHMS[args.agent]).parameters) - {"policy", "env"}
    unknown = set(sb3.parse_kwargs(args.sb3)) - known
    if unknown:
        raise ValueError(f"--sb3: {args.agent} has no option {', '.join(sorted(unknown))} "
                         f"(its options: {', '.join(sorted(known))})")


def train(args: argparse.Namespace) -> tuple[dict, Path]:
    """Train ``args.agent``; returns (final report, run directory)."""
    args = load_args_for(args)
    check_sb3_keys(args)
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download,
                     seed=args.seed, synthetic_size=args.synthetic_size,
                     image_size=args.image_size)
    options = env_options(args, data)
    env = gym.make("prune_env/Prune-v0", final_report=False, **options)
    if args.resume:
        run_dir = Path(args.resume)
        print(f"resuming {run_dir} at episode {read_progress(run_dir)['episodes']}", flush=True)
        return train_in(args, options, env, run_dir)
    # made only once the environment stands: a bad option leaves no empty run
    with run_directory(args.runs_dir, args.model, args.dataset, args.agent, args.seed,
                       vars(args)) as run_dir:
        return train_in(args, options, env, run_dir)


def train_in(args: argparse.Namespace, options: dict[str, Any], env: gym.Env,
             run_dir: Path) -> tuple[dict, Path]:
    """The training loop, logging, checkpoints and final stage of a run in ``run_dir``."""
    progress = read_progress(run_dir)
    logger = EpisodeLogger(SummaryWriter(str(run_dir), purge_step=progress["episodes"]),
                           env.unwrapped, args.checkpoint_every)
    bar = tqdm(total=args.episodes, initial=progress["episodes"], desc=f"train {args.agent}",
               unit="episode")
    started = time.perf_counter() - progress["seconds"]

    def on_episode(log: dict[str, Any], save) -> None:
        logger.episode(log)
        bar.update(1)
        bar.set_postfix(reward=f"{log['reward']:.2f}", acc=f"{log['accuracy']:.3f}",
                        cost=f"{log['cost_ratio']:.2f}")
        done = log["episode"] + 1
        if done % args.checkpoint_every == 0 or done == args.episodes:
            save()
            write_progress(run_dir, done, time.perf_counter() - started)

    if args.agent == "l2pf":
        candidates = train_l2pf(args, options, env, run_dir, on_episode)
    else:
        candidates = train_sb3(args, options, env, run_dir, progress, on_episode)
    bar.close()
    search_seconds = time.perf_counter() - started
    best = max(candidates, key=Candidate.key)
    report = finalize(env, best, run_dir, steps=args.final_steps, seed=args.seed,
                      formats=() if args.no_export else FORMATS, extra={
        "method": args.agent, "episodes": args.episodes,
        "search": {"seconds": search_seconds,
                   "candidates": [{"source": c.source, "val_accuracy_subset": c.accuracy,
                                   "cost_ratio": c.cost_ratio,
                                   "measured_cost_ratio": measured_ratio(env, c)}
                                  for c in candidates]}})
    logger.final(report, vars(args))
    return report, run_dir


# ------------------------------------------------------------------------- L2PF
def train_l2pf(args: argparse.Namespace, options: dict[str, Any], env: gym.Env, run_dir: Path,
               on_episode) -> list[Candidate]:
    """Train L2PF; the candidates are its deterministic policy and its best try."""
    config = L2PFConfig(tries=args.tries, lr=args.agent_lr, ent_coef=args.ent_coef,
                        pace_weight=args.pace_weight)
    agent = L2PF(env, config, seed=args.seed, n_envs=args.n_envs,
                 env_fn=lambda: gym.make("prune_env/Prune-v0", final_report=False, **options))
    path = run_dir / "checkpoint.pt"
    if path.exists():  # data and tensors only: a crafted checkpoint cannot run code
        agent.load_state_dict(read_tensors(path, "L2PF checkpoint"))

    def save():
        atomic_save(agent.state_dict(), path)

    try:
        for log in agent.learn(args.episodes):
            on_episode(log, save)
    finally:
        agent.close()
    policy = policy_episode(env, agent, args.seed + 10**6, "deterministic policy")
    return [policy] + ([agent.best] if agent.best else [])


# ------------------------------------------------------------------------- sb3
def train_sb3(args: argparse.Namespace, options: dict[str, Any], env: gym.Env, run_dir: Path,
              progress: dict[str, Any], on_episode) -> list[Candidate]:
    """Train a stable-baselines3 agent; the candidate is its deterministic policy."""
    from stable_baselines3.common.logger import configure

    steps = len(env.unwrapped.base_groups)
    vec = sb3.make_vec(lambda: gym.make("prune_env/Prune-v0", final_report=False, **options),
                       args.n_envs, args.seed)
    agent = sb3.make_agent(args.agent, vec, args.seed, sb3.parse_kwargs(args.sb3), steps)
    if (run_dir / "agent.zip").exists():
        agent = sb3.load_agent(args.agent, run_dir, agent)
    agent.set_logger(configure(str(run_dir), ["tensorboard"]))  # sb3's own train/ losses
    callback = sb3.EpisodeCallback(lambda log: on_episode(log, lambda: sb3.save_agent(
        agent, run_dir)), args.episodes, progress["episodes"])
    try:
        if progress["episodes"] < args.episodes:
            agent.learn(total_timesteps=10**9, callback=callback,
                        reset_num_timesteps=not progress["episodes"])
    finally:
        vec.close()
    return [policy_episode(FlatActionWrapper(env), agent, args.seed + 10**6,
                           "deterministic policy")]


# ------------------------------------------------------------------------- progress
def read_progress(run_dir: Path) -> dict[str, Any]:
    """Episodes done and search seconds at the last checkpoint (zero for a new run)."""
    path = run_dir / "progress.json"
    if not path.exists():
        return {"episodes": 0, "seconds": 0.0}
    return json.loads(path.read_text())


def write_progress(run_dir: Path, episodes: int, seconds: float) -> None:
    tmp = run_dir / f"progress.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"episodes": episodes, "seconds": seconds}))
    tmp.replace(run_dir / "progress.json")
