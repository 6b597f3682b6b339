"""Tasks: what a network is trained for and how it is scored.

The environment, surgery and measurement never assume a classifier head; they ask the task
for its loss and metric. A metric is accumulated as a vector of sums over batches
(`batch_stats`) and turned into one number at the end (`finalize`), so that metrics that are
not averages of per-sample scores (mIoU) fit the same evaluation loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F


class Task(ABC):
    """A learning task: its training loss and its validation metric (higher is better)."""

    name: str
    metric: str

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch."""

    @abstractmethod
    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sums over a batch that `finalize` turns into the metric."""

    @abstractmethod
    def finalize(self, stats: torch.Tensor) -> float:
        """The metric, in [0, 1], from the summed batch statistics."""


class Classification(Task):
    """Image classification scored by top-1 accuracy.

    Example:
        >>> task = Classification()
        >>> stats = task.batch_stats(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        >>> task.finalize(stats)
        0.5
    """

    name = "classification"
    metric = "top1"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        correct = (outputs.argmax(dim=1) == targets).sum()
        return torch.stack([correct.double(), torch.tensor(
            float(targets.numel()), dtype=torch.double, device=correct.device)])

    def finalize(self, stats: torch.Tensor) -> float:
        return float(stats[0] / stats[1].clamp_min(1))


TASKS = {"classification": Classification}


def get_task(name: str) -> Task:
    """The task named ``name`` (only classification for now; segmentation comes next)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]()
