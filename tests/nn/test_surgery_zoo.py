"""One network of each pattern users bring (residual, bottleneck, inverted residual with SE,
grouped, shuffle, concat): random masks either give an exact compact network or a
SurgeryError saying why, never another exception nor a different network. (The whole zoo:
scripts/surgery_zoo.py; which of these are exact today: README, "Surgery on the zoo".)"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from prune_env.nn.models import build_model
from prune_env.nn.surgery import SurgeryError, compact_report

CLASSES = 11  # no hidden layer has 11 filters: a conv with 11 is a head (never masked)
PATTERNS = {"resnet50": "bottleneck", "mobilenet_v3_small": "inverted residual + SE",
            "efficientnet_b0": "MBConv + SE", "regnet_y_400mf": "grouped + SE",
            "shufflenet_v2_x0_5": "channel split and shuffle", "squeezenet1_0": "concat",
            "googlenet": "inception concat"}
_models: dict[str, nn.Module] = {}


def model_for(name: str) -> nn.Module:
    if name not in _models:
        torch.manual_seed(0)
        model = build_model(name, 3, CLASSES, (64, 64)).eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-1, 1)
                    m.running_var.uniform_(0.5, 2)
                    m.bias.uniform_(-1, 1)
        _models[name] = model
    return _models[name]


@pytest.mark.parametrize("name", sorted(PATTERNS))
@settings(max_examples=2, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), share=st.floats(0.2, 0.9))
def test_random_masks_are_exact_or_a_clear_refusal(name, seed, share):
    model = model_for(name)
    generator = torch.Generator().manual_seed(seed)
    keep = {}
    for conv, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels not in (1, CLASSES):
            mask = torch.rand(m.out_channels, generator=generator) < share
            mask[0] = True
            keep[conv] = mask
    try:
        result = compact_report(model, keep, torch.randn(2, 3, 64, 64, generator=generator))
    except SurgeryError as err:  # refused: it says what and where
        assert "(please report the model)" in str(err) or "keep" in str(err), err
        return
    # exact: compact_report compared it with the masked network; and it is smaller
    params = sum(p.numel() for p in result.model.parameters())
    assert params < sum(p.numel() for p in model.parameters())
