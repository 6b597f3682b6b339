"""Filter importance: how much each filter of a group matters, by its weights alone.

Small callables in the manner of Torch-Pruning's ``Importance`` objects: each takes the
network, a filter group (`prune_env.nn.groups.FilterGroup`) and the conv -> BatchNorm map, and
returns one score per filter of the group, reduced over the group's convs (``"sum"`` or
``"mean"``, Torch-Pruning's group reduction). They are the one place these criteria live: the
environment's observation features, the uniform allocation, SWD and LayerPrune all use them.
Scores accumulate in float64, so that a group's sum does not depend on the order of its convs
in the last bits.

- `L1`: L1 norm of each filter's weights (Li et al. 2017).
- `BNScale`: |gamma| of the BatchNorm after each filter (network slimming, Liu et al. 2017);
  the filter's L1 norm where a conv has no BatchNorm.
- `WeightTaylor`: (sum over a filter's weights of w * dL/dw)^2, from the gradients the
  weights hold (Molchanov et al. 2019; LayerPrune's block criterion).

Data-dependent scores of the outputs (mean activation, the activation Taylor score) need a
forward and backward pass and live with the observation's features
(`prune_env.envs.features`).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn

from prune_env.nn.groups import FilterGroup

Reduction = Literal["sum", "mean"]


class Importance:
    """Per-filter scores of a group; subclasses score one conv's filters (`conv_scores`)."""

    def __init__(self, reduction: Reduction = "sum"):
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction is 'sum' or 'mean', not {reduction!r}")
        self.reduction = reduction

    def __call__(self, model: nn.Module, group: FilterGroup,
                 bn_of: dict[str, str] | None = None) -> torch.Tensor:
        """A float64 CPU tensor of ``group.size`` scores (larger: more important)."""
        total = torch.zeros(group.size, dtype=torch.float64)
        for conv, idxs in zip(group.convs, group.local, strict=True):
            scores = self.conv_scores(model, conv, (bn_of or {}).get(conv))
            total += scores.detach()[list(idxs)].double().cpu()  # scores live on the host
        return total / len(group.convs) if self.reduction == "mean" else total

    def conv_scores(self, model: nn.Module, conv: str, bn: str | None) -> torch.Tensor:
        raise NotImplementedError


def l1_norms(model: nn.Module, conv: str) -> torch.Tensor:
    """The L1 norm of each filter of ``conv``."""
    weight = cast(nn.Conv2d, model.get_submodule(conv)).weight
    return weight.detach().abs().flatten(1).sum(1)


class L1(Importance):
    """L1 norm of each filter's weights."""

    def conv_scores(self, model: nn.Module, conv: str, bn: str | None) -> torch.Tensor:
        return l1_norms(model, conv)


class BNScale(Importance):
    """|gamma| of the BatchNorm following each filter; where a conv has none, its filters'
    L1 norms (``missing="l1"``, for a ranking over all filters) or zeros (``"zero"``, for a
    feature that says "no BatchNorm")."""

    def __init__(self, reduction: Reduction = "sum", missing: Literal["l1", "zero"] = "l1"):
        super().__init__(reduction)
        self.missing = missing

    def conv_scores(self, model: nn.Module, conv: str, bn: str | None) -> torch.Tensor:
        if bn is not None:
            return cast(nn.BatchNorm2d, model.get_submodule(bn)).weight.detach().abs()
        norms = l1_norms(model, conv)
        return norms if self.missing == "l1" else torch.zeros_like(norms)


class WeightTaylor(Importance):
    """(sum of w * dL/dw over each filter)^2, from the gradients the weights hold."""

    def conv_scores(self, model: nn.Module, conv: str, bn: str | None) -> torch.Tensor:
        weight = cast(nn.Conv2d, model.get_submodule(conv)).weight
        if weight.grad is None:
            raise RuntimeError(f"{conv} holds no gradient: run a backward pass before "
                               "WeightTaylor")
        return (weight * weight.grad).flatten(1).sum(1).detach() ** 2
