"""Filter groups found from the dependency graph."""

from __future__ import annotations

import pytest
import torch

from prune_env.nn.groups import filter_groups
from prune_env.nn.models import build_model
from prune_env.nn.surgery import compact_report


def test_resnet20_groups():
    groups = filter_groups(build_model("resnet20", 1, 10, (16, 16)))
    assert len(groups) == 12
    stage1 = groups[0]
    assert stage1.convs == ("0", "3.branch.3", "4.branch.3", "5.branch.3")
    assert stage1.size == 16 and not stage1.removable
    assert groups[1].convs == ("3.branch.0",) and groups[1].removable
    assert [g.size for g in groups if not g.removable] == [16, 32, 64]


def test_vgg_groups_are_single_convs_and_the_classifier_is_not_one():
    groups = filter_groups(build_model("vgg11", 1, 10, (28, 28)))
    assert [len(g.convs) for g in groups] == [1] * 8
    assert not any(g.removable for g in groups)


def test_keep_for_maps_a_group_mask_to_each_conv():
    group = filter_groups(build_model("resnet20", 1, 10, (16, 16)))[0]
    mask = torch.arange(16) < 4
    keep = group.keep_for(mask)
    assert set(keep) == set(group.convs)
    assert all(int(m.sum()) == 4 for m in keep.values())


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2", "vgg11"])
def test_groups_from_the_surgery_graph_equal_freshly_traced_ones(arch):
    """The env reuses the dependency graph the surgery pruned with; it must stay exact."""
    model = build_model(arch, 1, 10, (16, 16)).eval()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # several rounds: the graph has seen earlier pruning
        groups = filter_groups(model)
        group = groups[len(groups) // 2]
        mask = torch.rand(group.size, generator=generator) < 0.5
        mask[0] = True
        result = compact_report(model, group.keep_for(mask))
        model = result.model
        assert filter_groups(model, graph=result.graph) == filter_groups(model)
