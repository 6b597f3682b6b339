"""``prune-env baseline NAME`` and ``prune-env episode``: the baselines as methods of the run
pipeline (`prune_env.runs.pipeline`), so their runs end exactly as the agents' do: the same
final stage, report.json, exports and TensorBoard tags.

Each baseline makes its choices in `prepare` (before the run directory exists, so an
unreachable target leaves nothing behind), runs one deterministic episode in `search`, and
reports what only it has in ``details``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym

from baselines.alf import ALFConfig, ALFPolicy, ALFTrainer, blocks, code_filters, wrap
from baselines.gating.policy import FixedBudget, budget_for
from baselines.gating.report import finalize_gating, gate_log
from baselines.joint import JointConfig, JointMaskPolicy, JointMasks
from baselines.layerprune import (
    LayerPrunePolicy,
    block_importance,
    blocks_to_remove,
    removable_blocks,
)
from baselines.simple import make_policy
from baselines.swd import SWDConfig, SWDPenalty, SWDPolicy
from prune_env.config import BaselineConfig, EpisodeConfig, RunConfig
from prune_env.envs.records import Report
from prune_env.envs.uniform import uniform_ratio_for
from prune_env.runs.finalize import Candidate, candidate_from, policy_episode
from prune_env.runs.pipeline import Method, RunContext, SearchResult, run
from prune_env.runs.tensorboard import candidate_log

if TYPE_CHECKING:
    from baselines.gating.env import GateEnv
    from prune_env.envs.prune import PruneEnv


def run_baseline(name: str, run_config: RunConfig, config: BaselineConfig
                 ) -> tuple[Report, Path]:
    """Run baseline ``name``; returns (final report, run directory)."""
    methods: dict[str, type[OneEpisode]] = {
        "swd": SWD, "layerprune": LayerPrune, "alf": ALF, "gating": Gating, "joint": Joint}
    method = methods.get(name, Uniform)(config, name, run_config)
    return run(run_config, method, recorded={"command": "baseline", "name": name,
                                             "baseline": config.to_dict()})


def run_episode(run_config: RunConfig, config: EpisodeConfig) -> tuple[Report, Path]:
    """``prune-env episode``: one episode of a simple policy at a fixed ratio (the run's
    final fine-tuning and exports as ``run_config`` says; the command sets none)."""
    baseline = BaselineConfig(ratio=config.ratio, finetune=config.finetune)
    return run(run_config, Uniform(baseline, config.policy, run_config),
               recorded={"command": "episode", "episode": config.to_dict()})


class OneEpisode(Method):
    """A baseline: one deterministic episode of its policy, reset with its options."""

    def __init__(self, config: BaselineConfig, name: str, run_config: RunConfig):
        self.config, self.name = config, name
        self.seed, self.target = run_config.data.seed, run_config.env.target
        self.policy: Any = None
        self.options: dict[str, Any] | None = None
        self.source = name

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        candidate = policy_episode(env, self.policy, self.seed, self.source,
                                   options=self.options)
        run.logger.episode(candidate_log(cast("PruneEnv", env.unwrapped), candidate, 0,
                                         self.config.finetune))
        return SearchResult([candidate], 1, details=self.details(env))

    def details(self, env: gym.Env) -> dict[str, Any]:
        """What only this method reports (read after its episode)."""
        return {}


class Uniform(OneEpisode):
    """keep-all, random and l1: the same kept fraction in every group (``--ratio``, or
    'auto': the largest uniform ratio whose looked-up cost meets the target)."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped, config = cast("PruneEnv", env.unwrapped), self.config
        if self.name == "keep-all":
            self.ratio = 1.0
        elif config.ratio == "auto":
            self.ratio = uniform_ratio_for(unwrapped.bench, self.target)
        else:
            self.ratio = float(config.ratio)
        self.policy = make_policy(self.name, unwrapped.bench.max_filters, ratio=self.ratio,
                                  finetune=config.finetune, seed=self.seed)
        self.source = f"{self.name} policy, ratio {self.ratio:.2f}"
        return {"ratio": self.ratio}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"ratio": self.ratio}


