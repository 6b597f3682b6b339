"""Per-filter features of a group, the part of the observation that says which filters matter.

Four scores per filter, each summed over the group's convs and scaled to [0, 1] by the
group's largest value:

- L1 norm of the filter's weights (Li et al. 2017; `prune_env.nn.importance.L1`);
- |gamma| of its BatchNorm (network slimming, Liu et al. 2017; `~.BNScale`, 0 without one);
- mean |activation| after its BatchNorm on a training batch;
- first-order Taylor score |sum(activation * dL/dactivation)| (Molchanov et al. 2017).

The last two come from one forward and backward pass on one training batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prune_env.data.task import Task
from prune_env.nn.groups import FilterGroup
from prune_env.nn.importance import L1, BNScale

FEATURES = ("l1", "bn_scale", "activation", "taylor")


def filter_features(model: nn.Module, group: FilterGroup, bn_of: dict[str, str],
                    batch: tuple[torch.Tensor, torch.Tensor], task: Task) -> np.ndarray:
    """A (group.size, 4) array of the features above, each column scaled to [0, 1]."""
    feats = np.zeros((group.size, len(FEATURES)), dtype=np.float64)
    watched = {bn_of.get(c, c): (c, idxs) for c, idxs in zip(group.convs, group.local,
                                                                   strict=True)}
    outputs: dict[str, torch.Tensor] = {}

    def keep_output(name):
        def hook(_module, _inputs, out):
            out.retain_grad()
            outputs[name] = out
        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep_output(n)) for n in watched]
    was = model.training
    model.eval()  # BN statistics must not move; gradients still flow
    try:
        images, labels = batch
        loss = task.loss(model(images), labels)
        model.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    feats[:, 0] = L1()(model, group).numpy()
    feats[:, 1] = BNScale(missing="zero")(model, group, bn_of).numpy()
    for name, (_conv, idxs) in watched.items():
        idx = list(idxs)
        out = outputs[name]
        feats[:, 2] += out.detach().abs().mean(dim=(0, 2, 3))[idx].cpu().numpy()
        if out.grad is None:
            raise RuntimeError(f"no gradient reached the output of {name!r}: the task loss "
                               "does not depend on it")
        taylor = (out * out.grad).sum(dim=(2, 3)).abs().mean(0)
        feats[:, 3] += taylor.detach()[idx].cpu().numpy()
    model.zero_grad(set_to_none=True)
    return feats / np.maximum(feats.max(axis=0, keepdims=True), 1e-12)
