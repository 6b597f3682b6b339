"""``prune-env train``: train an agent, watch it in TensorBoard, get the pruned network.

Reads top to bottom as a cleanrl script does: arguments (see `prune_env.cli.main`), set-up, the
training loop with logging and checkpoints, then the final network (`prune_env.runs.finalize`).

A run lives in ``runs/{model}-{dataset}__{agent}__{seed}__{timestamp}``: ``args.json``, the
TensorBoard events, ``checkpoint.pt`` (L2PF) or ``agent.zip`` (sb3) with ``progress.json``,
and at the end ``report.json``, ``compact.pt``, ``model.onnx``, ``model.ts``. A killed run
continues with ``prune-env train --resume RUN_DIR`` from its last checkpoint.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
from tqdm.auto import tqdm

from agents import sb3
from agents.l2pf import L2PF, L2PFConfig
from prune_env.checks import read_json
from prune_env.config import L2PF_OPTIONS, SB3_OPTIONS, AgentConfig, RayConfig, RunConfig
from prune_env.envs.records import EpisodeLog, Report
from prune_env.envs.wrappers import SB3_ACTIONS
from prune_env.runs.finalize import policy_episode
from prune_env.runs.pipeline import Method, RunContext, SearchResult, run
from prune_env.sweep.plan import entry_of
from prune_env.training.checkpoint import atomic_save, read_tensors

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv


def resumed(resume: str) -> tuple[RunConfig, AgentConfig]:
    """A stopped run's own configs, read from its args.json and checked as the command line
    checks them.

    Raises:
        FileNotFoundError, ValueError: the directory is not an unfinished `prune-env train`
            run, or its args.json holds what the command line would refuse.
    """
    run_dir = Path(resume)
    path = run_dir / "args.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: --resume takes a run directory made by "
                                "`prune-env train`")
    if (run_dir / "report.json").exists():
        raise ValueError(f"{run_dir} has finished (it has report.json): nothing to resume; "
                         "start a new run instead")
    saved = read_json(path, "valid JSON")
    if not isinstance(saved, dict) or saved.get("command") != "train":
        raise ValueError(f"{run_dir} was not made by `prune-env train` (its args.json says "
                         "another command): only training runs resume")
    if not isinstance(saved.get("run"), dict) or not isinstance(saved.get("agent"), dict):
        raise ValueError(f"{path} is not this version's (no run and agent configs; older "
                         "runs recorded flat options): start a new run")
    # sb3 runs made before --sb3-action existed took the per-filter action: resume them with it
    was = "ratio" if saved["agent"].get("agent") == "l2pf" else "filters"
    agent = {"sb3_action": was} | saved["agent"]
    return (RunConfig.from_dict(saved["run"], f"{path} (run)"),
            AgentConfig.from_dict(agent, f"{path} (agent)"))


def check_sb3_keys(config: AgentConfig) -> None:
    """Unknown ``--sb3`` keys are an error before anything is built (sb3 would only fail
    after the environment was made); so is an L2PF option given to an sb3 agent, and a
    fine-tune budget beside a fixed duration, and an sb3 option given to L2PF."""
    if config.agent == "l2pf":
        if config.told(SB3_OPTIONS):
            raise ValueError("--sb3 and --sb3-action are the stable-baselines3 agents'; l2pf "
                             "takes its own action (a keep score per filter and a fine-tune "
                             "duration): leave them out")
        if config.finetune_budget is not None and config.fixed_finetune != "learned":
            raise ValueError("--finetune-budget prices the learned durations; with "
                             "--fixed-finetune there is nothing to price: give one or the other")
        return
    if config.told(L2PF_OPTIONS):
        raise ValueError(f"--init-policy, --fixed-finetune, --finetune-budget and --pace-adapt "
                         f"are L2PF's; {config.agent} takes none of them (leave them out)")
    if config.agent == "amc" and config.sb3_action != "amc":
        raise ValueError("--agent amc acts on AMC's bounded keep ratio: add --sb3-action amc")
    known = set(inspect.signature(sb3.ALGORITHMS[config.agent]).parameters) - {"policy", "env"}
    unknown = set(sb3.parse_kwargs(config.sb3)) - known
    if unknown:
        raise ValueError(f"--sb3: {config.agent} has no option {', '.join(sorted(unknown))} "
                         f"(its options: {', '.join(sorted(known))})")


def policy_source(given: str, seed: int, target: float) -> Path:
    """The checkpoint ``--init-policy`` names: a training run's ``checkpoint.pt``, or in a
    sweep directory that of its one finished L2PF run with ``seed`` and ``target`` (of any
    network: a policy moves to another one).

    Raises:
        FileNotFoundError, ValueError: no such run, or not an L2PF one.
    """
    root = Path(given)
    if (root / "plan.json").exists():
        runs = [d for d in sorted(root.iterdir()) if (d / "checkpoint.pt").exists()
                and (d / "report.json").exists() and entry_of(d) is not None]
        matching = [d for d in runs if (e := entry_of(d)) and e.method == "l2pf"
                    and e.seed == seed and e.target == target]
        if not matching:
            raise FileNotFoundError(f"--init-policy {given}: the sweep has no finished L2PF run "
                                    f"of seed {seed} at target {target} (run it first)")
        if len(matching) > 1:  # several networks: say which run, not pick one
            raise ValueError(f"--init-policy {given}: several L2PF runs of seed {seed} at "
                             f"target {target} ({', '.join(d.name for d in matching)}): give "
                             "one run directory")
        root = matching[0]
    path = root / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"--init-policy {given}: no {path}; give an L2PF training run "
                                "directory or a sweep directory holding one")
    args = json.loads((root / "args.json").read_text()) if (root / "args.json").exists() else {}
    if args.get("agent", {}).get("agent") != "l2pf":
        raise ValueError(f"--init-policy {given}: {root} is not an L2PF training run")
    return path


def train(run_config: RunConfig, config: AgentConfig, *, resume: str | None = None,
          ray_config: RayConfig | None = None) -> tuple[Report, Path]:
    """Train the agent of ``config`` through the run pipeline, or continue the stopped run
    ``resume`` with its own configs; returns (final report, run directory). ``ray_config``:
    the cluster of the tries with ``--tries-on ray`` (default: a local instance)."""
    if resume:
        run_config, config = resumed(resume)
    check_sb3_keys(config)
    if config.agent != "l2pf" and run_config.env.correct_episodes:
        raise ValueError("--correct-episodes: an sb3 agent's episodes run in its vectorised "
                         "environments, whose corrections never reach the run's own; use it "
                         "with L2PF")
    if config.init_policy and not resume:  # a bad one is said before a run directory exists
        policy_source(config.init_policy, run_config.data.seed, run_config.env.target)
    method: Method = (L2PFMethod(config, run_config.data.seed, ray_config)
                      if config.agent == "l2pf" else SB3Method(config, run_config.data.seed))
    return run(run_config, method, recorded={"command": "train", "agent": config.to_dict()},
               resume=Path(resume) if resume else None, image_every=config.checkpoint_every)


class Training(Method):
    """What both kinds of agent share: the progress bar, and checkpoints every N episodes."""

    def __init__(self, config: AgentConfig, seed: int, ray_config: RayConfig | None = None):
        self.config, self.seed, self.name = config, seed, config.agent
        self.ray_config = ray_config
        self.bar: tqdm | None = None

    def open_bar(self, run: RunContext) -> None:
        """The training's progress bar, from the episodes already done."""
        self.bar = tqdm(total=self.config.episodes, initial=run.progress.episodes,
                        desc=f"train {self.config.agent}", unit="episode")

    def on_episode(self, run: RunContext, log: EpisodeLog, save: Callable[[], None]) -> None:
        """Log an episode; checkpoint every ``--checkpoint-every`` episodes and at the end."""
        config = self.config
        assert self.bar is not None  # opened when the search starts
        run.logger.episode(log)
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{log.reward:.2f}", acc=f"{log.accuracy:.3f}",
                             cost=f"{log.cost_ratio:.2f}")
        done = log.episode + 1
        if done % config.checkpoint_every == 0 or done == config.episodes:
            save()
            run.checkpointed(done)
        if done == config.episodes:
            self.bar.close()