class SWD(OneEpisode):
    """SWD (`baselines.swd`): the penalised warm-up at reset, then its mask as the policy."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped = cast("PruneEnv", env.unwrapped)
        self.swd = SWDConfig(steps=self.config.swd_steps)
        self.penalty = SWDPenalty(unwrapped, self.swd)
        self.policy = SWDPolicy(unwrapped.bench.max_filters, finetune=self.config.finetune)
        self.options = {"warmup": (self.swd.steps, self.penalty)}
        self.source = f"swd, {self.swd.steps} penalised steps"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"swd": asdict(self.swd), "swd_dropped_filter_norm": self.penalty.history}


class Joint(OneEpisode):
    """Joint filter masks (`baselines.joint`): masks and network trained together at reset,
    then the masks as the policy."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped = cast("PruneEnv", env.unwrapped)
        self.joint_config = JointConfig(steps=self.config.joint_steps,
                                        weight=self.config.joint_weight)
        self.joint = JointMasks(unwrapped, self.joint_config)
        self.joint.check_reachable(unwrapped.bench.base_model)
        self.policy = JointMaskPolicy(
            unwrapped.bench.max_filters, [g.leader for g in unwrapped.bench.base_groups],
            self.joint, finetune=self.config.finetune)
        self.options = {"wrap": self.joint.attach,
                        "warmup": (self.joint_config.steps, self.joint),
                        "deploy": self.policy.deploy}
        self.source = f"joint masks, {self.joint_config.steps} steps"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"joint": asdict(self.joint_config), "joint_training": asdict(self.joint.history),
                "joint_masked": {leader: int((mask == 0).sum())
                                 for leader, mask in self.policy.masks.items()}}


class LayerPrune(OneEpisode):
    """LayerPrune (`baselines.layerprune`): block importance, blocks removed to the target."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped, config = cast("PruneEnv", env.unwrapped), self.config
        self.importance = block_importance(unwrapped, config.criterion,
                                           config.criterion_batches, seed=self.seed)
        self.removed = blocks_to_remove(unwrapped, self.importance)
        leaders = removable_blocks(unwrapped)
        self.policy = LayerPrunePolicy(
            unwrapped.bench.max_filters, [g.leader for g in unwrapped.bench.base_groups],
            [leaders[b] for b in self.removed], finetune=config.finetune)
        self.source = f"layerprune ({config.criterion}), removed {', '.join(self.removed)}"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        return {"criterion": self.config.criterion, "block_importance": self.importance,
                "removed_blocks": self.removed}


class ALF(OneEpisode):
    """ALF (`baselines.alf`): autoencoder blocks trained with the task at reset, deployed as
    code + 1x1 expansion convs; the episode drops the code filters ALF masked."""

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        unwrapped = cast("PruneEnv", env.unwrapped)
        self.alf = ALFConfig(steps=self.config.alf_steps)
        self.trainer = ALFTrainer(unwrapped, self.alf)
        # an unreachable target is an error here, before any run directory exists
        wrapped = wrap(copy.deepcopy(unwrapped.bench.base_model))
        self.trainer.set_masks(wrapped, blocks(wrapped))
        self.policy = ALFPolicy(unwrapped, finetune=self.config.finetune)
        self.options = {"wrap": wrap, "warmup": (self.alf.steps, self.trainer),
                        "deploy": self.policy.deploy}
        self.source = f"alf, {self.alf.steps} steps"
        return {}

    def details(self, env: gym.Env) -> dict[str, Any]:
        # how many code filters each layer kept, read from the episode's network
        model = cast("PruneEnv", env.unwrapped).episode_state.model
        return {"alf": asdict(self.alf), "alf_training": self.trainer.history,
                "alf_code_filters": code_filters(model)}


class Gating(OneEpisode):
    """Dynamic gating (`baselines.gating`) at one budget r for every gate, through the
    gating environment: backbone and predictors trained together at r for
    ``--gating-steps`` at reset (FTWT's training), then the episode at r; its own final stage
    (a dynamic network has no static export)."""

    env_id = "prune_env/Gate-v0"

    def __init__(self, config: BaselineConfig, name: str, run_config: RunConfig):
        super().__init__(config, name, run_config)
        self.env_kwargs = {"predictor_steps": config.predictor_steps,
                           "report_images": config.gating_images}

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        config = self.config
        self.budget = (budget_for(env.unwrapped, self.target) if config.budget == "auto"
                       else float(config.budget))
        self.policy = FixedBudget(self.budget, config.finetune)
        self.options = {"warmup": (config.gating_steps, self.budget)}
        self.source = (f"gating, budget r = {self.budget:.3f} at every gate, "
                       f"{config.gating_steps} joint steps")
        return {"budget": self.budget}

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        unwrapped = cast("GateEnv", env.unwrapped)
        obs, _ = env.reset(seed=self.seed, options=self.options)
        done, reward, info = False, 0.0, dict[str, Any]()
        while not done:
            action, _ = self.policy.predict(obs)
            obs, r, done, _, info = env.step(action)
            reward += float(r)
        run.logger.episode(gate_log(unwrapped, reward, info, self.config.finetune))
        return SearchResult([candidate_from(env, self.source, reward)], 1,
                            details={"budget": self.budget})

    def finalize(self, env: gym.Env, candidate: Candidate, run_dir: Path, *, steps: int,
                 seed: int, formats: tuple[str, ...]) -> Report:
        return finalize_gating(env, candidate, run_dir, steps=steps, seed=seed)
