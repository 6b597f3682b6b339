"""The gating environment: the per-layer budget of dynamic filter gating as a Gymnasium episode."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from baselines.gating.dynamic import dynamic_flops
from baselines.gating.network import GatedNetwork, MaskPredictor, PredictorTrainer
from baselines.gating.report import gate_report
from prune_env.data.datasets import infinite_batches
from prune_env.envs.bench import Bench
from prune_env.envs.prune import EpisodeState
from prune_env.envs.records import Report
from prune_env.envs.report import score
from prune_env.envs.reward import final_reward, step_reward
from prune_env.measure import count_params

GATE_DESCRIPTOR = (
    "progress", "second_conv", "in_channels", "filters", "stride", "feature_map",
    "flops_share", "latency_share", "cost_ratio", "cost_to_target", "accuracy",
    "accuracy_drop", "prev_budget", "prev_finetune", "prev_active",
)


class GateEnv(gym.Env):
    """
    ## Description

    Dynamic filter gating, "Fire Together Wire Together" (FTWT, Elkerdawy et al. CVPR 2022),
    as an episode: the base network's (a ResNet of basic blocks: the CIFAR ResNets,
    resnet20-fcn, smp networks on resnet18/34 encoders) residual-branch convs are gated per
    input by mask
    predictors (`baselines.gating.network`), and at each step the agent sets the budget ``r`` of one
    gate (the teacher masks keep the fewest filters holding a fraction r of the unit's output
    mass on each image, so the number of active filters varies per image) AND how long to
    fine-tune afterwards. Gates are visited in forward order; gates not yet visited have
    r = 1 (every filter on). The network is deployed with REAL dynamic execution
    (`baselines.gating.dynamic.DynamicResNet`: at batch 1 only the predicted filters are computed),
    and the final report times it, predictors included.

    ## Action Space

    `Box(0, 1, (2,), float32)`: [budget r of the current gate, fine-tune fraction of
    `max_finetune_steps`]. Agents that want PruneEnv's Dict action do not apply: the budget is
    one number per layer (stable-baselines3 agents act on this Box directly).

    ## Observation Space

    `Box(-1, 1, (15,), float32)`:

    | index | meaning | min | max |
    |---|---|---|---|
    | 0 | progress: step / number of gates | 0 | 1 |
    | 1 | 1 for a branch's second conv (its output is added to the shortcut) | 0 | 1 |
    | 2 | input channels / largest in the base | 0 | 1 |
    | 3 | filters / largest group | 0 | 1 |
    | 4 | stride / 4 | 0 | 1 |
    | 5 | feature map area / input image area | 0 | 1 |
    | 6 | the conv's share of the base network's FLOPs | 0 | 1 |
    | 7 | the conv's share of the base network's (looked-up) latency | 0 | 1 |
    | 8 | cost so far / base cost | 0 | 1 |
    | 9 | cost so far / base cost - target | -1 | 1 |
    | 10 | validation accuracy (predicted masks) after the last step | 0 | 1 |
    | 11 | (base accuracy - accuracy) / allowed drop, clipped | -1 | 1 |
    | 12 | previous action: budget | 0 | 1 |
    | 13 | previous action: fine-tune fraction | 0 | 1 |
    | 14 | previous gate's mean active fraction of filters | 0 | 1 |

    ## Rewards

    As `PruneEnv` (same `reward`, `allowed_drop`, `finetune_weight`, `target`), with the cost
    of the dynamic network estimated on `cost_samples` validation images with the predicted
    masks: for `flops`, the mean FLOPs per image that the dynamic execution performs
    (predictors included); for `latency`, the looked-up latency of the network with each
    gated conv at its mean active width (predictors, a pooling and a tiny linear layer each,
    left out of the estimate; the final report measures them in).

    ## Starting State

    The base network gated everywhere with r = 1 and predictors that start with every filter
    on (zero weights, bias +4), so the first observation is the base network's.
    `reset(options={"warmup": (steps, r)})` first gates every conv at budget r and trains the
    backbone and predictors together for `steps` SGD steps (FTWT's own training, what the
    fixed-budget baseline does), charged to the episode's fine-tuning compute; a step that
    leaves a gate's budget unchanged then keeps its trained predictor.

    ## Episode End

    Termination: every gate has been visited. Truncation: never. At the end, with
    `final_report`, `info["final"]` holds the report (`baselines.gating.report`): executed
    latency at batch 1 over `report_images` test images (resized to the deployment shape)
    interleaved with the dense base (its gated blocks' BNs folded, as executed),
    the simulated (masked) execution's latency, simulated and executed FLOPs, mean active
    filters per gate, validation and test accuracy.

    Each step starts the gate's predictor at its new budget's label frequencies, trains the
    backbone (with the predicted masks, which it will execute) and the predictors (towards
    the teacher masks, with their own optimiser, `baselines.gating.network.PredictorTrainer`) for the
    fine-tune steps, fits the predictors alone for `predictor_steps` batches (backbone in
    eval mode, unchanged), all charged to the episode's fine-tuning compute, and calibrates
    each predictor's threshold to fire as often as its teacher
    (`GateEnv.calibrate_predictors`).

    ## Arguments

    Those of `PruneEnv` (cost: latency or flops only), and:

    | name | type | default | meaning |
    |---|---|---|---|
    | predictor_steps | int | 30 | predictor-only batches after each step |
    | predictor_lr | float | 0.01 | predictors' Adam learning rate |
    | cost_samples | int | 256 | validation images the dynamic cost is averaged on |
    | report_images | int | 100 | test images the final latency and FLOPs are averaged on |

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, *, predictor_steps: int = 30, predictor_lr: float = 0.01,
                 cost_samples: int = 256, report_images: int = 100, final_report: bool = True,
                 **kwargs: Any):
        cost = kwargs.get("cost", "latency")
        if cost not in ("latency", "flops"):
            raise ValueError(f"the gating environment's cost is latency or flops, not {cost!r}: "
                             "a dynamic network keeps all its parameters, and its energy per "
                             "image is not metered yet")
        if kwargs.get("correct_episodes"):
            raise ValueError("--correct-episodes times each episode's compact network; "
                             "gating's network is dynamic and timed executed at its end: "
                             "leave the option out")
        self.bench = bench = Bench(**kwargs)
        self.final_report = final_report
        self.predictor_steps = int(predictor_steps)
        self.predictor_lr = float(predictor_lr)
        self.cost_samples = int(cost_samples)
        self.report_images = int(report_images)
        probe = GatedNetwork(bench.base_model)  # also rejects unsupported models
        self.gates = probe.gates
        self._second = {gate for gate in self.gates if probe.is_second(gate)}
        self.action_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, (len(GATE_DESCRIPTOR),), np.float32)
        self.base_shapes = bench.meter.shapes(bench.base_model)
        # each gated conv's share of the base's FLOPs and looked-up latency (fixed)
        flops = {n: s.flops() for n, s in self.base_shapes.items()}
        times = bench.meter.table.layers_ms(self.base_shapes)
        self._shares = {g: (flops[g] / sum(flops.values()), times[g] / sum(times.values()))
                        for g in self.gates}
        self._prev_active = 1.0
        self.state: EpisodeState | None = None

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.bench.generator.manual_seed(int(self.np_random.integers(2**31)))
        gated = GatedNetwork(self.bench.base_model, budget=1.0)
        with torch.no_grad():
            for predictor in gated.predictors.values():
                linear = cast(MaskPredictor, predictor).linear
                linear.weight.zero_()
                linear.bias.fill_(4.0)  # every filter on until trained
        self.trainer = PredictorTrainer(gated, lr=self.predictor_lr, optimizer="adam")
        self.state = EpisodeState(model=gated, accuracy=self.bench.base_accuracy, prev_keep=1.0)
        if options is not None and "warmup" in options:
            self._warm_up_gated(*options["warmup"])
        costs, _ = self.dynamic_costs(gated)
        self.state.cost = costs[self.bench.cost_key]
        self._prev_active = 1.0
        return self._observation(), {"accuracy": self.state.accuracy, **costs}

    def _warm_up_gated(self, steps: int, budget: float) -> None:
        """``reset(options={"warmup": (steps, r)})``: gate every conv at budget r and train
        the backbone and the predictors together for ``steps`` SGD steps, as FTWT trains its
        networks, before the first step (charged to the episode's fine-tuning compute)."""
        state, gated = self._episode()
        with self.bench.meter.computing():
            for gate in self.gates:
                gated.budgets[gate] = float(budget)
                self.start_predictor(gate)
            state.finetune_seconds += self.bench.finetune(gated, steps, grad_hook=self.trainer,
                                                          progress="warm-up")
            state.finetune_seconds += self.fit_predictors(self.predictor_steps)
            self.calibrate_predictors()
            state.accuracy = self.bench.validate(gated)
        state.finetune_steps += int(steps) + self.predictor_steps

    def step(self, action):
        if self.state is None or self.state.step >= len(self.gates):
            raise RuntimeError("call reset() before step(), and again once an episode ends")
        budget, finetune = self._parse_budget(action)
        state, gated, bench = self.state, self.state.model, self.bench
        gate = self.gates[state.step]
        changed = abs(budget - gated.budgets[gate]) > 1e-6  # float32 actions
        gated.budgets[gate] = budget
        steps = round(finetune * bench.max_finetune_steps)
        with bench.meter.computing():  # no latency timing meanwhile, in any process
            if changed:  # a trained predictor (warm-up) keeps what it learned
                self.start_predictor(gate)
            seconds = bench.finetune(gated, steps, grad_hook=self.trainer)
            seconds += self.fit_predictors(self.predictor_steps)
            self.calibrate_predictors()
            accuracy = bench.validate(gated)
        costs, active = self.dynamic_costs(gated)
        reward = step_reward(bench.reward_cfg, bench.base_accuracy, accuracy, state.cost,
                             costs[bench.cost_key], bench.base_cost, finetune)
        width = gated.backbone.get_submodule(gate).out_channels
        self._prev_active = active[gate] / width
        state.accuracy, state.cost = accuracy, costs[bench.cost_key]
        state.prev_keep, state.prev_finetune = budget, finetune
        state.finetune_seconds += seconds
        state.finetune_steps += steps + self.predictor_steps
        state.step += 1
        info = {"accuracy": accuracy, **costs, "cost": state.cost,
                "cost_ratio": state.cost / bench.base_cost, "finetune_steps": steps,
                "gate": gate, "budget": budget, "active": active[gate], "active_filters": active}
        terminated = state.step == len(self.gates)
        if terminated:
            reward += final_reward(bench.reward_cfg, accuracy, state.cost, bench.base_cost,
                                   bench.absolute(state.cost))
            info["episode_finetune_seconds"] = state.finetune_seconds
            info["final"] = self._finish() if self.final_report else None
        state.total_reward += reward
        return self._observation(), float(reward), terminated, False, info

    # ----------------------------------------------------------------- steps
    @property
    def episode_state(self) -> EpisodeState:
        """The episode's state; an error before the first reset."""
        return self._episode()[0]

    def _episode(self) -> tuple[EpisodeState, GatedNetwork]:
        """The running episode's state and its gated network (reset() must have run)."""
        if self.state is None:
            raise RuntimeError("call reset() before using the gating episode")
        return self.state, cast(GatedNetwork, self.state.model)

    def _parse_budget(self, action) -> tuple[float, float]:
        """Check the action; a bad one is a ValueError saying what is expected."""
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.size != 2 or not np.isfinite(values).all():
            raise ValueError("action must be two finite numbers [budget r, fine-tune fraction]")
        if not ((values >= 0.0) & (values <= 1.0)).all():
            raise ValueError(f"action values must lie in [0, 1], got {values.tolist()}")
        return float(values[0]), float(values[1])

    def start_predictor(self, gate: str) -> None:
        """Start the gate's predictor at its new budget's label frequencies (zero weights,
        bias = logit of how often each filter is in the teacher mask on a training batch):
        the best input-blind predictor, from which training learns the input dependence.
        Without it, a predictor that learned "every filter on" at r = 1 takes hundreds of
        steps to come down, and the episode's cost lags far behind its budgets."""
        _, gated = self._episode()
        images, _ = self.bench.train_batch(self.bench.train_cfg.batch_size)
        was = gated.training
        gated.eval()
        with torch.no_grad():
            gated(images, teacher=True)
            freq = gated.last_masks[gate].float().mean(0).clamp(0.02, 0.98)
            linear = gated.predictor(gate).linear
            linear.weight.zero_()
            linear.bias.copy_(torch.log(freq / (1 - freq)))
        gated.train(was)

    def fit_predictors(self, steps: int) -> float:
        """Train the predictors alone for ``steps`` batches: the backbone in eval mode (its
        weights and BN statistics untouched) gives the teacher masks. Returns seconds."""
        if steps <= 0:
            return 0.0
        start = time.perf_counter()
        _, gated = self._episode()
        was = gated.training
        gated.eval()
        batches = itertools.islice(infinite_batches(
            self.bench.data.train, self.bench.train_cfg.batch_size,
            generator=self.bench.generator), steps)
        for step, (images, _) in enumerate(batches):
            gated(images, teacher=True)
            self.trainer(gated, step, steps)
        gated.train(was)
        return time.perf_counter() - start

    def calibrate_predictors(self, images: int = 256) -> None:
        """Shift each predictor's biases so that, on ``images`` training images, it turns on
        as many filters as its teacher masks do (in total over the images).

        A departure from sigmoid > 0.5: a predictor trained for a few dozen batches knows
        the filters' frequencies better than which images need them, and at 0.5 it turns on
        every filter that fires more often than not, so the network runs well above its
        budgets (measured: 0.69 of the base FLOPs where the teacher masks gave 0.60). After
        the shift, which filters fire still follows the predictor's ranking per image."""
        _, gated = self._episode()
        logits: dict[str, torch.Tensor] = {}
        handles = [gated.predictor(g).register_forward_hook(
            lambda _m, _i, out, g=g: logits.__setitem__(g, out)) for g in self.gates]
        was = gated.training
        gated.eval()
        try:
            with torch.no_grad():
                gated(self.bench.data.train.images[:images], teacher=True)
        finally:
            for handle in handles:
                handle.remove()
            gated.train(was)
        with torch.no_grad():
            for gate in self.gates:
                on = int(gated.last_masks[gate].sum())
                flat = logits[gate].flatten().sort(descending=True).values
                if on >= len(flat):
                    continue  # every filter on: the predictor need not change
                # the threshold between the on-th and (on+1)-th largest logit moves to 0
                # (the ignore: torch's stubs type in-place -= as returning a Tensor, but it
                # returns the Parameter itself)
                gated.predictor(gate).linear.bias -= (  # type: ignore[misc]
                    (flat[on - 1] + flat[on]) / 2)

    def dynamic_costs(self, gated: GatedNetwork) -> tuple[dict[str, Any], dict[str, float]]:
        """The dynamic network's costs (see Rewards) and mean active filters per gate, on the
        first `cost_samples` validation images."""
        counted = dynamic_flops(gated, self.bench.data.val.images[: self.cost_samples])
        active = counted["active"]
        shapes = self.mean_width_shapes(active)
        costs = {"latency_ms": self.bench.meter.predict_shapes_ms(shapes),
                 "energy_mj": None, "flops": counted["executed"],
                 "params": count_params(gated)}
        return costs, active

    def cost_of_active(self, active: dict[str, float]) -> float:
        """The cost estimated from mean active filters per gate alone (a budget search's
        estimate): looked-up latency, or FLOPs of the mean widths plus the predictors'."""
        shapes = self.mean_width_shapes(active)
        if self.bench.cost_name == "latency":
            return self.bench.meter.predict_shapes_ms(shapes)
        convs = [cast(nn.Conv2d, self.bench.base_model.get_submodule(g)) for g in self.gates]
        predictors = sum(2 * c.in_channels * c.out_channels for c in convs)
        return sum(s.flops() for s in shapes.values()) + predictors

    def mean_width_shapes(self, active: dict[str, float]) -> dict:
        """The base network's layer shapes with every gated conv at its mean active width
        (its input at the previous gate's, for a branch's second conv)."""
        shapes = dict(self.base_shapes)
        for conv1, conv2 in zip(self.gates[::2], self.gates[1::2], strict=True):
            a1, a2 = (max(1, round(active[g])) for g in (conv1, conv2))
            shapes[conv1] = dataclasses.replace(shapes[conv1], out_channels=a1)
            shapes[conv2] = dataclasses.replace(shapes[conv2], in_channels=a1, out_channels=a2)
        return shapes

    # ----------------------------------------------------------------- observation
    def _observation(self) -> np.ndarray:
        obs = np.zeros(cast(spaces.Box, self.observation_space).shape, np.float32)
        state = self.state
        if state is None or state.step >= len(self.gates):
            return obs
        gate = self.gates[state.step]
        conv = cast(nn.Conv2d, self.bench.base_model.get_submodule(gate))
        shape = self.base_shapes[gate]
        height, width = self.bench.deploy_shape[1:]  # where base_shapes were traced
        area = shape.out_height * shape.out_width / (height * width)
        ratio = state.cost / self.bench.base_cost
        drop = (self.bench.base_accuracy - state.accuracy) / self.bench.reward_cfg.allowed_drop
        obs[:] = [state.step / len(self.gates), float(gate in self._second),
                  conv.in_channels / self.bench.max_in,
                  conv.out_channels / self.bench.max_filters,
                  min(conv.stride[0] / 4, 1), min(area, 1),
                  *self._shares[gate],
                  min(ratio, 1), np.clip(ratio - self.bench.reward_cfg.target, -1, 1),
                  state.accuracy, np.clip(drop, -1, 1), state.prev_keep,
                  state.prev_finetune, self._prev_active]
        return obs

    # ----------------------------------------------------------------- end
    def _finish(self) -> Report:
        state, _ = self._episode()
        report = gate_report(self, state)
        score(self.bench, state.model, report)
        return report
