"""``prune-env baseline NAME``: a baseline through the same environment and final stage as
the agents (same report.json, exports and TensorBoard layout as ``prune-env train``)."""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
from torch.utils.tensorboard import SummaryWriter

import prune_env  # noqa: F401  (registers the environment)
from baselines.alf import (
    ALFConfig,
    ALFPolicy,
    ALFTrainer,
    blocks,
    code_filters,
    wrap,
)
from baselines.gating.policy import FixedBudget, budget_for
from baselines.gating.report import finalize_gating, gate_log
from baselines.layerprune import (
    LayerPrunePolicy,
    block_importance,
    blocks_to_remove,
    removable_blocks,
)
from baselines.simple import make_policy
from baselines.swd import SWDConfig, SWDPenalty, SWDPolicy
from prune_env.data.datasets import load_data
from prune_env.envs.uniform import uniform_ratio_for
from prune_env.runs.export import FORMATS
from prune_env.runs.finalize import finalize, policy_episode
from prune_env.runs.options import env_options
from prune_env.runs.rundir import run_directory
from prune_env.runs.tensorboard import EpisodeLogger, candidate_log


def run_baseline(args: argparse.Namespace) -> tuple[dict, Path]:
    """Run baseline ``args.name``; returns (final report, run directory)."""
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download,
                     seed=args.seed, synthetic_size=args.synthetic_size,
                     image_size=args.image_size)
    start = time.perf_counter()
    if args.name == "gating":
        return run_gating(args, data, start)
    env = gym.make("prune_env/Prune-v0", final_report=False, **env_options(args, data))
    if args.name == "swd":
        return run_swd(args, env, start)
    if args.name == "layerprune":
        return run_layerprune(args, env, start)
    if args.name == "alf":
        return run_alf(args, env, start)
    if args.name == "keep-all":
        ratio = 1.0
    elif args.ratio == "auto":
        ratio = uniform_ratio_for(env.unwrapped, args.target)
    else:
        ratio = float(args.ratio)
    policy = make_policy(args.name, env.unwrapped.max_filters, ratio=ratio,
                         finetune=args.finetune, seed=args.seed)
    return run_policy(args, env, policy, start, f"{args.name} policy, ratio {ratio:.2f}",
                      extra={"ratio": ratio})


def run_swd(args: argparse.Namespace, env: gym.Env, start: float) -> tuple[dict, Path]:
    """SWD (`baselines.swd`): the penalised warm-up at reset, then its mask as the policy."""
    config = SWDConfig(steps=args.swd_steps)
    penalty = SWDPenalty(env.unwrapped, config)
    policy = SWDPolicy(env.unwrapped.max_filters, finetune=args.finetune)
    # the penalty's record is filled during the episode: the report reads it afterwards
    extra = {"swd": asdict(config), "swd_dropped_filter_norm": penalty.history}
    return run_policy(args, env, policy, start, f"swd, {config.steps} penalised steps",
                      options={"warmup": (config.steps, penalty)}, extra=extra)


def run_layerprune(args: argparse.Namespace, env: gym.Env, start: float) -> tuple[dict, Path]:
    """LayerPrune (`baselines.layerprune`): block importance, blocks removed to the target."""
    unwrapped = env.unwrapped
    importance = block_importance(unwrapped, args.criterion, args.criterion_batches,
                                  seed=args.seed)
    removed = blocks_to_remove(unwrapped, importance)
    leaders = removable_blocks(unwrapped)
    policy = LayerPrunePolicy(unwrapped.max_filters, [g.leader for g in unwrapped.base_groups],
                              [leaders[b] for b in removed], finetune=args.finetune)
    return run_policy(args, env, policy, start,
                      f"layerprune ({args.criterion}), removed {', '.join(removed)}",
                      extra={"criterion": args.criterion, "block_importance": importance,
                             "removed_blocks": removed})


