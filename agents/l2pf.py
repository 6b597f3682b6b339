"""The L2PF agent: multi-task try-and-learn with a hybrid keep / fine-tune action.

"Learning to Prune Faster" (Vemparala, Fasfous, Frickenstein et al.) extends try-and-learn
(Huang et al., WACV 2018) to one agent for all layers whose action is the filters to keep AND
how long to fine-tune. This implementation, on `prune_env.envs.prune.PruneEnv`'s hybrid action:

- One policy for every group (`agents.l2pf_policy.L2PFPolicy`), conditioned on the group's
  descriptor and its filters' features.
- Try-and-learn's tries: at each group the agent samples ``tries`` actions from the same
  state (`PruneEnv.snapshot` / `restore`), each is pruned, fine-tuned on the same batches and
  scored; REINFORCE updates the policy with the tries' mean score as the baseline; the best
  try is kept and the episode moves on (try-and-learn's layer-by-layer training, with one
  shared agent instead of one agent per layer).
- Score of a try: the environment's reward (psi * phi minus the fine-tune price, see
  `prune_env.envs.reward`) plus a pacing term. Departure: L2PF's reward is not public and psi * phi
  alone ignores the cost target until the episode's last step, so a layer-by-layer search
  would never aim at it. The pace line goes from 1 to the target as the episode covers the
  network's cost: after a group, ``line = 1 - (1 - target) * covered``, with ``covered`` the
  summed cost shares (observation entries 7-8) of the groups visited so far. A try above the
  line is charged ``pace_weight * (ratio - line) / target``, and the kept try is the best
  scoring one: a try a little behind the line can still win over one that met it by
  removing a block and half the accuracy, and the groups after it then make up the
  difference. At the last group a try that meets the target comes first (AMC's rule that
  the budget is met, applied to tries rather than by clamping one action).
- The best network over all episodes (target met first, then validation accuracy) is kept.
- A fine-tune budget (``finetune_budget``): departure. L2PF prices fine-tuning with a fixed
  weight, and at the environment's 0.05 the duration head learned to spend ~3/4 of the full
  budget, while a price of 1 made it spend nothing and blinded the search (README, "The
  fine-tune ablation at 0.7"): no fixed price asks for a given compute. With a budget, the
  price is the dual variable of "mean fine-tune fraction <= budget": a try is charged
  ``price * fraction`` on top of its reward, and after each group the price moves by
  ``budget_adapt * (fraction spent - budget) / budget`` (the mean fraction of the group's
  tries), never below 0. The agent then decides WHERE a given compute goes, which is what
  the fixed durations (`fixed_finetune`, the same compute at every group) are compared with.
  At a tight budget (0.3) the default step overshoots (2.5 within three episodes): the head
  learns to spend ~0.1 and does not come back once the price is 0 again; a tenth of the
  step (``budget_adapt=0.02``) held 0.28-0.34 of the budget over 10 episodes (README, "The
  fine-tune ablation at 0.7 with the table corrected by measurement").

Example:
    >>> agent = L2PF(gymnasium.make("prune_env/Prune-v0", final_report=False))  # doctest: +SKIP
    >>> for log in agent.learn(episodes=10): print(log["reward"])              # doctest: +SKIP
    >>> action, _ = agent.predict(obs, deterministic=True)                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.l2pf_policy import L2PFPolicy, to_env_action
from agents.tries import make_pool, run_try
from prune_env.envs.observation import ObservationLayout
from prune_env.envs.prune import EpisodeState, PruneEnv
from prune_env.envs.records import EpisodeLog
from prune_env.envs.uniform import uniform_ratio_for
from prune_env.measure.correction import TableCorrection
from prune_env.nn.record import from_record, to_record
from prune_env.runs.finalize import Candidate


@dataclass(frozen=True)
class L2PFConfig:
    """Hyper-parameters of the L2PF agent (each logged with the run).

    Attributes:
        tries: actions tried on each group per update (try-and-learn's tries).
        lr: Adam learning rate of the policy.
        ent_coef: entropy bonus.
        pace_weight: weight of the pacing term that steers the cost toward the target.
        hidden: width of the policy's hidden layers.
        keep_ratio: initial mean keep ratio of a group; None: the uniform ratio whose
            L1-pruned network meets the target (`prune_env.envs.uniform`), so that the first tries
            explore around the L1-uniform allocation instead of far from the target.
        feature_prior: initial weight of the filters' scores in their keep logits.
        pace_adapt: step of the pace weight's dual ascent (0: the weight stays fixed).
        fixed_finetune: fine-tune each group for this fraction of the budget instead of
            learning how long (the ablation of L2PF's hybrid action); None: learned.
        finetune_budget: the mean fine-tune fraction the learned durations may spend, held
            by an adaptive price (module docstring); None: only the environment's price.
        budget_adapt: step of that price's dual ascent, per group.
    """

    tries: int = 4
    lr: float = 3e-3
    ent_coef: float = 0.01
    pace_weight: float = 10.0
    pace_adapt: float = 0.0
    hidden: int = 64
    keep_ratio: float | None = None
    feature_prior: float = 16.0
    fixed_finetune: float | None = None
    finetune_budget: float | None = None
    budget_adapt: float = 0.2

    def __post_init__(self):
        if self.tries < 1:
            raise ValueError("tries must be >= 1")
        if self.fixed_finetune is not None and not 0 <= self.fixed_finetune <= 1:
            raise ValueError("fixed_finetune is a fraction of the fine-tune budget, in [0, 1]")
        if self.finetune_budget is not None:
            if not 0 < self.finetune_budget <= 1:
                raise ValueError("finetune_budget is a fraction of the fine-tune budget, "
                                 "in (0, 1]")
            if self.fixed_finetune is not None:
                raise ValueError("finetune_budget prices the learned durations; a fixed "
                                 "duration has nothing to price: give one or the other")


@dataclass
class Try:
    """One action tried on a group, and where it led."""

    action: dict[str, torch.Tensor]
    reward: float
    score: float
    obs: np.ndarray
    done: bool
    info: dict[str, Any]
    snapshot: dict[str, Any]
    behind: float = 0.0  # how far above the pace line (0: on it)


class L2PF:
    """The agent (see the module docstring).

    Args:
        env: a `PruneEnv` (possibly wrapped by `gymnasium.make`); best built with
            ``final_report=False`` since training episodes need no timed report.
        config: hyper-parameters.
        seed: seeds the policy's weights and sampling, and the episodes' resets.
        n_envs: workers running the tries in parallel (1: in this process).
        env_fn: builds a worker's environment (needed when ``n_envs > 1``).
        tries_on: the workers are "processes" on this machine or "ray" actors in the
            cluster of ``ray_config`` (`agents.tries.RayTryPool`).
    """

    def __init__(self, env: gym.Env, config: L2PFConfig | None = None, seed: int = 0,
                 n_envs: int = 1, env_fn=None, tries_on: str = "processes",
                 ray_config=None):
        if not hasattr(env.unwrapped, "snapshot"):  # the gating environment trains in place
            raise ValueError(f"L2PF tries actions from snapshots of the episode; "
                             f"{type(env.unwrapped).__name__} offers none: use an sb3 agent "
                             "or one episode per action sequence")
        self.env = env
        self.config = config or L2PFConfig()
        self.seed = seed
        self.keep_ratio = self.initial_keep_ratio()
        torch.manual_seed(seed)
        self.policy = L2PFPolicy(cast(PruneEnv, env.unwrapped).bench.max_filters,
                                 self.config.hidden, self.keep_ratio, self.config.feature_prior,
                                 self.config.fixed_finetune)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)
        self.episodes = 0
        self.best: Candidate | None = None
        self.pool = None
        self.covered = 0.0  # share of the network's cost the episode has visited
        self.pace = self.config.pace_weight  # the pacing term's weight now (`adapt_pace`)
        self.price = 0.0  # the fine-tune budget's price now (`adapt_price`)
        if n_envs > 1:
            if env_fn is None:
                raise ValueError("n_envs > 1 needs env_fn to build the workers' environments")
            device = str(cast(PruneEnv, env.unwrapped).bench.device)
            self.pool = make_pool(env_fn, n_envs, tries_on, ray_config, device)

    def initial_keep_ratio(self) -> float:
        """The configured keep ratio, or the uniform one meeting the target."""
        if self.config.keep_ratio is not None:
            return self.config.keep_ratio
        env = cast(PruneEnv, self.env.unwrapped)
        return uniform_ratio_for(env.bench, env.bench.reward_cfg.target)

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # ----------------------------------------------------------------- acting
    def predict(self, obs: np.ndarray, state=None, episode_start=None,
                deterministic: bool = True):
        """stable-baselines3's ``predict``: (action, state)."""
        return self.policy.predict(obs, state, episode_start, deterministic)

    # ----------------------------------------------------------------- learning
    def learn(self, episodes: int) -> Iterator[EpisodeLog]:
        """Train until ``episodes`` episodes are done in all (counting earlier ones, so a
        resumed agent continues), yielding each episode's log."""
        while self.episodes < episodes:
            yield self.run_episode()

    def run_episode(self) -> EpisodeLog:
        """One episode of tries and updates; returns its log (rewards, losses, final net)."""
        env, unwrapped = self.env, cast(PruneEnv, self.env.unwrapped)
        obs, _ = env.reset(seed=self.seed + self.episodes)
        done, reward, losses, entropies, finetune, info = False, 0.0, [], [], [], {}
        searched = 0  # fine-tune steps of every try
        self.covered = 0.0
        while not done:
            self.covered = min(1.0, self.covered + self.share(obs))
            tries = self.try_group(obs)
            searched += sum(t.info["finetune_steps"] for t in tries)
            loss, entropy = self.update(obs, tries)
            self.adapt_price(tries)
            losses.append(loss)
            entropies.append(entropy)
            best = max(tries, key=lambda t: (-t.behind if t.done else 0.0, t.score))
            unwrapped.restore(best.snapshot)
            obs, done, info = best.obs, best.done, best.info
            reward += best.reward
            finetune.append(float(best.action["finetune"][0]))
        unwrapped.observe_episode()  # before the checkpoint, which then holds it
        state = unwrapped.state
        assert state is not None  # set by reset()
        log = EpisodeLog(
            episode=self.episodes, reward=reward, accuracy=state.accuracy,
            cost_ratio=info["cost_ratio"], flops=info["flops"], params=info["params"],
            latency_ms=info["latency_ms"], energy_mj=info["energy_mj"],
            finetune_seconds=state.finetune_seconds, finetune_steps=state.finetune_steps,
            finetune_mean=float(np.mean(finetune)), policy_loss=float(np.mean(losses)),
            entropy=float(np.mean(entropies)), kept=info["kept_filters"],
            search_finetune_steps=searched, pace_weight=self.pace,
            finetune_price=self.price if self.config.finetune_budget is not None else None)
        self.remember(log, state)
        self.adapt_pace(log.cost_ratio)
        self.episodes += 1
        return log

    def try_group(self, obs: np.ndarray) -> list[Try]:
        """Sample ``tries`` actions from the current state and try each (in parallel with
        workers); every try starts from the same snapshot, fine-tuned on the same batches."""
        start = cast(PruneEnv, self.env.unwrapped).snapshot()
        with torch.no_grad():
            dist = self.policy.distribution(torch.as_tensor(obs)[None])
        actions = [dist.sample()[0] for _ in range(self.config.tries)]
        env_actions = [to_env_action(a, self.policy.max_filters) for a in actions]
        if self.pool is not None:
            results = self.pool.run(start, env_actions)
        else:
            results = [run_try(self.env, start if k else None, a)
                       for k, a in enumerate(env_actions)]
        tries = []
        for action, (next_obs, reward, done, info, snapshot) in zip(actions, results,
                                                                    strict=True):
            behind = self.behind(done, info)
            charged = self.pace * behind + self.price * float(action["finetune"][0])
            tries.append(Try(action, reward, reward - charged, next_obs, done, info,
                             snapshot, behind))
        return tries

    def share(self, obs: np.ndarray) -> float:
        """The current group's share of the network's cost (latency share, or FLOPs share
        for the counted costs)."""
        counted = cast(PruneEnv, self.env.unwrapped).bench.cost_name in ("flops", "params")
        return float(obs[ObservationLayout.index("flops_share" if counted else "latency_share")])

    def behind(self, done: bool, info: dict[str, Any]) -> float:
        """How far above the pace line a try left the cost, in units of the target."""
        target = cast(PruneEnv, self.env.unwrapped).bench.reward_cfg.target
        line = 1.0 - (1.0 - target) * (1.0 if done else self.covered)
        return max(0.0, info["cost_ratio"] - line) / target

    def adapt_pace(self, ratio: float) -> None:
        """Dual ascent on the pace weight after an episode that ended at cost ``ratio``
        (see the module docstring); kept within [0.1, 1e4], so that a long run of met
        targets cannot switch pacing off nor a long run of misses overflow it."""
        if self.config.pace_adapt <= 0:
            return
        target = cast(PruneEnv, self.env.unwrapped).bench.reward_cfg.target
        excess = (ratio - target) / target
        self.pace = float(np.clip(self.pace * np.exp(self.config.pace_adapt * excess),
                                  0.1, 1e4))

    def adapt_price(self, tries: list[Try]) -> None:
        """Dual ascent on the fine-tune price after a group (module docstring): it rises
        while the tries spend more than the budget and falls, down to 0, while they spend
        less."""
        budget = self.config.finetune_budget
        if budget is None:
            return
        spent = float(np.mean([float(t.action["finetune"][0]) for t in tries]))
        self.price = max(0.0, self.price + self.config.budget_adapt * (spent - budget) / budget)

    def update(self, obs: np.ndarray, tries: list[Try]) -> tuple[float, float]:
        """REINFORCE over the tries, baseline = their mean score; returns (loss, entropy)."""
        scores = torch.tensor([t.score for t in tries])
        advantage = scores - scores.mean()
        if len(tries) > 1:
            advantage = advantage / (scores.std() + 1e-8)
        batch = torch.as_tensor(np.repeat(obs[None], len(tries), 0))
        dist = self.policy.distribution(batch)
        actions = {k: torch.cat([t.action[k] for t in tries]) for k in tries[0].action}
        entropy = dist.entropy().mean()
        loss = -(advantage * dist.log_prob(actions)).mean() - self.config.ent_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        self.optimizer.step()
        return loss.item(), entropy.item()

    def remember(self, log: EpisodeLog, state: EpisodeState) -> None:
        """Keep the episode's network if it is the best so far."""
        target = cast(PruneEnv, self.env.unwrapped).bench.reward_cfg.target
        candidate = Candidate(copy.deepcopy(state.model), f"best try, episode {self.episodes}",
                              log.accuracy, log.cost_ratio, log.cost_ratio <= target,
                              log.reward, state.finetune_seconds, state.finetune_steps)
        if self.best is None or candidate.key() > self.best.key():
            self.best = candidate

    # ----------------------------------------------------------------- saving
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: weights, optimiser, counters, RNG, best network."""
        return {"config": asdict(self.config), "seed": self.seed, "episodes": self.episodes,
                "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "correction": self.correction_record(), "pace": self.pace,
                "price": self.price,
                # the best network as a record (data, not a pickled module)
                "best": None if self.best is None else
                {f.name: getattr(self.best, f.name) for f in fields(self.best)}
                | {"model": to_record(self.best.model)}}

    def correction_record(self) -> dict[str, Any]:
        """The latency table's correction as plain data (`--correct-episodes` refits it as
        the run goes, so a resumed run needs it)."""
        correction, base_ms = cast(PruneEnv, self.env.unwrapped).bench.meter.correction_state()
        return {"slope": correction.slope, "points": [list(p) for p in correction.points],
                "observed": correction.observed, "base_ms": base_ms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # options added since the checkpoint was written take their defaults
        if asdict(L2PFConfig()) | state["config"] != asdict(self.config):
            raise ValueError("the checkpoint's L2PF hyper-parameters differ from this run's: "
                             f"{state['config']} vs {asdict(self.config)}")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.seed, self.episodes = state["seed"], state["episodes"]
        self.pace = state.get("pace", self.config.pace_weight)  # older checkpoints: fixed
        self.price = state.get("price", 0.0)
        if state.get("correction"):  # older checkpoints have none
            record = state["correction"]
            cast(PruneEnv, self.env.unwrapped).bench.meter.restore_correction((TableCorrection(
                record["slope"], tuple((p, m) for p, m in record["points"]),
                record["observed"]), record["base_ms"]))
        best = state["best"]
        self.best = None if best is None else Candidate(
            **(best | {"model": from_record(best["model"], "the checkpoint's best network")}))
