"""Filter importance: each criterion's number, computed by hand on a small network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_env.nn.groups import FilterGroup
from prune_env.nn.importance import L1, BNScale, WeightTaylor


def two_convs() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-2.0, 0.5, 1.0]))
    return model


def group(convs: tuple[str, ...]) -> FilterGroup:
    return FilterGroup(leader=convs[0], convs=convs, local=tuple((0, 1, 2) for _ in convs),
                       size=3, removable=False)


def test_l1_sums_or_averages_over_the_group_convs():
    model = two_convs()
    by_hand = [model[i].weight.abs().flatten(1).sum(1).double() for i in (0, 2)]
    assert torch.allclose(L1()(model, group(("0", "2"))), by_hand[0] + by_hand[1])
    assert torch.allclose(L1("mean")(model, group(("0", "2"))), (by_hand[0] + by_hand[1]) / 2)


def test_bn_scale_reads_gamma_and_says_what_it_does_without_one():
    model = two_convs()
    g = group(("0", "2"))
    bn_of = {"0": "1"}
    l1_last = model[2].weight.abs().flatten(1).sum(1).double()
    expected = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(BNScale()(model, g, bn_of), expected + l1_last)
    assert torch.allclose(BNScale(missing="zero")(model, g, bn_of), expected)


def test_weight_taylor_needs_a_backward_pass():
    model = two_convs()
    with pytest.raises(RuntimeError, match="no gradient"):
        WeightTaylor()(model, group(("0",)))
    model(torch.randn(2, 2, 5, 5)).sum().backward()
    w = model[0].weight
    assert torch.allclose(WeightTaylor()(model, group(("0",))),
                          ((w * w.grad).flatten(1).sum(1) ** 2).double().detach())
