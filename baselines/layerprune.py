"""LayerPrune (Elkerdawy et al., ACCV 2020): remove whole residual blocks to a latency budget.

Paper: one pass (about an epoch) over the training data accumulates a per-filter criterion
without pruning; a block's importance is the mean criterion over its first conv; the least
important blocks are replaced by their identity shortcut until the latency budget is met
(blocks whose shortcut changes shape are not removable); then the network is fine-tuned. The
"imprinting" variant scores a block by how much a class-mean (imprinted) linear probe on the
pooled features gains after the block over before it (on segmentation, a probe on the
features of sampled pixels, each labelled with its pixel's class).

Here: `block_importance` computes the criterion on the base network (``taylor``:
(sum over a filter's weights of w * dL/dw)^2 per batch, accumulated; ``l1``; ``bn``: |gamma|;
or ``imprinting``), `blocks_to_remove` picks blocks in increasing importance until the
environment's looked-up cost meets its target, and `LayerPrunePolicy` walks the episode,
emptying those blocks' branch groups (the environment then removes the branches, the block
becomes its identity shortcut) and keeping every other filter; the environment's per-step
and final fine-tuning follow, as for every method.

Departures: the pass is ``batches`` batches (default 100 of 64 images, about a tenth of a
Fashion-MNIST epoch: the whole budget of a demo-sized run), and the imprinting probe uses
``probe_images`` training images for the class means and the environment's validation subset
for the accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import nn

from baselines.simple import SimplePolicy
from prune_env.data.datasets import infinite_batches
from prune_env.data.task import IGNORE_INDEX
from prune_env.nn.blocks import residual_blocks
from prune_env.nn.device import module_device
from prune_env.nn.groups import merge_keep
from prune_env.nn.importance import L1, BNScale, WeightTaylor
from prune_env.nn.surgery import compact

CRITERIA = ("taylor", "l1", "bn", "imprinting")


def removable_blocks(env) -> dict[str, str]:
    """Block name -> the leader of a group inside its branch (emptying it removes the
    branch), for the residual blocks with an identity shortcut (`prune_env.nn.blocks`)."""
    blocks: dict[str, str] = {}
    identity = [b for b in residual_blocks(env.bench.base_model) if b.identity]
    for group in env.bench.base_groups:
        if not group.removable:
            continue
        for block in identity:
            if set(group.convs) <= block.layers:
                blocks.setdefault(block.name, group.leader)
    return blocks


def block_importance(env, criterion: str = "taylor", batches: int = 100,
                     probe_images: int = 1000, seed: int = 0) -> dict[str, float]:
    """Each removable block's importance (larger: keep), see the module docstring."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    blocks = removable_blocks(env)
    model = env.bench.base_model
    if criterion == "imprinting":
        return imprinting_gain(env, list(blocks), probe_images, seed)
    if criterion in ("l1", "bn"):  # of each block's first conv, averaged over its filters
        importance = L1() if criterion == "l1" else BNScale()
        return {b: float(importance.conv_scores(model, c, env.bn_of.get(c)).mean())
                for b, c in blocks.items()}
    return taylor(env, blocks, batches, seed)


def taylor(env, blocks: dict[str, str], batches: int, seed: int) -> dict[str, float]:
    """Mean over each block's first conv of (sum_w w * dL/dw)^2 per filter, accumulated."""
    model = env.bench.base_model
    importance = WeightTaylor()
    total = {b: torch.zeros(cast(nn.Conv2d, model.get_submodule(c)).out_channels,
                            device=module_device(model)) for b, c in blocks.items()}
    generator = torch.Generator().manual_seed(seed)
    data = infinite_batches(env.bench.data.train, env.bench.train_cfg.batch_size,
                            generator=generator)
    was = model.training
    model.eval()  # the base network's BN statistics must not move: every episode starts there
    try:
        for _, (images, labels) in zip(range(batches), data, strict=False):
            model.zero_grad(set_to_none=True)
            images, labels = images.to(module_device(model)), labels.to(module_device(model))
            env.bench.task.loss(model(images), labels).backward()
            for b, c in blocks.items():
                total[b] += importance.conv_scores(model, c, None)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {b: float(t.mean()) for b, t in total.items()}


def imprinting_gain(env, blocks: list[str], images: int, seed: int) -> dict[str, float]:
    """Accuracy of a class-mean probe on the pooled output of each block minus on its input
    (segmentation: on the feature vectors of pixels, each labelled with its pixel's class)."""
    model = env.bench.base_model
    generator = torch.Generator().manual_seed(seed)
    train_split, val_split = env.bench.data.train, env.bench.data.val
    idx = torch.randperm(len(train_split), generator=generator)[:images]
    val_n = env.bench.val_samples or len(val_split)
    train = block_features(model, blocks, train_split.images[idx], train_split.labels[idx])
    val = block_features(model, blocks, val_split.images[:val_n], val_split.labels[:val_n])
    gain = {}
    for b in blocks:
        acc = [probe_accuracy(*train[b][k], *val[b][k]) for k in (0, 1)]
        gain[b] = acc[1] - acc[0]
    return gain


