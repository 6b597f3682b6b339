"""Training loops: pretraining the base model, fine-tuning after a pruning step, evaluation.

All loops run on in-memory tensors (see `prune_env.data.datasets`) so that on a 2-core CPU the time
goes to the network, not to data loading. They run where the network lives: each batch goes
to its device (without blocking, from pinned memory, when the data stays on the host; a no-op
when the data lives on the device whole).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from prune_env.data.datasets import Split, infinite_batches, iterate_batches
from prune_env.data.task import Task
from prune_env.nn.device import module_device, synchronize

#: Called after ``loss.backward()`` and before ``optimizer.step()`` with (model, step, steps):
#: the hook through which a baseline adds its own penalty gradient (SWD, say).
GradHook = Callable[[nn.Module, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings of a training or fine-tuning run.

    Attributes:
        lr: peak learning rate of SGD with Nesterov momentum 0.9.
        weight_decay: L2 penalty.
        batch_size: images per step.
        augment: random flips and crops.
        schedule: "onecycle" (warm-up then cosine, for pretraining) or "cosine" (decay only,
            for fine-tuning a trained network).
        amp: "bf16": forward and loss in bfloat16 autocast (weights and the optimiser stay in
            float32; no loss scaling needed, unlike float16); "off": float32.
    """

    lr: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    schedule: str = "cosine"
    amp: str = "off"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The mixed-precision context of ``amp`` ("bf16" or "off") on ``device``."""
    if amp not in ("off", "bf16"):
        raise ValueError(f"unknown amp {amp!r}: off or bf16")
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def on(device: torch.device, images: torch.Tensor, labels: torch.Tensor
       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device`` (non-blocking: the copy overlaps the previous step's work)."""
    return (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))


def learning_rate(config: TrainConfig, step: int, steps: int) -> float:
    """The scheduled learning rate at ``step`` of ``steps``."""
    progress = step / max(steps, 1)
    if config.schedule == "onecycle":
        warm = 0.15
        if progress < warm:
            return config.lr * (0.1 + 0.9 * progress / warm)
        progress = (progress - warm) / (1 - warm)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_steps(model: nn.Module, split: Split, task: Task, steps: int, config: TrainConfig,
                generator: torch.Generator, *, grad_hook: GradHook | None = None,
                progress: str | None = None) -> float:
    """Train ``model`` in place for ``steps`` SGD steps; return the seconds spent.

    Args:
        model: the network (left in train mode).
        split: training data.
        task: gives the loss.
        steps: number of optimiser steps (0 does nothing).
        config: optimiser settings.
        generator: seeds batch order and augmentation, for reproducible runs.
        grad_hook: optional extra gradient, see `GradHook`.
        progress: a progress-bar title, or None for no bar.
    """
    if steps <= 0:
        return 0.0
    start = time.perf_counter()
    model.train()
    device = module_device(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    batches = itertools.islice(infinite_batches(split, config.batch_size, generator=generator,
                                                augment=config.augment), steps)
    bar = tqdm(batches, total=steps, desc=progress, disable=progress is None, unit="step")
    for step, (images, labels) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, steps)
        images, labels = on(device, images, labels)
        with autocast(device, config.amp):
            loss = task.loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model, step, steps)
        optimizer.step()
        if step % 20 == 0 and progress is not None:  # .item() waits for the device
            bar.set_postfix(loss=f"{loss.item():.3f}")
    synchronize(device)  # the seconds count the device's work, not just its queueing
    return time.perf_counter() - start


def evaluate(model: nn.Module, split: Split, task: Task, *, batch_size: int = 500,
             limit: int | None = None) -> float:
    """The task's metric of ``model`` on ``split`` (eval mode, no gradients).

    Args:
        limit: score only the first ``limit`` samples (a fixed subset: rewards stay comparable).
    """
    return task.finalize(evaluate_stats(model, split, task, batch_size=batch_size, limit=limit))


def evaluate_stats(model: nn.Module, split: Split, task: Task, *, batch_size: int = 500,
                   limit: int | None = None) -> torch.Tensor:
    """The task's statistics summed over ``split`` (see `evaluate`), e.g. the confusion
    matrix a segmentation report reads each class's IoU from."""
    if split.labels.dim() > 1:  # masks: as many pixels per batch as 500 images of 32 x 32
        batch_size = max(1, batch_size * 32 * 32 // split.labels[0].numel())
    was = model.training
    model.eval()
    stats = None
    n = len(split) if limit is None else min(limit, len(split))
    part = Split(split.images[:n], split.labels[:n])
    device = module_device(model)
    with torch.inference_mode():
        for images, labels in iterate_batches(part, batch_size, shuffle=False):
            images, labels = on(device, images, labels)
            batch = task.batch_stats(model(images), labels)
            stats = batch if stats is None else stats + batch
    model.train(was)
    if stats is None:
        raise ValueError("evaluate needs at least one sample (empty split or limit=0)")
    return stats
