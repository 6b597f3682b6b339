"""One network of each pattern users bring (residual, bottleneck, inverted residual with SE,
grouped, shuffle, concat, ASPP, U-Net): random masks on every prunable conv and one residual
branch emptied give an exact compact network (compact checks it against the masked one and
raises a SurgeryError otherwise). (The whole zoo: scripts/surgery_zoo.py; which of
these are exact today: README, "Surgery on the zoo".)"""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from prune_env.nn.blocks import residual_blocks
from prune_env.nn.models import build_model
from prune_env.nn.surgery import compact_report, prunable_convs

CLASSES = 11  # no hidden layer has 11 filters: a conv with 11 is a head (never masked)
SIZE = 64
PATTERNS = {"resnet18": "residual", "resnet50": "bottleneck",
            "mobilenet_v3_small": "inverted residual + SE", "efficientnet_b0": "MBConv + SE",
            "regnet_y_400mf": "grouped + SE", "shufflenet_v2_x0_5": "channel split and shuffle",
            "squeezenet1_0": "concat",  # GoogLeNet's inception concat: the bench zoo (8 s)
            "smp.Unet": "U-Net skips", "smp.DeepLabV3Plus": "ASPP, separable convs"}
_models: dict[str, nn.Module] = {}


def build(name: str) -> nn.Module:
    if name.startswith("smp."):  # weights None: nothing is downloaded
        model = getattr(smp, name[4:])(encoder_name="resnet18", encoder_weights=None,
                                        classes=CLASSES)
        model.input_shape = (3, SIZE, SIZE)
        return model
    return build_model(name, 3, CLASSES, (SIZE, SIZE))


def model_for(name: str) -> nn.Module:
    if name not in _models:
        torch.manual_seed(0)
        model = build(name).eval()
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
@given(seed=st.integers(0, 2**16), share=st.floats(0.2, 0.9), block=st.integers(0, 99))
def test_random_masks_and_an_emptied_branch_give_an_exact_network(name, seed, share, block):
    model = model_for(name)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    keep = {}
    for conv in prunable_convs(model, x):
        filters = model.get_submodule(conv).out_channels
        if filters not in (1, CLASSES):
            mask = torch.rand(filters, generator=generator) < share
            mask[0] = True
            keep[conv] = mask
    blocks = [b for b in residual_blocks(model) if b.layers & keep.keys()]
    emptied = blocks[block % len(blocks)] if blocks else None
    if emptied is not None:  # its first conv loses every filter: the block must go
        first = next(n for n in keep if n in emptied.layers)
        keep[first] = torch.zeros_like(keep[first])
    result = compact_report(model, keep, x)
    # exact: compact_report compared it with the masked network; and it is smaller
    assert emptied is None or emptied.name in result.removed_branches
    params = sum(p.numel() for p in result.model.parameters())
    assert params < sum(p.numel() for p in model.parameters())
