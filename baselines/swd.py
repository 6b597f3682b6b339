"""SWD, Selective Weight Decay (Tessier et al., J. Imaging 2022), structured, in the env.

Paper: train with loss + mu/2 ||w||^2 + a * mu/2 ||w * (1 - m)||^2, where m masks what would
survive if pruning happened now at the final rate (structured: one global threshold on the BN
scales |gamma|, the filters feeding the pruned BN channels masked with them), recomputed as
training goes, and ``a`` growing exponentially per batch from a_min to a_max; at the end the
mask is applied and little or no fine-tuning is needed.

Here: the environment's ``warmup`` reset option runs that training (`SWDPenalty` applies the
selective term after each backward pass; plain weight decay is the fine-tuning optimiser's
own), then `SWDPolicy` walks the episode and keeps, in each group, the filters
SWD spared: their BN scale, the observation's ``bn_scale`` feature, is still alive.

Departures, and why:
- The global threshold is set so that the *looked-up cost* (latency by default) of the
  network pruned at it meets the environment's target, not a parameter count: the
  environment's target is a cost. It is found by bisection on the number of filters kept.
- A filter's score is its mean |gamma| over the BNs of its group (coupled convs of a residual
  stage share one index), so coupled filters are kept or dropped together, as they must be.
- The budget is the environment's: ``steps`` SGD steps at its fine-tuning learning rate (the
  paper trains a full schedule at lr 0.1), with mu = 5e-4, a_min = 0.1, a_max = 1e5 (the
  authors' code defaults); the mask is recomputed every ``every`` steps.
- The selective term is applied as a decoupled decay, w <- w * (1 - lr * a * mu) on the
  masked weights (conv filters, BN scale and shift) at the peak learning rate, not as a
  gradient: the environment's short fine-tuning anneals its learning rate to 0 (cosine), so a
  gradient penalty would vanish exactly when ``a`` is largest, and a few hundred steps would
  never drive the masked filters to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines.simple import SimplePolicy
from prune_env.envs.target import largest_count
from prune_env.nn.groups import merge_keep
from prune_env.nn.importance import BNScale
from prune_env.nn.surgery import compact


@dataclass(frozen=True)
class SWDConfig:
    """SWD's hyper-parameters (see the module docstring)."""

    steps: int = 300
    mu: float = 5e-4
    a_min: float = 0.1
    a_max: float = 1e5
    every: int = 20


class SWDPenalty:
    """The selective weight decay, a `prune_env.training.loop.GradHook` (called after each
    backward pass).

    Args:
        env: the unwrapped `PruneEnv` (its groups, BN map, cost meter and target).
        config: SWD's hyper-parameters.
    """

    def __init__(self, env, config: SWDConfig = SWDConfig()):
        self.env = env
        self.config = config
        self.dropped: dict[str, torch.Tensor] = {}  # conv -> its filters outside the mask
        self.history: list[float] = []  # masked filters' mean |w| at each recompute and end

    def strength(self, step: int, steps: int) -> float:
        """a(s) = a_min * (a_max / a_min) ** (s / S)."""
        c = self.config
        return c.a_min * (c.a_max / c.a_min) ** (step / max(steps - 1, 1))

    def __call__(self, model: nn.Module, step: int, steps: int) -> None:
        if step % self.config.every == 0:
            self.dropped = self.mask(model)
            self.history.append(self.dropped_norm(model))
        # decoupled: w <- w * (1 - lr * a * mu) at the peak learning rate (see the docstring)
        lr = self.env.bench.train_cfg.lr
        keep = max(0.0, 1.0 - lr * self.strength(step, steps) * self.config.mu)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for conv, dropped in self.dropped.items():
                bn = self.env.bn_of.get(conv)
                for module in (modules[conv], modules[bn] if bn else None):
                    if module is None:
                        continue
                    for param in (module.weight, getattr(module, "bias", None)):
                        if param is not None:
                            param[dropped] *= keep
        if step == steps - 1:
            self.history.append(self.dropped_norm(model))

    def scores(self, model: nn.Module) -> list[torch.Tensor]:
        """Each group's per-filter mean |gamma| over its BNs (L1 norm where a conv has none)."""
        importance = BNScale(reduction="mean")
        return [importance(model, group, self.env.bn_of) for group in self.env.bench.base_groups]

    def mask(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Per conv, the filters a global |gamma| threshold drops so the cost meets target
        (the most filters kept that meet it, `prune_env.envs.target.largest_count`)."""
        scores = self.scores(model)
        flat = torch.cat(scores)
        order = torch.argsort(flat, descending=True)
        kept = largest_count(lambda n: self.meets(model, scores, flat[order[n - 1]]),
                             1, len(flat))
        return {conv: ~keep for conv, keep in self.keep(scores, flat[order[kept - 1]]).items()}

    def keep(self, scores: list[torch.Tensor], threshold) -> dict[str, torch.Tensor]:
        """Per conv, the filters at or above ``threshold`` (a group that cannot be emptied
        keeps its best filter, as the environment would)."""
        keep: dict[str, torch.Tensor] = {}
        for group, score in zip(self.env.bench.base_groups, scores, strict=True):
            mask = score >= threshold
            if not mask.any() and not group.removable:
                mask[int(torch.argmax(score))] = True
            merge_keep(keep, group.keep_for(mask))
        return keep

    def meets(self, model: nn.Module, scores: list[torch.Tensor], threshold) -> bool:
        bench = self.env.bench
        cost = bench.meter.costs(compact(model, self.keep(scores, threshold)))[bench.cost_key]
        return cost <= bench.aim * bench.base_cost

    def dropped_norm(self, model: nn.Module) -> float:
        """Mean |w| of the conv filters currently outside the mask (what SWD drives down)."""
        modules = dict(model.named_modules())
        norms = [modules[c].weight.detach()[d].abs().mean() for c, d in self.dropped.items()
                 if d.any()]
        return float(torch.stack(norms).mean()) if norms else 0.0


class SWDPolicy(SimplePolicy):
    """After the SWD warm-up: keep the filters whose BN scale survived it.

    A filter SWD dropped has its |gamma| driven to about 1e-3 of the group's largest or less;
    ``alive`` is the relative scale below which a filter counts as dropped.
    """

    def __init__(self, max_filters: int, finetune: float = 0.0, alive: float = 0.05):
        super().__init__(max_filters, finetune)
        self.alive = alive

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        return (self.layout.feature(obs, "bn_scale") > self.alive).astype(np.int8)
