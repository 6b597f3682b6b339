"""The pruning environment: structured pruning of a trained CNN as a Gymnasium episode."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from prune_env.catalog import COSTS
from prune_env.data.datasets import DataBundle, load_data
from prune_env.data.task import get_task
from prune_env.envs.features import FEATURES, filter_features
from prune_env.envs.records import Report
from prune_env.envs.report import episode_report, score
from prune_env.envs.reward import RewardConfig, final_reward, step_reward
from prune_env.measure.costs import COST_KEYS, CostMeter
from prune_env.nn.groups import FilterGroup, filter_groups
from prune_env.nn.models import example_input, input_shape
from prune_env.nn.surgery import compact_report, evaluating, following_batchnorms
from prune_env.training.loop import TrainConfig, evaluate, train_steps
from prune_env.training.pretrain import PretrainConfig, load_or_pretrain

#: Training images of the forward and backward pass that scores a group's filters: enough
#: for the features' ranking, small enough to stay a few percent of a step.
FEATURE_BATCH = 32

DESCRIPTOR = (
    "progress", "kind", "in_channels", "filters", "kernel", "stride", "feature_map",
    "flops_share", "latency_share", "cost_ratio", "cost_to_target", "accuracy",
    "accuracy_drop", "prev_keep", "prev_finetune", "removable",
)


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
    Use `FlatActionWrapper` for agents that need a flat Box action (stable-baselines3).

    ## Observation Space

    `Box(-1, 1, (16 + 5 * max_filters,), float32)`: the group's descriptor, then four
    per-filter features for `max_filters` slots, then the validity mask.

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
    (base vs pruned accuracy, measured and predicted latency, energy or None, FLOPs,
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

    | name | type | default | meaning |
    |---|---|---|---|
    | model | str | "resnet20" | architecture (see `prune_env.nn.models`) |
    | dataset | str | "fashion-mnist" | data set (see `prune_env.data.datasets`) |
    | cost | str | "latency" | latency, energy, flops or params |
    | target | float | 0.5 | cost target as a fraction of the base cost |
    | reward | str | "psi-phi" | psi-phi, amc or accuracy-cost |
    | allowed_drop | float | 0.02 | b of psi |
    | finetune_weight | float | 0.05 | price of a full fine-tune |
    | max_finetune_steps | int | 50 | fine-tuning steps at finetune = 1 |
    | finetune_lr | float | 0.01 | fine-tuning learning rate |
    | batch_size | int | 64 | fine-tuning batch size |
    | val_samples | int | 2000 | validation images scored per step (a fixed subset) |
    | device | str | "cpu" | where latency/energy are measured |
    | threads | int or None | None | CPU threads for latency (None: current) |
    | latency_batch | int | 32 | second batch size the final report times (besides 1) |
    | checkpoint | str or None | None | base checkpoint (default checkpoints/{model}-{dataset}.pt) |
    | data | DataBundle or None | None | pre-loaded data (else loaded from `dataset`) |
    | data_dir | str or None | None | where the data set lives |
    | pretrain | PretrainConfig or None | None | budget if the base must be pretrained |
    | latency_table | str or None | None | lookup-table file (default ~/.cache/prune-env) |
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

    def __init__(self, model: str = "resnet20", dataset: str = "fashion-mnist",
                 cost: str = "latency", target: float = 0.5, reward: str = "psi-phi",
                 allowed_drop: float = 0.02, finetune_weight: float = 0.05,
                 max_finetune_steps: int = 50, finetune_lr: float = 0.01, batch_size: int = 64,
                 val_samples: int = 2000, device: str = "cpu", threads: int | None = None,
                 latency_batch: int = 32,
                 checkpoint: str | None = None, data: DataBundle | None = None,
                 data_dir: str | None = None, pretrain: PretrainConfig | None = None,
                 latency_table: str | None = None, final_report: bool = True,
                 seed: int = 0):
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}: choose one of {', '.join(COSTS)}")
        self.cost_name = cost
        self.cost_key = COST_KEYS[cost]
        self.reward_cfg = RewardConfig(reward, allowed_drop, finetune_weight, target)
        self.max_finetune_steps = int(max_finetune_steps)
        self.train_cfg = TrainConfig(lr=finetune_lr, batch_size=batch_size, augment=False,
                                     weight_decay=5e-4)
        self.val_samples = val_samples
        self.final_report = final_report
        self.task = get_task("classification")
        self.data = data or load_data(dataset, data_dir=data_dir, seed=seed)
        self.base_model, self.base_meta = load_or_pretrain(model, self.data, checkpoint,
                                                           pretrain)
        self.model_name = model
        self.input_shape = input_shape(self.base_model)
        given = (self.data.in_channels, *self.data.image_size)
        if self.input_shape != given:
            raise ValueError(f"the base checkpoint takes inputs {self.input_shape} but the data "
                             f"set gives {given}: load the data at the checkpoint's image size "
                             "(--image-size) or use another --checkpoint")
        self.meter = CostMeter(cost, self.input_shape, device=device, threads=threads,
                               table=latency_table, report_batch=latency_batch)
        self._measure_base()
        self.base_groups = filter_groups(self.base_model)
        with evaluating(self.base_model), torch.no_grad():
            # conv -> its BatchNorm: pruning never changes it (removed convs just vanish)
            self._base_bn_of = following_batchnorms(self.base_model,
                                                    example_input(self.base_model, 2))
        self._bn_of = self._base_bn_of
        self.max_filters = max(g.size for g in self.base_groups)
        self.max_in = max(m.in_channels for m in self.base_model.modules()
                          if isinstance(m, nn.Conv2d))
        self.action_space = spaces.Dict({
            "keep": spaces.MultiBinary(self.max_filters),
            "finetune": spaces.Box(0.0, 1.0, (1,), np.float32),
        })
        self._obs_size = len(DESCRIPTOR) + (len(FEATURES) + 1) * self.max_filters
        self.observation_space = spaces.Box(-1.0, 1.0, (self._obs_size,), np.float32)
        self.state: EpisodeState | None = None
        self._generator = torch.Generator()

    # ----------------------------------------------------------------- set-up
    def _measure_base(self) -> None:
        """Base accuracy and costs, once: every episode starts from the same network."""
        self.base_accuracy = evaluate(self.base_model, self.data.val, self.task,
                                      limit=self.val_samples)
        self.base_costs = self.meter.costs(self.base_model, calibrate=True)
        self.base_cost = self.base_costs[self.cost_key]

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**31)))
        options = options or {}
        model = copy.deepcopy(self.base_model)
        if "wrap" in options:
            model = options["wrap"](model)
        self.state = EpisodeState(model=model, cost=self.base_cost,
                                  accuracy=self.base_accuracy)
        self._bn_of = self._base_bn_of
        self._warm_up(options)
        groups = self._deploy(options["deploy"]) if "deploy" in options else self.base_groups
        self._order = [g.leader for g in groups]
        self._advance(groups)
        costs = self.meter.costs(self.state.model) if "deploy" in options else self.base_costs
        return self._observation(), {"accuracy": self.state.accuracy, **costs}

    def step(self, action: dict[str, Any]):
        if self.state is None or self.state.group is None:
            raise RuntimeError("call reset() before step(), and again once an episode ends")
        state, group = self.state, self.state.group
        keep, finetune = self._parse_action(action, group)
        keep, forced = self._legal_keep(group, keep)
        result = compact_report(state.model, group.keep_for(torch.as_tensor(keep)),
                                bn_of=self._bn_of)
        model = result.model
        steps = round(finetune * self.max_finetune_steps)
        with self.meter.computing():  # no latency timing meanwhile, in any process
            seconds = train_steps(model, self.data.train, self.task, steps, self.train_cfg,
                                  self._generator)
            accuracy = evaluate(model, self.data.val, self.task, limit=self.val_samples)
        costs = self.meter.costs(model)
        reward = step_reward(self.reward_cfg, self.base_accuracy, accuracy, state.cost,
                             costs[self.cost_key], self.base_cost, finetune)
        state.model, state.accuracy, state.cost = model, accuracy, costs[self.cost_key]
        state.prev_keep, state.prev_finetune = float(keep.mean()), finetune
        state.finetune_seconds += seconds
        state.finetune_steps += steps
        info = {"accuracy": accuracy, **costs, "cost": state.cost,
                "cost_ratio": state.cost / self.base_cost, "finetune_steps": steps, "group": group.leader,
                "kept": result.out_channels.get(group.leader, 0),
                "forced_keep": forced, "unions": result.unions,
                "removed_branches": result.removed_branches}
        state.step += 1
        self._advance(filter_groups(model, graph=result.graph))
        terminated = state.group is None
        if terminated:
            reward += final_reward(self.reward_cfg, accuracy, state.cost, self.base_cost,
                                   self._absolute(state.cost))
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
        with self.meter.computing():
            state.finetune_seconds += train_steps(state.model, self.data.train, self.task,
                                                  int(steps), self.train_cfg, self._generator,
                                                  grad_hook=hook, progress="warm-up")
            state.accuracy = evaluate(state.model, self.data.val, self.task,
                                      limit=self.val_samples)
        state.finetune_steps += int(steps)

    def _deploy(self, deploy) -> list[FilterGroup]:
        """``options["deploy"](model) -> network``: the structure a method deploys after its
        training (ALF's code and expansion convs, say) becomes the episode's network; its
        groups are walked instead of the base's. Returns them."""
        state = self.episode_state
        model = deploy(state.model)
        with evaluating(model), torch.no_grad():
            self._bn_of = following_batchnorms(model, example_input(model, 2))
        with self.meter.computing():
            state.accuracy = evaluate(model, self.data.val, self.task, limit=self.val_samples)
        state.model, state.cost = model, self.meter.costs(model)[self.cost_key]
        return filter_groups(model)

    # ----------------------------------------------------------------- tries
    def snapshot(self) -> dict[str, Any]:
        """The episode's state, to `restore` and try another action from it.

        The network is shared, not copied: a step never changes a network in place (surgery
        builds a new one, which is then fine-tuned), so a snapshot's network stays as it was.
        """
        if self.state is None:
            raise RuntimeError("call reset() before snapshot()")
        return {"state": dataclasses.replace(self.state), "features": self._features.copy(),
                "generator": self._generator.get_state(),
                "np_random": copy.deepcopy(self.np_random.bit_generator.state)}

    def restore(self, snapshot: dict[str, Any]) -> np.ndarray:
        """Return to a `snapshot` of this episode; returns its observation."""
        self.state = dataclasses.replace(snapshot["state"])
        self._features = snapshot["features"].copy()
        self._generator.set_state(snapshot["generator"])
        self.np_random.bit_generator.state = copy.deepcopy(snapshot["np_random"])
        return self._observation()

    # ----------------------------------------------------------------- steps
    def _parse_action(self, action: dict[str, Any], group: FilterGroup
                      ) -> tuple[np.ndarray, float]:
        """Check the action; a bad one is a ValueError naming the field."""
        if not isinstance(action, dict) or set(action) != {"keep", "finetune"}:
            raise ValueError("action must be a dict with keys 'keep' and 'finetune'")
        keep = np.asarray(action["keep"])
        if keep.shape != (self.max_filters,):
            raise ValueError(f"action['keep'] must have shape ({self.max_filters},), "
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
        n = FEATURE_BATCH
        idx = torch.randint(len(self.data.train), (n,), generator=self._generator)
        batch = (self.data.train.images[idx], self.data.train.labels[idx])
        with self.meter.computing():
            return filter_features(self.episode_state.model, group, self._bn_of, batch, self.task)

    # ----------------------------------------------------------------- observation
    def _observation(self) -> np.ndarray:
        obs = np.zeros(self._obs_size, np.float32)
        state = self.episode_state
        if state.group is None:
            return obs
        group, model = state.group, state.model
        conv = cast(nn.Conv2d, model.get_submodule(group.convs[0]))
        desc = obs[: len(DESCRIPTOR)]
        desc[0] = state.step / len(self._order)
        desc[1] = self._kind(model, group)
        desc[2] = conv.in_channels / self.max_in
        desc[3] = group.size / self.max_filters
        desc[4] = min(conv.kernel_size[0] / 7, 1)
        desc[5] = min(conv.stride[0] / 4, 1)
        desc[6:9] = self.meter.group_shares(model, group.convs)
        desc[9] = min(state.cost / self.base_cost, 1)
        desc[10] = np.clip(state.cost / self.base_cost - self.reward_cfg.target, -1, 1)
        desc[11] = state.accuracy
        drop = (self.base_accuracy - state.accuracy) / self.reward_cfg.allowed_drop
        desc[12] = np.clip(drop, -1, 1)
        desc[13], desc[14] = state.prev_keep, state.prev_finetune
        desc[15] = float(group.removable)
        m, start = self.max_filters, len(DESCRIPTOR)
        feats = obs[start: start + len(FEATURES) * m].reshape(m, len(FEATURES))
        feats[: group.size] = self._features
        obs[start + len(FEATURES) * m: start + len(FEATURES) * m + group.size] = 1.0
        return obs

    @staticmethod
    def _kind(model: nn.Module, group: FilterGroup) -> float:
        if any(cast(nn.Conv2d, model.get_submodule(c)).groups > 1 for c in group.convs):
            return 1.0
        return 0.5 if len(group.convs) > 1 else 0.0

    # ----------------------------------------------------------------- end
    def _finish(self) -> Report:
        """Measure the real compact network against the base; score both."""
        state = self.episode_state
        report = episode_report(self, state, self.meter.measure_pair(self.base_model,
                                                                      state.model))
        score(self, state.model, report)
        return report

    def _absolute(self, cost: float) -> float:
        """A cost in absolute units (microseconds, microjoules, FLOPs, parameters)."""
        return cost * 1e3 if self.cost_name in ("latency", "energy") else cost

    @property
    def visit_order(self) -> list[str]:
        """The leaders of the episode's groups in the order the episode visits them (the
        deployed network's, after a ``deploy`` reset option); the observation's progress is
        the current one's index / its length."""
        return list(self._order)

    @property
    def episode_state(self) -> EpisodeState:
        """The episode's state; an error before the first reset."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return self.state

    @property
    def model(self) -> nn.Module:
        """The network as pruned so far."""
        return self.state.model if self.state else self.base_model
