"""Model zoo: CIFAR-style ResNet-20/32/56, VGG-11/16-BN, MobileNetV2, a ResNet-20 FCN for
segmentation, and torchvision models.

Every model takes ``in_channels`` and ``num_classes`` from the data set and records its input
shape as ``model.input_shape`` (C, H, W), which surgery and measurement use to trace it.

Departures from the papers, and why:
- ResNet (He et al. 2016, CIFAR variant, 16/32/64 filters, 6n+2 layers) uses projection
  shortcuts (1x1 conv + BN, "option B") at stage entries instead of zero-padded identities
  ("option A"): a padded identity cannot be pruned consistently, a projection can.
- VGG (CIFAR variant) ends with global average pooling and one linear layer, and pools with
  ``ceil_mode`` so that 28x28 inputs (Fashion-MNIST) survive five poolings.
- MobileNetV2 (CIFAR variant) uses stride 1 in the stem and the second stage, as is common
  for 32x32 inputs.
"""

from __future__ import annotations

from typing import cast

import torch
import torchvision
from torch import nn

from prune_env.catalog import OWN_MODELS, SEGMENTATION_MODELS, SMP_ARCHS
from prune_env.nn.device import module_device
from prune_env.nn.layers import Residual


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list:
    """A conv without bias followed by its BatchNorm (the unit that pruning removes filters of)."""
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


def basic_block(cin: int, cout: int, stride: int) -> Residual:
    """ResNet basic block: two 3x3 convs, projection shortcut where the shape changes."""
    branch = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True),
                           *conv_bn(cout, cout, 3, 1))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride))
    return Residual(branch, shortcut, nn.ReLU(inplace=True))


def resnet_cifar(depth: int, in_channels: int, num_classes: int) -> nn.Sequential:
    """CIFAR ResNet with 6n+2 layers (ResNet-20: n=3)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    layers = [*conv_bn(in_channels, 16), nn.ReLU(inplace=True)]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(basic_block(cin, width, stride))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


def vgg_cifar(name: str, in_channels: int, num_classes: int) -> nn.Sequential:
    """VGG with BatchNorm, CIFAR variant (global pooling, one classifier layer)."""
    layers: list[nn.Module] = []
    cin = in_channels
    for item in VGG_CONFIGS[name]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            cout = cast(int, item)  # every entry but "M" is a channel count
            layers += [*conv_bn(cin, cout), nn.ReLU(inplace=True)]
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# (expansion t, output channels c, repeats n, first stride s), CIFAR strides.
MOBILENETV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def inverted_residual(cin: int, cout: int, stride: int, t: int) -> nn.Module:
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""
    hidden = cin * t
    layers: list[nn.Module] = []
    if t != 1:
        layers += [*conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
    layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
               *conv_bn(hidden, cout, 1)]
    branch = nn.Sequential(*layers)
    if stride == 1 and cin == cout:
        return Residual(branch)
    return branch


def mobilenetv2_cifar(in_channels: int, num_classes: int) -> nn.Sequential:
    """MobileNetV2 (Sandler et al. 2018), width 1.0, CIFAR strides."""
    layers: list[nn.Module] = [*conv_bn(in_channels, 32), nn.ReLU6(inplace=True)]
    cin = 32
    for t, c, n, s in MOBILENETV2_SETTINGS:
        for i in range(n):
            layers.append(inverted_residual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [*conv_bn(cin, 1280, 1), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


class ResNetFCN(nn.Module):
    """A small fully convolutional network for fast segmentation tests and the demo: the
    CIFAR ResNet-20 trunk (16, 32, 64 filters) behind a stride-2 stem, so its stages run at
    1/2, 1/4 and 1/8 of the input's resolution, and a light FCN-style decoder: a 3x3 conv on
    the last stage's features, its class scores upsampled to the first stage's size and added
    to class scores read off the first stage (a skip, for sharper boundaries), then upsampled
    to the input's size (bilinear). The two class-score convs are outputs and are never
    pruned; every conv of the trunk and the decoder's 3x3 conv are. The stride-2 stem is the
    one departure from the classifier's trunk: at full resolution the first stage alone cost
    5 s per batch of 256 scenes of 64 x 64 on two CPU cores.
    """

    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        trunk = resnet_cifar(depth, in_channels, num_classes)
        n = (depth - 2) // 6
        cast(nn.Conv2d, trunk[0]).stride = (2, 2)
        self.stem = nn.Sequential(*trunk[:3 + n])  # conv, BN, ReLU and the first stage
        self.deep = nn.Sequential(*trunk[3 + n:3 + 3 * n])  # the second and third stages
        self.decode = nn.Sequential(*conv_bn(64, width), nn.ReLU(inplace=True))
        self.classify = nn.Conv2d(width, num_classes, 1)
        self.skip = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.stem(x)
        scores = self.classify(self.decode(self.deep(shallow)))
        scores = upsample(scores, shallow) + self.skip(shallow)
        return upsample(scores, x)


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized (bilinear) to the height and width of ``like``."""
    return nn.functional.interpolate(x, size=like.shape[-2:], mode="bilinear",
                                     align_corners=False)


