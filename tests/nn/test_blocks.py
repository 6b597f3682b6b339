"""Residual blocks of torchvision's and smp's networks: found, and their branches removed
exactly, so that a whole block can be dropped from any of them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_env.nn.blocks import Shortcut, residual_blocks
from prune_env.nn.groups import filter_groups
from prune_env.nn.models import build_model
from prune_env.nn.record import from_record, to_record
from prune_env.nn.surgery import compact_report

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
