"""Segmentation networks of the field, built untrained (nothing is downloaded).

Names (`prune_env.catalog.SEGMENTATION_MODELS`):

- ``ARCH-ENCODER`` from segmentation_models_pytorch: ``unet``, ``fpn`` and ``deeplabv3plus``
  with the ``resnet18``, ``resnet34``, ``mobilenet_v2`` and ``efficientnet-b0`` encoders
  (``encoder_weights=None``), e.g. ``unet-resnet18``; and HRNet-W18-small through smp's timm
  encoders, ``unet-tu-hrnet_w18_small`` and ``fpn-tu-hrnet_w18_small``;
- torchvision's ``fcn_resnet50``, ``deeplabv3_resnet50``, ``deeplabv3_mobilenet_v3_large``
  and ``lraspp_mobilenet_v3_large`` (``weights=None, weights_backbone=None``, no auxiliary
  head), wrapped so that forward returns the score map rather than torchvision's dict (the
  environment, surgery and export take one tensor);
- ``resnet20-fcn``: ours, small and fast (`prune_env.nn.models.ResNetFCN`).

Every one takes the data set's channels (smp's ``in_channels``; torchvision's first conv is
replaced for grey images) and outputs ``num_classes`` scores per pixel at the input's size.
smp's FPN needs input sides divisible by 32 and DeepLabV3+ by 16 (their encoders' output
stride): `check_size` refuses other sizes with that message before anything is trained.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from prune_env.catalog import SMP_ARCHS, SMP_ENCODERS, SMP_TIMM, TORCHVISION_SEGMENTATION


class ScoreMap(nn.Module):
    """A torchvision segmentation network whose forward returns its ``"out"`` score map."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def check_size(model: nn.Module, height: int, width: int, what: str) -> None:
    """Refuse a size an smp network cannot take (its encoder's output stride must divide
    both sides) with what to do, rather than smp's error inside the first forward pass."""
    check = getattr(model, "check_input_shape", None)
    if check is None:
        return
    try:
        check(torch.empty(1, 1, height, width, device="meta"))
    except RuntimeError as err:
        raise ValueError(f"{what} {height}x{width}: {err}") from None


def build_segmentation(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """The untrained segmentation network ``name`` (see the module docstring)."""
    if name in TORCHVISION_SEGMENTATION:
        from prune_env.nn.models import replace_first_conv

        net = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                           num_classes=num_classes, aux_loss=False)
        if in_channels != 3:
            replace_first_conv(net, in_channels)
        return ScoreMap(net)
    arch, _, encoder = name.partition("-")
    if name not in SMP_TIMM and (arch not in SMP_ARCHS or encoder not in SMP_ENCODERS):
        raise ValueError(f"unknown segmentation model {name!r}")
    import segmentation_models_pytorch as smp

    return smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                            in_channels=in_channels, classes=num_classes)
