"""The tasks' losses and metrics: accuracy, and mIoU agreeing with torchmetrics."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from prune_env.data.datasets import augment_batch
from prune_env.data.task import IGNORE_INDEX, Segmentation, get_task


def one_hot_logits(predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits (B x C x H x W) whose argmax is ``predicted`` (B x H x W)."""
    return torch.nn.functional.one_hot(predicted, classes).permute(0, 3, 1, 2).float()


def test_miou_by_hand():
    """2 classes; class 0: 2 hits, union 3 -> 2/3; class 1: 1 hit, union 2 -> 1/2; the
    ignored pixel counts nowhere (it is predicted 1, which would lower class 1's IoU)."""
    predicted = torch.tensor([[[0, 0, 1], [0, 1, 1]]])
    target = torch.tensor([[[0, 0, 1], [1, IGNORE_INDEX, IGNORE_INDEX]]])
    task = Segmentation(2)
    stats = task.batch_stats(one_hot_logits(predicted, 2), target)
    assert task.class_iou(stats) == pytest.approx([2 / 3, 1 / 2])
    assert task.finalize(stats) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_a_class_in_neither_labels_nor_predictions_has_no_iou():
    predicted = torch.tensor([[[0, 2], [2, 2]]])
    target = torch.tensor([[[0, 2], [2, 0]]])
    task = Segmentation(3)
    stats = task.batch_stats(one_hot_logits(predicted, 3), target)
    assert task.class_iou(stats) == pytest.approx([1 / 2, None, 2 / 3])
    assert task.finalize(stats) == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_miou_summed_over_batches_equals_torchmetrics(seed):
    """Random batches with ignored pixels and an absent class: the statistics summed over
    batches give torchmetrics' mIoU of the whole set."""
    g = torch.Generator().manual_seed(seed)
    classes = 5
    reference = MulticlassJaccardIndex(classes, average="macro", ignore_index=IGNORE_INDEX)
    task = Segmentation(classes)
    total = torch.zeros(classes * classes, dtype=torch.double)
    for _ in range(3):
        logits = torch.randn(4, classes, 6, 7, generator=g)
        target = torch.randint(0, classes - 1, (4, 6, 7), generator=g)  # class 4 never true
        target[torch.rand(4, 6, 7, generator=g) < 0.2] = IGNORE_INDEX
        total += task.batch_stats(logits, target)
        reference.update(logits, target)
    assert task.finalize(total) == pytest.approx(float(reference.compute()), abs=1e-6)


def test_segmentation_loss_ignores_void_pixels():
    task = Segmentation(3)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    target[:, 0, 0] = 1
    loss = task.loss(logits, target)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[:, :, 1:].abs().sum() == 0  # no gradient where the label is void
    assert loss > 0


def test_get_task_names_and_refusals():
    assert get_task("classification", 10).metric == "top1"
    assert get_task("segmentation", 11).metric == "miou"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("detection", 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Segmentation(1)


def test_masks_move_with_their_images_and_padding_is_ignored():
    """Each label stays on its pixel through the flip and the crop; padded pixels get 255."""
    g = torch.Generator().manual_seed(3)
    images = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16) + 1.0
    masks = images.squeeze(1).long()  # a mask equal to the image: they must stay equal
    out, moved = augment_batch(images, masks, generator=g)
    assert moved.shape == masks.shape and moved.dtype == torch.int64
    padding = out.squeeze(1) == 0
    assert padding.any()  # a crop from the padded copy shows some padding
    assert (moved[padding] == IGNORE_INDEX).all()
    assert torch.equal(moved[~padding], out.squeeze(1)[~padding].long())
    # the images alone draw the same flips and crops (classification batches unchanged)
    alone = augment_batch(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(alone, out)
