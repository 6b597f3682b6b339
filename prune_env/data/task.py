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

#: The label of pixels no loss or metric counts (Cityscapes' void classes, crops' padding).
IGNORE_INDEX = 255


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


class Segmentation(Task):
    """Semantic segmentation scored by mean intersection over union (mIoU).

    The loss is per-pixel cross-entropy; pixels labelled ``ignore_index`` (255: Cityscapes'
    void classes) count in neither the loss nor the metric. The statistics are the confusion
    matrix (torchmetrics' ``multiclass_confusion_matrix``, rows the true classes), summed over
    batches; the mIoU averages the classes that occur in the labels or the predictions, as
    torchmetrics' ``MulticlassJaccardIndex(average="macro")`` does (a class absent from both
    has no IoU, rather than an IoU of 0 or 1).

    Example:
        >>> task = Segmentation(2)
        >>> logits = torch.tensor([[[[2.0, 2.0]], [[0.0, 0.0]]]])  # predicts class 0 twice
        >>> task.finalize(task.batch_stats(logits, torch.tensor([[[0, 1]]])))  # (1/2 + 0) / 2
        0.25
    """

    name = "segmentation"
    metric = "miou"

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, ignore_index=self.ignore_index)

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        confusion = multiclass_confusion_matrix(
            outputs.argmax(dim=1), targets, self.num_classes, ignore_index=self.ignore_index,
            validate_args=False)
        return confusion.flatten().double()

    def finalize(self, stats: torch.Tensor) -> float:
        present = [iou for iou in self.class_iou(stats) if iou is not None]
        return sum(present) / len(present) if present else 0.0

    def class_iou(self, stats: torch.Tensor) -> list[float | None]:
        """Each class's IoU (None where the class is in neither the labels nor the
        predictions), from the summed statistics."""
        confusion = stats.view(self.num_classes, self.num_classes)
        hits = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - hits
        return [float(h / u) if u > 0 else None for h, u in zip(hits, union, strict=True)]


TASKS = ("classification", "segmentation")


def get_task(name: str, num_classes: int) -> Task:
    """The task named ``name`` for a data set of ``num_classes`` classes."""
    if name == "classification":
        return Classification()
    if name == "segmentation":
        return Segmentation(num_classes)
    raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