class L2PFMethod(Training):
    """L2PF; the candidates are its deterministic policy and its best try."""

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        config = self.config
        l2pf = L2PFConfig(tries=config.tries, lr=config.agent_lr, ent_coef=config.ent_coef,
                          pace_weight=config.pace_weight, pace_adapt=config.pace_adapt,
                          fixed_finetune=None if config.fixed_finetune == "learned"
                          else float(config.fixed_finetune),
                          finetune_budget=config.finetune_budget,
                          budget_adapt=config.budget_adapt)
        self.open_bar(run)
        agent = L2PF(env, l2pf, seed=self.seed, n_envs=config.n_envs, env_fn=run.make_env,
                     tries_on=config.tries_on, ray_config=self.ray_config)
        path = run.run_dir / "checkpoint.pt"
        details: dict[str, Any] = {}
        if path.exists():  # data and tensors only: a crafted checkpoint cannot run code
            agent.load_state_dict(read_tensors(path, "L2PF checkpoint"))
        elif config.init_policy:  # the policy's weights do not depend on the network
            source = policy_source(config.init_policy, self.seed,
                                   cast("PruneEnv", env.unwrapped).bench.reward_cfg.target)
            agent.policy.load_state_dict(read_tensors(source, "L2PF checkpoint")["policy"])
            details["init_policy_checkpoint"] = str(source)
        if config.init_policy:
            details["init_policy"] = config.init_policy
        try:
            for log in agent.learn(config.episodes):
                self.on_episode(run, log, lambda: atomic_save(agent.state_dict(), path))
        finally:
            agent.close()
        policy = policy_episode(env, agent, self.seed + 10**6, "deterministic policy")
        return SearchResult([policy] + ([agent.best] if agent.best else []), config.episodes,
                            details, list_candidates=True)


