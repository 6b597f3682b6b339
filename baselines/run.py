"""``prune-env baseline NAME`` and ``prune-env episode``: the baselines as methods of the run
pipeline (`prune_env.runs.pipeline`), so their runs end exactly as the agents' do: the same
final stage, report.json, exports and TensorBoard tags.

Each baseline makes its choices in `prepare` (before the run directory exists, so an
unreachable target leaves nothing behind), runs one deterministic episode in `search`, and
reports what only it has in ``details``.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym

from baselines.alf import ALFConfig, ALFPolicy, ALFTrainer, blocks, code_filters, wrap
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
from prune_env.envs.records import Report
from prune_env.envs.uniform import uniform_ratio_for
from prune_env.runs.finalize import Candidate, candidate_from, policy_episode
from prune_env.runs.pipeline import Method, RunContext, SearchResult, run
from prune_env.runs.tensorboard import candidate_log

if TYPE_CHECKING:
    from baselines.gating.env import GateEnv
    from prune_env.envs.prune import PruneEnv


def run_baseline(args: argparse.Namespace) -> tuple[Report, Path]:
    """Run baseline ``args.name``; returns (final report, run directory)."""
    methods: dict[str, type[OneEpisode]] = {
        "swd": SWD, "layerprune": LayerPrune, "alf": ALF, "gating": Gating}
    return run(args, methods.get(args.name, Uniform)(args, args.name))


def run_episode(args: argparse.Namespace) -> tuple[Report, Path]:
    """``prune-env episode``: one episode of a simple policy at a fixed ratio (no final
    fine-tuning, no exports)."""
    return run(args, Uniform(args, args.policy))


class OneEpisode(Method):
    """A baseline: one deterministic episode of its policy, reset with its options."""

    def __init__(self, args: argparse.Namespace, name: str):
        self.args, self.name = args, name
        self.policy: Any = None
        self.options: dict[str, Any] | None = None
        self.source = name

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        candidate = policy_episode(env, self.policy, self.args.seed, self.source,
                                   options=self.options)
        run.logger.episode(candidate_log(cast("PruneEnv", env.unwrapped), candidate, 0,
                                         self.args.finetune))
        return SearchResult([candidate], 1, details=self.details(env))

    def details(self, env: gym.Env) -> dict[str, Any]:
        """What only this method reports (read after its episode)."""
        return {}


class Uniform(OneEpisode):
    """keep-all, random and l1: the same kept fraction in every group (``--ratio``, or
    'auto': the largest uniform ratio whose looked-up cost meets the target)."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped, args = cast("PruneEnv", env.unwrapped), self.args
        if self.name == "keep-all":
            self.ratio = 1.0
        elif args.ratio == "auto":
            self.ratio = uniform_ratio_for(unwrapped, args.target)
        else:
            self.ratio = float(args.ratio)
        self.policy = make_policy(self.name, unwrapped.max_filters, ratio=self.ratio,
                                  finetune=args.finetune, seed=args.seed)
        self.source = f"{self.name} policy, ratio {self.ratio:.2f}"
        return {"ratio": self.ratio}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"ratio": self.ratio}


class SWD(OneEpisode):
    """SWD (`baselines.swd`): the penalised warm-up at reset, then its mask as the policy."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped = cast("PruneEnv", env.unwrapped)
        self.config = SWDConfig(steps=self.args.swd_steps)
        self.penalty = SWDPenalty(unwrapped, self.config)
        self.policy = SWDPolicy(unwrapped.max_filters, finetune=self.args.finetune)
        self.options = {"warmup": (self.config.steps, self.penalty)}
        self.source = f"swd, {self.config.steps} penalised steps"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"swd": asdict(self.config), "swd_dropped_filter_norm": self.penalty.history}


class LayerPrune(OneEpisode):
    """LayerPrune (`baselines.layerprune`): block importance, blocks removed to the target."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped, args = cast("PruneEnv", env.unwrapped), self.args
        self.importance = block_importance(unwrapped, args.criterion, args.criterion_batches,
                                           seed=args.seed)
        self.removed = blocks_to_remove(unwrapped, self.importance)
        leaders = removable_blocks(unwrapped)
        self.policy = LayerPrunePolicy(
            unwrapped.max_filters, [g.leader for g in unwrapped.base_groups],
            [leaders[b] for b in self.removed], finetune=args.finetune)
        self.source = f"layerprune ({args.criterion}), removed {', '.join(self.removed)}"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"criterion": self.args.criterion, "block_importance": self.importance,
                "removed_blocks": self.removed}


class ALF(OneEpisode):
    """ALF (`baselines.alf`): autoencoder blocks trained with the task at reset, deployed as
    code + 1x1 expansion convs; the episode drops the code filters ALF masked."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped = cast("PruneEnv", env.unwrapped)
        self.config = ALFConfig(steps=self.args.alf_steps)
        self.trainer = ALFTrainer(unwrapped, self.config)
        # an unreachable target is an error here, before any run directory exists
        wrapped = wrap(copy.deepcopy(unwrapped.base_model))
        self.trainer.set_masks(wrapped, blocks(wrapped))
        self.policy = ALFPolicy(unwrapped, finetune=self.args.finetune)
        self.options = {"wrap": wrap, "warmup": (self.config.steps, self.trainer),
                        "deploy": self.policy.deploy}
        self.source = f"alf, {self.config.steps} steps"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        # how many code filters each layer kept, read from the episode's network
        model = cast("PruneEnv", env.unwrapped).episode_state.model
        return {"alf": asdict(self.config), "alf_training": self.trainer.history,
                "alf_code_filters": code_filters(model)}


class Gating(OneEpisode):
    """Dynamic gating (`baselines.gating`) at one budget r for every gate, through the
    gating environment: backbone and predictors trained together at r for
    ``--gating-steps`` at reset (FTWT's training), then the episode at r; its own final stage
    (a dynamic network has no static export)."""

    env_id = "prune_env/Gate-v0"

    def __init__(self, args: argparse.Namespace, name: str):
        super().__init__(args, name)
        self.env_kwargs = {"predictor_steps": args.predictor_steps}

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        args = self.args
        self.budget = (budget_for(env.unwrapped, args.target) if args.budget == "auto"
                       else float(args.budget))
        self.policy = FixedBudget(self.budget, args.finetune)
        self.options = {"warmup": (args.gating_steps, self.budget)}
        self.source = (f"gating, budget r = {self.budget:.3f} at every gate, "
                       f"{args.gating_steps} joint steps")
        return {"budget": self.budget}

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        unwrapped = cast("GateEnv", env.unwrapped)
        obs, _ = env.reset(seed=self.args.seed, options=self.options)
        done, reward, info = False, 0.0, dict[str, Any]()
        while not done:
            action, _ = self.policy.predict(obs)
            obs, r, done, _, info = env.step(action)
            reward += float(r)
        run.logger.episode(gate_log(unwrapped, reward, info, self.args.finetune))
        return SearchResult([candidate_from(env, self.source, reward)], 1,
                            details={"budget": self.budget})

    def finalize(self, env: gym.Env, candidate: Candidate, run_dir: Path, *, steps: int,
                 seed: int, formats: tuple[str, ...]) -> Report:
        return finalize_gating(env, candidate, run_dir, steps=steps, seed=seed)
