"""The pruning environment: structured pruning of a trained CNN as a Gymnasium episode."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from prune_env.envs.bench import Bench, batchnorms_of
from prune_env.envs.features import filter_features
from prune_env.envs.observation import ObservationLayout
from prune_env.envs.records import Report
from prune_env.envs.report import episode_report, score
from prune_env.envs.reward import final_reward, step_reward
from prune_env.nn.groups import FilterGroup, filter_groups
from prune_env.nn.surgery import compact_report

#: Training images of the forward and backward pass that scores a group's filters: enough
#: for the features' ranking, small enough to stay a few percent of a step.
FEATURE_BATCH = 32


@dataclass
class EpisodeState:
    """What changes during an episode (the rest of the env is fixed at construction)."""

    model: nn.Module
    step: int = 0
    cost: float = 0.0
    accuracy: float = 0.0
    prev_keep: float = 1.0
    prev_finetune: float = 0.0
    finetune_seconds: float = 0.0
    finetune_steps: int = 0
    total_reward: float = 0.0
    group: FilterGroup | None = None
    members: dict[str, FilterGroup] = field(default_factory=dict)  # conv -> its group, now
    timed: bool = False  # the ended episode's network timed for the correction (observe)


class PruneEnv(gym.Env):
    """
    ## Description

    Structured pruning of a trained convolutional network, one filter group per step, as in
    try-and-learn (Huang et al. 2018) and "Learning to Prune Faster" (L2PF, Vemparala et al.):
    at each step the agent chooses which filters of the current group to keep AND how long to
    fine-tune afterwards. The network is really shrunk at every step
    (`prune_env.nn.surgery.compact`, not masks), fine-tuned, scored on a validation split and
    measured (latency from a per-layer lookup table calibrated on the base network; energy
    with a hardware meter; FLOPs; parameters).

    A group is the set of filters that must be pruned together (`prune_env.nn.groups`): e.g. in
    ResNet-20 the convs closing the residual branches of a stage and the stem or projection
    feeding them. Groups are visited in forward order; groups that vanished because an earlier
    step removed their residual branch are skipped.

    ## Action Space

    `Dict(keep=MultiBinary(max_filters), finetune=Box(0, 1, (1,), float32))`

    - `keep[i]`, i < group size: 1 keeps filter i of the current group, 0 drops it. Entries
      beyond the group's size are padding and ignored (the observation's validity mask says
      which entries count).
    - `finetune`: fraction of `max_finetune_steps` SGD steps spent fine-tuning after this step.

    Dropping every filter of a group whose convs all lie in residual branches removes those
    branches (the block becomes its shortcut). For any other group the strongest filter (by
    L1 norm) is kept instead, and `info["forced_keep"]` says so.
    Use `RatioActionWrapper` (AMC's keep ratio) or `FlatActionWrapper` (a score per filter) for
    agents that need a flat Box action (stable-baselines3).

    ## Observation Space

    `Box(-1, 1, (16 + 5 * max_filters,), float32)`: the group's descriptor, then four
    per-filter features for `max_filters` slots, then the validity mask
    (`prune_env.envs.observation`).

    | index | meaning | min | max |
    |---|---|---|---|
    | 0 | progress: step / number of groups | 0 | 1 |
    | 1 | kind: 0 one plain conv, 0.5 coupled by residual additions, 1 coupled through a depthwise conv | 0 | 1 |
    | 2 | input channels of the group's first conv / largest in the base | 0 | 1 |
    | 3 | filters in the group / max_filters | 0 | 1 |
    | 4 | kernel size / 7 | 0 | 1 |
    | 5 | stride / 4 | 0 | 1 |
    | 6 | feature map area / input image area | 0 | 1 |
    | 7 | group's share of the network's FLOPs | 0 | 1 |
    | 8 | group's share of the network's (looked-up) latency | 0 | 1 |
    | 9 | cost so far / base cost | 0 | 1 |
    | 10 | (cost so far - target * base cost) / base cost | -1 | 1 |
    | 11 | validation accuracy after the last step | 0 | 1 |
    | 12 | (base accuracy - accuracy) / allowed drop, clipped | -1 | 1 |
    | 13 | previous action: kept fraction | 0 | 1 |
    | 14 | previous action: fine-tune fraction | 0 | 1 |
    | 15 | 1 if dropping all filters removes residual branches | 0 | 1 |
    | 16 + 4i + j | feature j of filter i: L1 norm, BN scale, mean activation, Taylor score, each / the group's max | 0 | 1 |
    | 16 + 4m + i | 1 if filter slot i exists in this group (m = max_filters) | 0 | 1 |

    ## Rewards

    Selected by `reward` (see `prune_env.envs.reward`). Default `psi-phi`, per step:
    `psi * phi - finetune_weight * finetune`, with `psi = (b - drop) / b` (b = `allowed_drop`,
    drop = base validation accuracy - validation accuracy after this step's fine-tune) and
    `phi = log(cost before / cost after)` in the chosen cost. The last step adds
    `+target_bonus` if cost <= `target` * base cost, else
    `-target_bonus * (cost / base - target) / target`.

    ## Starting State

    The base network (loaded from its checkpoint, or pretrained on first use), unpruned.
    `reset(seed=...)` seeds fine-tuning batches and the feature batch.
    `reset(options={"warmup": (steps, grad_hook)})` first trains the network for `steps` SGD
    steps with `grad_hook(model, step, steps)` called after each backward pass (how a method
    such as SWD shapes the weights before pruning; `prune_env.training.loop.GradHook`), charged to
    the episode's fine-tuning compute.
    A method that changes the structure adds `"wrap": fn(model) -> model` (applied to the
    fresh copy before the warm-up, e.g. ALF's autoencoder blocks) and `"deploy": fn(model)
    -> network` (applied after it): the deployed network becomes the episode's, scored and
    costed anew (the reset's info says so), and the episode walks ITS groups
    (`visit_order`; ALF: each code conv is a group of its own, so the keep action prunes
    the code, `baselines.alf`). Rewards and ratios stay relative to the base network.

    ## Episode End

    Termination: every group has been visited. Truncation: never. At the end the real compact
    network is timed (interleaved with the base), `info["final"]` holds the episode report
    (base vs pruned accuracy, measured and predicted latency, the measured ratio's 95%
    interval and whether the target is met, missed or within noise, energy or None, FLOPs,
    parameters, kept filters per layer, fine-tune compute, validation and test accuracy) as a
    `prune_env.envs.records.Report`, unless `final_report` is False (agents that train over
    many episodes; their run's final stage reports, `prune_env.runs.pipeline`). The
    environment writes no files.

    `info` at every step: `accuracy`, `latency_ms` (looked up), `energy_mj` (None unless the
    cost is energy), `flops`, `params`, `finetune_steps`, `group`, `kept`, `forced_keep`,
    `unions`, `removed_branches`, `cost`, `cost_ratio`: all determined by the seed (what
    gymnasium's `check_env` asks). At the last step also `kept_filters` (filters left in
    each conv) and `episode_finetune_seconds` (the episode's fine-tuning wall time).

    ## Arguments

    All but `final_report` set up the environment's `bench` (`prune_env.envs.bench.Bench`:
    base network, data, task, cost meter, base costs, filter groups), which methods that
    prepare an episode read (``env.unwrapped.bench``); ``env.unwrapped.layout`` says where
    each part of the observation lies (`prune_env.envs.observation.ObservationLayout`).

    | name | type | default | meaning |
    |---|---|---|---|
    | model | str | "resnet20" | architecture (see `prune_env.nn.models`) |
    | dataset | str | "fashion-mnist" | data set (see `prune_env.data.datasets`) |
    | cost | str | "latency" | latency, energy, flops or params |
    | target | float | 0.5 | cost target as a fraction of the base cost |
    | reward | str | "psi-phi" | psi-phi, amc, amc-constrained or accuracy-cost |
    | allowed_drop | float | 0.02 | b of psi |
    | finetune_weight | float | 0.05 | price of a full fine-tune |
    | max_finetune_steps | int | 50 | fine-tuning steps at finetune = 1 |
    | finetune_lr | float | 0.01 | fine-tuning learning rate |
    | batch_size | int | 64 | fine-tuning batch size |
    | val_samples | int | 2000 | validation images scored per step (a fixed subset) |
    | device | str | "cpu" | where the network lives and trains: fine-tuning, validation, features, warm-ups; its data goes there whole when it fits |
    | measure_device | str or None | None | where latency/energy are measured (None: `device`) |
    | amp | str | "off" | "bf16": fine-tuning in bfloat16 autocast |
    | threads | int or None | None | CPU threads for latency (None: current) |
    | deploy_shape | str or None | None | "CxHxW" of one deployed input: latency, table, energy, FLOPs and exports at it (None: the data's size) |
    | latency_batch | int | 32 | second batch size the final report times (besides 1) |
    | checkpoint | str or None | None | base checkpoint (default checkpoints/{model}-{dataset}.pt) |
    | data | DataBundle or None | None | pre-loaded data (else loaded from `dataset`) |
    | data_dir | str or None | None | where the data set lives |
    | pretrain | PretrainConfig or None | None | budget if the base must be pretrained |
    | latency_table | str or None | None | lookup-table file (default ~/.cache/prune-env) |
    | correct_table | int | 0 | probes (random-width copies of the base) timed to correct the table's predictions (`prune_env.measure.correction`; 0: none) |
    | correct_episodes | bool | False | at each reset, time the ended episode's network against the base and refit the correction on it (latency cost only) |
    | energy_meter | str | "auto" | energy sensor: auto, nvml, rapl, jetson or zeus (`prune_env.measure.energy.auto_meter`) |
    | final_report | bool | True | measure and score the network at the episode's end |
    | seed | int | 0 | data split seed |

    ## Tries

    `snapshot()` returns the episode's state (network, step, random generators) and
    `restore(snapshot)` returns to it, so that an agent can try several actions on the same
    group, each fine-tuned on the same batches, as try-and-learn does (see `agents.l2pf`).

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, *, final_report: bool = True, **kwargs: Any):
        self.bench = Bench(**kwargs)
        self.final_report = final_report
        self.action_space = spaces.Dict({
            "keep": spaces.MultiBinary(self.bench.max_filters),
            "finetune": spaces.Box(0.0, 1.0, (1,), np.float32),
        })
        self.layout = ObservationLayout(self.bench.max_filters)
        self.observation_space = self.layout.space
        self.state: EpisodeState | None = None
        self._bn_of = self.bench.base_bn_of

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.observe_episode()
        self.bench.generator.manual_seed(int(self.np_random.integers(2**31)))
        options = options or {}
        model = copy.deepcopy(self.bench.base_model)
        if "wrap" in options:
            model = options["wrap"](model)
        self.state = EpisodeState(model=model, cost=self.bench.base_cost,
                                  accuracy=self.bench.base_accuracy)
        self._bn_of = self.bench.base_bn_of
        self._warm_up(options)
        groups = (self._deploy(options["deploy"]) if "deploy" in options
                  else self.bench.base_groups)
        self._order = [g.leader for g in groups]
        self._advance(groups)
        costs = (self.bench.meter.costs(self.state.model) if "deploy" in options
                 else self.bench.base_costs)
        return self._observation(), {"accuracy": self.state.accuracy, **costs}

    def step(self, action: dict[str, Any]):
        if self.state is None or self.state.group is None:
            raise RuntimeError("call reset() before step(), and again once an episode ends")
        state, group, bench = self.state, self.state.group, self.bench
        keep, finetune = self._parse_action(action, group)
        keep, forced = self._legal_keep(group, keep)
        result = compact_report(state.model, group.keep_for(torch.as_tensor(keep)),
                                bn_of=self._bn_of)
        model = result.model
        steps = round(finetune * bench.max_finetune_steps)
        with bench.meter.computing():  # no latency timing meanwhile, in any process
            seconds = bench.finetune(model, steps)
            accuracy = bench.validate(model)
        costs = bench.meter.costs(model)
        reward = step_reward(bench.reward_cfg, bench.base_accuracy, accuracy, state.cost,
                             costs[bench.cost_key], bench.base_cost, finetune)
        state.model, state.accuracy, state.cost = model, accuracy, costs[bench.cost_key]
        state.prev_keep, state.prev_finetune = float(keep.mean()), finetune
        state.finetune_seconds += seconds
        state.finetune_steps += steps
        info = {"accuracy": accuracy, **costs, "cost": state.cost,
                "cost_ratio": state.cost / bench.base_cost, "finetune_steps": steps,
                "group": group.leader,
                "kept": result.out_channels.get(group.leader, 0),
                "forced_keep": forced, "unions": result.unions,
                "removed_branches": result.removed_branches}
        state.step += 1
        self._advance(filter_groups(model, graph=result.graph))
        terminated = state.group is None
        if terminated:
            reward += final_reward(bench.reward_cfg, accuracy, state.cost, bench.base_cost,
                                   bench.absolute(state.cost))
            state.total_reward += reward
            # wall time only at the episode's end (as gymnasium's RecordEpisodeStatistics):
            # a step's info holds only what the seed determines
            info["episode_finetune_seconds"] = state.finetune_seconds
            info["kept_filters"] = {n: m.out_channels for n, m in model.named_modules()
                                    if isinstance(m, nn.Conv2d)}
            info["final"] = self._finish() if self.final_report else None
        else:
            state.total_reward += reward
        return self._observation(), float(reward), terminated, False, info

    def _warm_up(self, options: dict[str, Any]) -> None:
        """``options["warmup"] = (steps, grad_hook)``: train the fresh network for ``steps``
        SGD steps with a method's extra gradient (SWD's penalty, say) before the first step,
        charged to the episode's fine-tuning compute."""
        if "warmup" not in options:
            return
        steps, hook = options["warmup"]
        state = self.episode_state
        with self.bench.meter.computing():
            state.finetune_seconds += self.bench.finetune(state.model, steps, grad_hook=hook,
                                                          progress="warm-up")
            state.accuracy = self.bench.validate(state.model)
        state.finetune_steps += int(steps)

    def _deploy(self, deploy) -> list[FilterGroup]:
        """``options["deploy"](model) -> network``: the structure a method deploys after its
        training (ALF's code and expansion convs, say) becomes the episode's network; its
        groups are walked instead of the base's. Returns them."""
        state = self.episode_state
        model = deploy(state.model)
        self._bn_of = batchnorms_of(model)
        with self.bench.meter.computing():
            state.accuracy = self.bench.validate(model)
        state.model, state.cost = model, self.bench.meter.costs(model)[self.bench.cost_key]
        return filter_groups(model)

    # ----------------------------------------------------------------- tries
    def observe_episode(self) -> None:
        """With ``correct_episodes``: time the network of the episode that just ended against
        the base and refit the table's correction on it (`CostMeter.observe`), once. The
        next reset does it; an agent that checkpoints at the episode's end calls it first,
        so that the checkpoint holds the correction."""
        state = self.state
        if self.bench.correct_episodes and state is not None and state.group is None \
                and state.step > 0 and not state.timed:
            self.bench.meter.observe(self.bench.base_model, state.model)
            state.timed = True

    def snapshot(self) -> dict[str, Any]:
        """The episode's state, to `restore` and try another action from it.

        The network is shared, not copied: a step never changes a network in place (surgery
        builds a new one, which is then fine-tuned), so a snapshot's network stays as it was.
        """
        if self.state is None:
            raise RuntimeError("call reset() before snapshot()")
        return {"state": dataclasses.replace(self.state), "features": self._features.copy(),
                "generator": self.bench.generator.get_state(),
                "np_random": copy.deepcopy(self.np_random.bit_generator.state),
                # tries in other processes predict with the episode's correction
                "correction": self.bench.meter.correction_state()}

    def restore(self, snapshot: dict[str, Any]) -> np.ndarray:
        """Return to a `snapshot` of this episode; returns its observation."""
        self.state = dataclasses.replace(snapshot["state"])
        self._features = snapshot["features"].copy()
        self.bench.generator.set_state(snapshot["generator"])
        self.np_random.bit_generator.state = copy.deepcopy(snapshot["np_random"])
        if "correction" in snapshot:  # a snapshot sent by an older process has none
            self.bench.meter.restore_correction(snapshot["correction"])
        return self._observation()

    # ----------------------------------------------------------------- steps
    def _parse_action(self, action: dict[str, Any], group: FilterGroup
                      ) -> tuple[np.ndarray, float]:
        """Check the action; a bad one is a ValueError naming the field."""
        if not isinstance(action, dict) or set(action) != {"keep", "finetune"}:
            raise ValueError("action must be a dict with keys 'keep' and 'finetune'")
        keep = np.asarray(action["keep"])
        if keep.shape != (self.layout.max_filters,):
            raise ValueError(f"action['keep'] must have shape ({self.layout.max_filters},), "
                             f"got {keep.shape}")
        if not np.isin(keep, (0, 1)).all():
            raise ValueError("action['keep'] must hold only 0 and 1")
        finetune = np.asarray(action["finetune"], dtype=np.float64).reshape(-1)
        if finetune.size != 1 or not np.isfinite(finetune).all():
            raise ValueError("action['finetune'] must be one finite number in [0, 1]")
        if not 0.0 <= finetune[0] <= 1.0:
            raise ValueError(f"action['finetune'] must lie in [0, 1], got {finetune[0]}")
        return keep[: group.size].astype(bool), float(finetune[0])

    def _legal_keep(self, group: FilterGroup, keep: np.ndarray) -> tuple[np.ndarray, bool]:
        """Keep the strongest filter where emptying the group would cut the network."""
        if keep.any() or group.removable:
            return keep, False
        keep = keep.copy()
        keep[int(np.argmax(self._features[:, 0]))] = True
        return keep, True

    def _advance(self, groups: list[FilterGroup]) -> None:
        """Move to the next group of the base order that still exists in the network."""
        state = self.episode_state
        members = {c: g for g in groups for c in g.convs}
        state.members = members
        state.group = None
        while state.step < len(self._order):
            group = members.get(self._order[state.step])
            if group is not None:
                state.group = group
                break
            state.step += 1  # its branch was removed by an earlier step
        if state.group is not None:
            self._features = self._group_features(state.group)

    def _group_features(self, group: FilterGroup) -> np.ndarray:
        batch = self.bench.train_batch(FEATURE_BATCH)
        with self.bench.meter.computing():
            return filter_features(self.episode_state.model, group, self._bn_of, batch,
                                   self.bench.task)

    # ----------------------------------------------------------------- observation
    def _observation(self) -> np.ndarray:
        state, bench = self.episode_state, self.bench
        if state.group is None:
            return np.zeros(self.layout.size, np.float32)
        group, model = state.group, state.model
        conv = cast(nn.Conv2d, model.get_submodule(group.convs[0]))
        ratio = state.cost / bench.base_cost
        drop = (bench.base_accuracy - state.accuracy) / bench.reward_cfg.allowed_drop
        descriptor = [state.step / len(self._order), self._kind(model, group),
                      conv.in_channels / bench.max_in, group.size / bench.max_filters,
                      min(conv.kernel_size[0] / 7, 1), min(conv.stride[0] / 4, 1),
                      *bench.meter.group_shares(model, group.convs), min(ratio, 1),
                      np.clip(ratio - bench.reward_cfg.target, -1, 1), state.accuracy,
                      np.clip(drop, -1, 1), state.prev_keep, state.prev_finetune,
                      float(group.removable)]
        return self.layout.write(np.asarray(descriptor), self._features)

    @staticmethod
    def _kind(model: nn.Module, group: FilterGroup) -> float:
        if any(cast(nn.Conv2d, model.get_submodule(c)).groups > 1 for c in group.convs):
            return 1.0
        return 0.5 if len(group.convs) > 1 else 0.0

    # ----------------------------------------------------------------- end
    def _finish(self) -> Report:
        """Measure the real compact network against the base; score both."""
        state = self.episode_state
        bench = self.bench
        report = episode_report(bench, state, bench.meter.measure_pair(bench.base_model,
                                                                        state.model))
        score(bench, state.model, report)
        return report

    @property
    def visit_order(self) -> list[str]:
        """The leaders of the episode's groups in the order the episode visits them (the
        deployed network's, after a ``deploy`` reset option); the observation's progress is
        the current one's index / its length."""
        return list(self._order)

    @property
    def groups_ahead(self) -> list[FilterGroup]:
        """The current network's groups that the episode will visit after the current one, in
        order, as they stand now (one that a later step's branch removal deletes is still
        listed). What a method that plans the rest of the episode reads (AMC's budget clamp,
        `prune_env.envs.wrappers.RatioActionWrapper`)."""
        state = self.episode_state
        ahead: list[FilterGroup] = []
        for leader in self._order[state.step + 1:]:
            group = state.members.get(leader)
            if group is not None and group not in ahead:
                ahead.append(group)
        return ahead

    @property
    def episode_state(self) -> EpisodeState:
        """The episode's state; an error before the first reset."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return self.state

    @property
    def bn_of(self) -> dict[str, str]:
        """conv -> its BatchNorm in the episode's network (the deployed one's after a
        ``deploy`` reset option; the base's otherwise)."""
        return self._bn_of

    @property
    def model(self) -> nn.Module:
        """The network as pruned so far."""
        return self.state.model if self.state else self.bench.base_model