#: Pixels per image a segmentation probe samples (a regular grid over each feature map):
#: enough for class means, few enough to hold features of many images at any resolution.
PROBE_PIXELS = 256

Probe = tuple[torch.Tensor, torch.Tensor]  # feature vectors (P x C), their labels (P)


def block_features(model: nn.Module, blocks: list[str], images: torch.Tensor,
                   labels: torch.Tensor) -> dict[str, tuple[Probe, Probe]]:
    """block -> (features and labels of its input, of its output) for ``images``: one pooled
    vector per image with its label, or, when ``labels`` are masks, one vector per sampled
    pixel with that pixel's label (void pixels left out)."""
    found: dict[str, list[list[Probe]]] = {b: [[], []] for b in blocks}
    chunk_labels: list[torch.Tensor] = []

    def hook(name):
        def record(_module, inputs, out):
            for k, features in enumerate((inputs[0], out)):
                found[name][k].append(probe_samples(features, chunk_labels[-1]))
        return record

    handles = [model.get_submodule(b).register_forward_hook(hook(b)) for b in blocks]
    was = model.training
    model.eval()
    device = module_device(model)
    try:
        with torch.no_grad():
            for chunk, chunk_y in zip(images.split(500), labels.split(500), strict=True):
                chunk_labels.append(chunk_y.to(device))
                model(chunk.to(device))
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    return {b: tuple((torch.cat([x for x, _ in part]), torch.cat([y for _, y in part]))
                     for part in v) for b, v in found.items()}  # type: ignore[misc]


def probe_samples(features: torch.Tensor, labels: torch.Tensor) -> Probe:
    """The probe's samples of one batch of features (B x C x h x w)."""
    if labels.dim() == 1:
        return features.mean((2, 3)), labels
    h, w = features.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / PROBE_PIXELS)))
    masks = nn.functional.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")
    y = masks[:, 0, ::step, ::step].long().flatten()
    x = features[:, :, ::step, ::step].permute(0, 2, 3, 1).reshape(y.numel(), -1)
    valid = y != IGNORE_INDEX
    return x[valid], y[valid]


def probe_accuracy(train_x, train_y, val_x, val_y) -> float:
    """Accuracy of the imprinted classifier: normalised class means, cosine similarity."""
    train_x = nn.functional.normalize(train_x, dim=1)
    classes = int(max(train_y.max(), val_y.max())) + 1
    weights = torch.zeros(classes, train_x.shape[1], device=train_x.device).index_add_(
        0, train_y, train_x)
    weights = nn.functional.normalize(weights, dim=1)
    predicted = (nn.functional.normalize(val_x, dim=1) @ weights.T).argmax(1)
    return float((predicted == val_y).float().mean())


def blocks_to_remove(env, importance: dict[str, float]) -> list[str]:
    """The least important blocks, in order, until the looked-up cost meets the target (all
    removable blocks when even that misses it)."""
    leaders = removable_blocks(env)
    removed: list[str] = []
    # .get never misses here: the keys are importance's own
    for block in sorted(importance, key=cast("Callable[[str], float]", importance.get)):
        if cost_without(env, [leaders[b] for b in removed]) <= env.bench.aim:
            break
        removed.append(block)
    return removed


def cost_without(env, leaders: list[str]) -> float:
    """Looked-up cost ratio of the base network with these branch groups emptied."""
    keep: dict[str, torch.Tensor] = {}
    for group in env.bench.base_groups:
        if group.leader in leaders:
            merge_keep(keep, group.keep_for(torch.zeros(group.size, dtype=torch.bool)))
    model = compact(env.bench.base_model, keep) if keep else env.bench.base_model
    return env.bench.meter.costs(model)[env.bench.cost_key] / env.bench.base_cost


class LayerPrunePolicy(SimplePolicy):
    """Empties the chosen blocks' branch groups, keeps every other filter.

    Args:
        leaders: every group's leader in the environment's order (``env.bench.base_groups``); the
            observation's progress entry says which one is current.
        drop: the leaders of the branch groups to empty.
    """

    def __init__(self, max_filters: int, leaders: list[str], drop: list[str],
                 finetune: float = 0.2):
        super().__init__(max_filters, finetune)
        self.leaders, self.drop = leaders, set(drop)

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        leader = self.leaders[round(float(obs[0]) * len(self.leaders))]
        return np.full(n, leader not in self.drop, dtype=np.int8)
