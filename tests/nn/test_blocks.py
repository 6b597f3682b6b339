"""Residual blocks of torchvision's and smp's networks: found, and their branches removed
exactly, so that a whole block can be dropped from any of them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_env.nn.blocks import Shortcut, residual_blocks
from prune_env.nn.groups import filter_groups, merge_keep
from prune_env.nn.models import build_model
from prune_env.nn.record import from_record, to_record
from prune_env.nn.surgery import SurgeryError, compact_report, prunable_convs

# network -> (residual blocks, blocks whose branch a group of its own can empty)
NETWORKS = {"resnet18": (8, 8), "resnet50": (16, 16), "mobilenet_v3_small": (6, 6),
            "efficientnet_b0": (9, 9), "regnet_x_400mf": (22, 22)}


def randomised(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, 3, 11, (32, 32)).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.bias.data.uniform_(-1, 1)
    return model


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_removable_group_emptied_leaves_shortcuts_equal_to_the_masked_network(name):
    model = randomised(name)
    blocks = list(residual_blocks(model))
    groups = [g for g in filter_groups(model) if g.removable]
    emptiable = {b.name for b in blocks if any(set(g.convs) <= b.layers for g in groups)}
    assert (len(blocks), len(emptiable)) == NETWORKS[name]
    keep = {}
    for group in groups:
        keep |= group.keep_for(torch.zeros(group.size, dtype=torch.bool))
    result = compact_report(model, keep)  # checked against the masked network by compact
    assert set(result.removed_branches) == emptiable
    assert all(isinstance(result.model.get_submodule(b), Shortcut) for b in emptiable)
    assert not list(residual_blocks(result.model))
    # the compact network is recorded and rebuilt (a checkpoint, an export)
    rebuilt = from_record(to_record(result.model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model(x), atol=1e-5)


def test_a_projected_blocks_constant_is_folded_into_its_shortcut_batchnorm():
    model = randomised("resnet50")
    group = next(g for g in filter_groups(model) if g.leader == "layer2.0.conv2")
    result = compact_report(model, group.keep_for(torch.zeros(group.size, dtype=torch.bool)))
    block = result.model.get_submodule("layer2.0")
    assert isinstance(block, Shortcut) and block.shift is None  # folded: no extra layer
    assert isinstance(block.downsample[1], nn.BatchNorm2d)  # the name did not change


def test_blocks_without_a_shortcut_are_not_residual():
    model = build_model("mobilenet_v2", 3, 11, (32, 32))
    names = [b.name for b in residual_blocks(model)]
    assert len(names) == 10 and "features.2" not in names  # 16 -> 24 channels: no add
    assert all(b.identity for b in residual_blocks(model))


def test_shufflenet_compacts_inside_its_units_and_refuses_filters_through_the_shuffle():
    """Torch-Pruning could not trace ShuffleNetV2's channel shuffle (ZeroDivisionError): the
    shuffle is traced as one layer, the graph ends there, the units' inner convs compact."""
    model = randomised("shufflenet_v2_x0_5")
    prunable = set(prunable_convs(model))
    inner = "stage2.1.branch2.0"  # 1x1 expansion of a stride-1 unit: stays inside it
    through = "stage2.1.branch2.5"  # its last 1x1: its output is concatenated and shuffled
    assert inner in prunable and through not in prunable
    groups = filter_groups(model)
    assert inner in [c for g in groups for c in g.convs]
    assert through not in [c for g in groups for c in g.convs]
    half = torch.arange(24) % 2 == 0
    group = next(g for g in groups if g.leader == inner)  # with the depthwise conv after it
    result = compact_report(model, group.keep_for(half))  # compared with the masked network
    assert result.out_channels[inner] == 12 and result.out_channels["stage2.1.branch2.3"] == 12
    assert type(result.model.get_submodule("stage2.1")).__name__ == "InvertedResidual"
    assert not hasattr(result.model.get_submodule("stage2.1"), "shuffle")
    with pytest.raises(SurgeryError, match="pass through a channel shuffle"):
        compact_report(model, {through: half})


@pytest.mark.parametrize("arch", ["Unet", "DeepLabV3Plus"])
def test_segmentation_models_groups_follow_and_their_encoder_blocks_can_be_removed(arch):
    """smp's networks (weights None): every group halved and one encoder block emptied, as an
    episode would, give an exact network."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = getattr(smp, arch)(encoder_name="resnet18", encoder_weights=None, classes=11)
    model.input_shape = (3, 64, 64)
    groups = filter_groups(model.eval())
    removable = [g for g in groups if g.removable]
    assert len(removable) == 8 and all(g.leader.startswith("encoder.layer") for g in removable)
    keep: dict[str, torch.Tensor] = {}
    for group in groups:
        merge_keep(keep, group.keep_for(torch.arange(group.size) % 2 == 0))
    merge_keep(keep, removable[0].keep_for(torch.zeros(removable[0].size, dtype=torch.bool)))
    result = compact_report(model, keep)  # compared with the masked network
    assert result.removed_branches == ["encoder.layer1.0"]