class SB3Method(Training):
    """A stable-baselines3 agent through a flat action (``--sb3-action``); the candidate is its
    deterministic policy."""

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        from stable_baselines3.common.logger import configure

        config, done_before = self.config, run.progress.episodes
        self.open_bar(run)
        steps = len(cast("PruneEnv", env.unwrapped).bench.base_groups)
        vec = sb3.make_vec(run.make_env, config.n_envs, self.seed, config.sb3_action,
                           config.agent)
        agent = sb3.make_agent(config.agent, vec, self.seed, sb3.parse_kwargs(config.sb3), steps,
                               done_before, config.episodes)
        if (run.run_dir / "agent.zip").exists():
            agent = sb3.load_agent(config.agent, run.run_dir, agent)
        agent.set_logger(configure(str(run.run_dir), ["tensorboard"]))  # sb3's train/ losses
        save = functools.partial(sb3.save_agent, agent, run.run_dir)
        callback = sb3.EpisodeCallback(lambda log: self.on_episode(run, log, save),
                                       config.episodes, done_before,
                                       SB3_ACTIONS[config.sb3_action].finetune_of)
        try:
            if done_before < config.episodes:
                agent.learn(total_timesteps=10**9, callback=callback,
                            reset_num_timesteps=not done_before)
        finally:
            vec.close()
        policy = policy_episode(sb3.flat(env, config.sb3_action, config.agent), agent,
                                self.seed + 10**6, "deterministic policy")
        return SearchResult([policy], config.episodes, list_candidates=True)