def run_alf(args: argparse.Namespace, env: gym.Env, start: float) -> tuple[dict, Path]:
    """ALF (`baselines.alf`): autoencoder blocks trained with the task at reset, deployed as
    code + 1x1 expansion convs; the episode drops the code filters ALF masked."""
    config = ALFConfig(steps=args.alf_steps)
    trainer = ALFTrainer(env.unwrapped, config)
    # an unreachable target is an error before any run directory exists
    trainer.set_masks(wrapped := wrap(copy.deepcopy(env.unwrapped.base_model)), blocks(wrapped))
    policy = ALFPolicy(env.unwrapped, finetune=args.finetune)
    options = {"wrap": wrap, "warmup": (config.steps, trainer), "deploy": policy.deploy}
    report, run_dir = run_policy(args, env, policy, start, f"alf, {config.steps} steps",
                                 options=options,
                                 extra={"alf": asdict(config), "alf_training": trainer.history})
    # the report says how many code filters each layer kept (and rewrites report.json)
    report["alf_code_filters"] = code_filters(env.unwrapped.state.model)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report, run_dir


def run_gating(args: argparse.Namespace, data, start: float) -> tuple[dict, Path]:
    """Dynamic gating (`baselines.gating.network`) at one budget r for every gate, through the
    gating environment: backbone and predictors trained together at r for
    ``--gating-steps`` at reset (FTWT's training), then the episode at r; its own final stage
    (a dynamic network has no static export)."""
    env = gym.make("prune_env/Gate-v0", final_report=False,
                   predictor_steps=args.predictor_steps, **env_options(args, data))
    unwrapped = env.unwrapped
    budget = (budget_for(unwrapped, args.target) if args.budget == "auto"
              else float(args.budget))
    logged = vars(args) | {"budget": budget}
    with run_directory(args.runs_dir, args.model, args.dataset, args.name, args.seed,
                       logged) as run_dir:
        logger = EpisodeLogger(SummaryWriter(str(run_dir)), unwrapped, 1)
        policy = FixedBudget(budget, args.finetune)
        obs, _ = env.reset(seed=args.seed, options={"warmup": (args.gating_steps, budget)})
        done, reward = False, 0.0
        while not done:
            action, _ = policy.predict(obs)
            obs, r, done, _, info = env.step(action)
            reward += r
        logger.episode(gate_log(unwrapped, reward, info, args.finetune))
        search = time.perf_counter() - start
        report = finalize_gating(env, run_dir, steps=args.final_steps, seed=args.seed)
        report.update({"method": args.name, "episodes": 1, "budget": budget,
                       "source": f"gating, budget r = {budget:.3f} at every gate, "
                                 f"{args.gating_steps} joint steps",
                       "search": {"seconds": search}, "exports": {}})
        (run_dir / "report.json").write_text(json.dumps(report, indent=2))
        logger.final(report, logged)
        return report, run_dir


def run_policy(args: argparse.Namespace, env: gym.Env, policy, start: float, source: str, *,
               options: dict | None = None, extra: dict | None = None) -> tuple[dict, Path]:
    """One episode of ``policy`` (reset with ``options``), then the final stage, into a new run
    directory; ``extra`` goes into args.json's record and the report. ``start``: when the
    method's search began (its seconds are reported)."""
    extra = extra or {}
    logged = vars(args) | {k: v for k, v in extra.items() if k == "ratio"}
    with run_directory(args.runs_dir, args.model, args.dataset, args.name, args.seed,
                       logged) as run_dir:
        logger = EpisodeLogger(SummaryWriter(str(run_dir)), env.unwrapped, 1)
        candidate = policy_episode(env, policy, args.seed, source, options=options)
        logger.episode(candidate_log(env.unwrapped, candidate, 0, args.finetune))
        report = finalize(env, candidate, run_dir, steps=args.final_steps, seed=args.seed,
                          formats=() if args.no_export else FORMATS,
                          extra={"method": args.name, "episodes": 1, **extra,
                                 "search": {"seconds": time.perf_counter() - start}})
        logger.final(report, logged)
        return report, run_dir
