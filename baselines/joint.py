"""Joint end-to-end filter masks (Elkerdawy et al., ICIP 2019), structured, in the environment.

Paper (its abstract: the public code is TensorFlow inference only): a binary mask per filter,
learned jointly over all layers together with the network, under a compression loss; a VGG
monocular-depth network went from 31.6M to 7.5M parameters. Training details are not public;
a straight-through estimator is the defensible reading (shared/METHODS.md).

Here:
- Every filter of every environment group gets a logit, 1 to 3 at the start by the rank of
  its BatchNorm scale in its group (every filter kept, the least important nearest 0). The forward pass multiplies each group conv's output, after its
  BatchNorm (where surgery's masked network zeroes a dropped filter), by the binary mask
  m = 1[logit > 0]; the backward pass treats m as sigmoid(logit) (straight-through), so the
  task loss tells each logit how much its filter is worth.
- The compression loss is ``weight * relu(C(m) / C_base - target)``: C is the cost of the
  network under the masks, each conv's cost (the environment's latency table entry, or its
  FLOPs for the other costs, at the deployment shape) scaled by the kept fraction of its
  filters and of its input channels (Torch-Pruning's dependency graph says which group feeds
  which conv; a depthwise conv scales with its filters only), with the same
  straight-through masks: its value is the binary masks' cost, so it stops pulling once they
  meet the target, and its gradient reaches every logit. It is a bilinear model of the cost
  (exact for FLOPs); the table's latency is not bilinear in channels, which is why the final
  mask is checked against the looked-up cost (below).
- Both are trained in the environment's warm-up (``reset(options={"warmup": ...})``): the
  network's weights by the environment's fine-tuning SGD, the logits in the gradient hook by
  a step of ``lr`` along their gradient divided by its largest entry. Not Adam: Adam moves
  every logit by about lr whatever its gradient, so the logits of filters that cost the same
  would all cross 0 together; one global scale keeps their order (cost saved against
  usefulness to the task) and the pace (the fastest logit moves ``lr`` per step). The masks apply only during the warm-up; the episode then
  walks the groups and drops, in each, the filters whose logit ended at or below 0 (a policy
  like any other, so surgery makes the network physically smaller and the environment costs
  it). Where the learned masks miss the target on the looked-up cost, the filters with the
  lowest logits are dropped first until it is met (one global threshold, as SWD's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from baselines.simple import SimplePolicy
from prune_env.envs.target import OutOfReach, largest_count
from prune_env.nn.groups import FilterGroup, merge_keep
from prune_env.nn.importance import BNScale
from prune_env.nn.models import example_input
from prune_env.nn.surgery import compact, dependency_graph, split_group


@dataclass(frozen=True)
class JointConfig:
    """steps: warm-up SGD steps; weight: the compression loss's weight; init: the logits'
    start; lr: how far the fastest logit moves per step."""

    steps: int = 300
    weight: float = 5.0
    init: float = 3.0
    lr: float = 0.05


@dataclass
class JointHistory:
    """Per logged step: the masks' cost ratio (the model's), the share of filters masked, the
    compression loss."""

    step: list[int] = field(default_factory=list)
    cost_ratio: list[float] = field(default_factory=list)
    masked: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


class JointMasks:
    """The masks, their training (a `prune_env.training.loop.GradHook`) and their cost model.

    Args:
        env: the unwrapped `PruneEnv` (its groups, BN map, meter and target).
    """

    def __init__(self, env, config: JointConfig = JointConfig()):
        self.env, self.config = env, config
        self.groups: list[FilterGroup] = env.bench.base_groups
        self.logits = self._initial_logits(env.bench.base_model)
        self.history = JointHistory()
        self._handles: list = []
        self._cost_model(env.bench.base_model)

    def _initial_logits(self, model: nn.Module) -> list[torch.Tensor]:
        """Each group's logits from ``init / 3`` (its smallest |gamma|) to ``init`` (its
        largest), by rank: filters that cost the same then cross 0 one after the other,
        least important first, and the task's gradient reorders them as it learns (all from
        one value, they crossed together: the cost's pull is the same for the whole group)."""
        importance = BNScale(reduction="mean")
        logits = []
        for group in self.groups:
            scores = importance(model, group, self.env.bench.base_bn_of)
            rank = torch.argsort(torch.argsort(scores)).float() / max(group.size - 1, 1)
            start = self.config.init * (1 + 2 * rank) / 3
            logits.append(start.clone().requires_grad_(True))
        return logits

    # ------------------------------------------------------------- the masks in the network
    def attach(self, model: nn.Module) -> nn.Module:
        """Mask ``model``'s group convs' outputs (the environment's ``wrap`` option)."""
        bn_of = self.env.bench.base_bn_of
        for index, group in enumerate(self.groups):
            for conv, local, width in zip(group.convs, group.local, group.widths, strict=True):
                where = model.get_submodule(bn_of.get(conv, conv))
                self._handles.append(where.register_forward_hook(
                    self._masker(index, list(local), width)))
        return model

    def detach(self, model: nn.Module) -> nn.Module:
        """Remove the masks again (the environment's ``deploy`` option)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return model

    def masks(self) -> list[torch.Tensor]:
        """Each group's binary mask, with the straight-through gradient of the sigmoid."""
        return [binary(logits) for logits in self.logits]

    def _masker(self, index: int, local: list[int], width: int):
        def hook(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
            ste = binary(self.logits[index])  # this group's only: hooks run every forward
            mask = torch.ones(width, device=out.device).index_copy(
                0, torch.tensor(local, device=out.device), ste.to(out.device))
            return out * mask.view(1, -1, 1, 1)
        return hook

    # ------------------------------------------------------------- training
    def __call__(self, model: nn.Module, step: int, steps: int) -> None:
        """After each backward pass: the compression loss's gradient joins the task's on the
        logits, which step along it (scaled by its largest entry)."""
        ratio = self.cost_ratio(self.masks())
        loss = self.config.weight * torch.relu(ratio - self.env.bench.aim)
        if loss.requires_grad:
            loss.backward()
        grads = [s.grad if s.grad is not None else torch.zeros_like(s) for s in self.logits]
        largest = float(torch.cat(grads).abs().max())
        with torch.no_grad():
            for logits, grad in zip(self.logits, grads, strict=True):
                if largest > 0:
                    logits -= self.config.lr * grad / largest
                logits.grad = None
        if step % 10 == 0 or step == steps - 1:
            h = self.history
            h.step.append(step)
            h.cost_ratio.append(float(ratio.detach()))
            h.masked.append(float(torch.cat([(s <= 0).float() for s in self.logits]).mean()))
            h.loss.append(float(loss.detach()))

    # ------------------------------------------------------------- the cost model
    def _cost_model(self, model: nn.Module) -> None:
        """Each conv's cost, and which groups' filters make its outputs and its inputs."""
        meter = self.env.bench.meter
        shapes = {n: s for n, s in meter.shapes(model).items() if s.kind == "conv"}
        cost = (meter.table.layers_ms(shapes) if self.env.bench.cost_name == "latency"
                else {n: float(s.flops()) for n, s in shapes.items()})
        self.cost = {n: cost[n] for n in shapes}
        self.depthwise = {n for n, s in shapes.items() if s.groups > 1}
        self.width_in = {n: s.in_channels for n, s in shapes.items()}
        self.width_out = {n: s.out_channels for n, s in shapes.items()}
        # a conv may hold filters of several groups (a depthwise conv after a concatenation)
        self.makes: dict[str, list[int]] = {}
        for i, group in enumerate(self.groups):
            for conv in group.convs:
                self.makes.setdefault(conv, []).append(i)
        self.feeds: dict[str, list[tuple[int, list[int]]]] = {n: [] for n in shapes}
        graph = dependency_graph(model, example_input(model, 2))
        names = {m: n for n, m in model.named_modules()}
        for index, group in enumerate(self.groups):
            leader = model.get_submodule(group.leader)
            pruning = graph.get_pruning_group(leader, graph.get_pruner_of_module(
                leader).prune_out_channels, list(range(group.size)))
            for module, _idxs, roots in split_group(graph, pruning)[1]:
                name = names[module]
                if name in self.feeds:
                    self.feeds[name].append((index, roots))

    def cost_ratio(self, soft: list[torch.Tensor]) -> torch.Tensor:
        """The cost under per-group masks (binary or soft), as a fraction of the unmasked
        cost."""
        total = torch.zeros(())
        for conv, cost in self.cost.items():
            made = self.makes.get(conv, [])
            kept = sum((soft[i].sum() for i in made), torch.zeros(()))
            width = self.width_out[conv]
            out = (kept + width - sum(self.groups[i].size for i in made)) / width
            if conv in self.depthwise:
                total = total + cost * out
                continue
            fed = sum((soft[i][roots].sum() for i, roots in self.feeds[conv]),
                      torch.zeros(()))
            from_groups = sum(len(roots) for _, roots in self.feeds[conv])
            inputs = (fed + self.width_in[conv] - from_groups) / self.width_in[conv]
            total = total + cost * out * inputs
        return total / sum(self.cost.values())

    # ------------------------------------------------------------- the final masks
    def final_masks(self, model: nn.Module) -> dict[str, np.ndarray]:
        """group leader -> the filters kept: the learned masks where their looked-up cost
        meets the target, else the highest logits that do (one global threshold)."""
        scores = [s.detach() for s in self.logits]
        learned = [s > 0 for s in scores]
        if not self._meets(model, learned):
            flat = torch.sort(torch.cat(scores), descending=True).values
            count = largest_count(lambda n: self._meets(model, self._top(scores, flat[n - 1])),
                                  1, len(flat))
            learned = self._top(scores, flat[count - 1])
        return {g.leader: m.numpy().astype(np.int8) for g, m in zip(self.groups, learned,
                                                                      strict=True)}

    def check_reachable(self, model: nn.Module) -> None:
        """Refuse, before any training, a target that one filter per group still misses
        (the fewest the episode can keep).

        Raises:
            OutOfReach: saying to raise the target.
        """
        if not self._meets(model, [torch.zeros(g.size, dtype=torch.bool) for g in self.groups]):
            raise OutOfReach(f"joint: target {self.env.bench.reward_cfg.target} is out of "
                             "reach even with the fewest filters the episode can keep (one "
                             "per group, removable blocks removed): raise --target")

    @staticmethod
    def _top(scores: list[torch.Tensor], threshold: torch.Tensor) -> list[torch.Tensor]:
        return [s >= threshold for s in scores]

    def _meets(self, model: nn.Module, masks: list[torch.Tensor]) -> bool:
        keep: dict[str, torch.Tensor] = {}
        for group, mask in zip(self.groups, masks, strict=True):
            if not mask.any() and not group.removable:  # the environment keeps one
                mask = mask.clone()
                mask[0] = True
            merge_keep(keep, group.keep_for(mask))
        bench = self.env.bench
        cost = bench.meter.costs(compact(model, keep))[bench.cost_key]
        return cost <= bench.aim * bench.base_cost


def binary(logits: torch.Tensor) -> torch.Tensor:
    """1[logits > 0], with the straight-through gradient of the sigmoid."""
    soft = torch.sigmoid(logits)
    return (logits > 0).float() + soft - soft.detach()


class JointMaskPolicy(SimplePolicy):
    """Keeps, in each group, the filters the joint masks kept.

    Args:
        leaders: every group's leader in the environment's order; the observation's progress
            entry says which one is current.
        masks: leader -> its group's kept filters (1) and dropped ones (0); set by `deploy`
            once the warm-up has trained them.
    """

    def __init__(self, max_filters: int, leaders: list[str], joint: JointMasks,
                 finetune: float = 0.2):
        super().__init__(max_filters, finetune)
        self.leaders, self.joint = leaders, joint
        self.masks: dict[str, np.ndarray] = {}

    def deploy(self, model: nn.Module) -> nn.Module:
        """The environment's ``deploy`` option: the masks leave the network and become this
        policy's decisions."""
        self.joint.detach(model)
        self.masks = self.joint.final_masks(model)
        return model

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        leader = self.leaders[round(float(obs[0]) * len(self.leaders))]
        return self.masks[leader][:n]