def torchvision_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A torchvision classifier by name, untrained, its first conv adapted to in_channels."""
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as err:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(OWN_MODELS)} "
                         "or a torchvision classification model name") from err
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first conv for one with ``in_channels`` inputs (grey-scale data sets)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent = model.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], nn.Conv2d(
                in_channels, module.out_channels, cast("tuple[int, int]", module.kernel_size),
                cast("tuple[int, int]", module.stride),
                cast("str | tuple[int, int]", module.padding), bias=module.bias is not None))
            return


def build_model(name: str, in_channels: int, num_classes: int,
                input_size: tuple[int, int]) -> nn.Module:
    """Build an untrained model by name.

    Args:
        name: one of OWN_MODELS or SEGMENTATION_MODELS, or a torchvision classification
            model (e.g. ``resnet18``).
        in_channels: image channels of the data set.
        num_classes: classes of the data set.
        input_size: (H, W) of the images, recorded as ``model.input_shape``.
    """
    model: nn.Module
    if name in ("resnet20", "resnet32", "resnet56"):
        model = resnet_cifar(int(name[6:]), in_channels, num_classes)
    elif name in VGG_CONFIGS:
        model = vgg_cifar(name, in_channels, num_classes)
    elif name == "mobilenetv2":
        model = mobilenetv2_cifar(in_channels, num_classes)
    elif name == "resnet20-fcn":
        model = ResNetFCN(20, in_channels, num_classes)
    elif name in SEGMENTATION_MODELS:
        from prune_env.nn.segmentation import build_segmentation, check_size

        model = build_segmentation(name, in_channels, num_classes)
        check_size(model, input_size[0], input_size[1],
                   "--image-size (the data's size) gives images of")
    else:
        model = torchvision_model(name, in_channels, num_classes)
    # torch's stubs type Module.__setattr__ values as Tensor | Module; plain attributes work.
    model.input_shape = (in_channels, *input_size)  # type: ignore[assignment]
    # what `prune_env.nn.record` rebuilds the base from (kept by deep copies and surgery)
    model.arch = {"name": name, "in_channels": in_channels, "num_classes": num_classes,
                  "input_size": list(input_size)}  # type: ignore[assignment]  # (as above)
    return model


def check_task(name: str, task: str) -> None:
    """Refuse a classifier on segmentation data and a segmentation network on labels per
    image (either would fail later inside the loss, with a shape error)."""
    segments = name in SEGMENTATION_MODELS
    if not segments and name.partition("-")[0] in SMP_ARCHS:
        raise ValueError(f"unknown segmentation model {name!r}: choose one of "
                         f"{', '.join(SEGMENTATION_MODELS)}")
    if segments and task != "segmentation":
        raise ValueError(f"{name} segments images, but this data set's task is {task}: "
                         f"use --model {OWN_MODELS[0]} (or another classifier) on it")
    if not segments and task == "segmentation":
        raise ValueError(f"{name} is a classifier, but this data set is labelled per pixel: "
                         f"use --model {' or '.join(SEGMENTATION_MODELS)} on it")


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) a model was built for (`build_model` records it)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("model has no input_shape: build it with prune_env.nn.models.build_model "
                         "or set model.input_shape = (C, H, W)")
    return tuple(shape)


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A random input of the model's recorded shape, on the model's device, for tracing and
    timing."""
    shape = input_shape(model)
    # a private generator: tracing must not move the global RNG that agents sample from
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    return x.to(module_device(model))
