"""Residual blocks of any network: where a branch is added to a shortcut, and how to drop it.

Surgery can remove a residual branch whose filters were all dropped (the block becomes its
shortcut plus the constant the branch still produced), and the environment offers that as a
"remove the block" action. For that it must know, for a block class, which children form the
branch, which child's output is the branch's output, which child projects the shortcut and
which activation follows the addition. `PATTERNS` says it for our `Residual`, torchvision's
ResNet, ResNeXt, RegNet, MobileNetV2/V3, MNASNet and EfficientNet (V1 and V2) blocks, and the
EfficientNet encoder of segmentation_models_pytorch. Block classes are named by their import
path, so nothing here imports torchvision's or smp's model code.

A removed branch leaves a `Shortcut` where the block was: ``act(shortcut(x) + shift)``, with
the shortcut under the attribute name it had in the block, so that every layer name of the
network stays valid.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from prune_env.nn.layers import ChannelShift


def _always(_block: nn.Module) -> bool:
    return True


def _uses_res_connect(block: nn.Module) -> bool:
    return bool(getattr(block, "use_res_connect", False))


@dataclass(frozen=True)
class BlockPattern:
    """How one block class adds its branch to its shortcut.

    Attributes:
        branch: the children that form the residual branch (activations the block shares
            between its branch and the addition are left out: they hold no filters).
        output: the child whose output the block adds to the shortcut.
        shortcut: the child projecting the shortcut, or None for an identity.
        act: the child applied after the addition, or None.
        adds: whether a given instance adds a shortcut at all (MobileNetV2 blocks that change
            shape do not).
        chain: the children the branch calls one after the other, where it is such a chain
            (what `ScatterBlock` runs); None where the block's forward does more.
    """

    branch: tuple[str, ...]
    output: str
    shortcut: str | None = None
    act: str | None = None
    adds: Callable[[nn.Module], bool] = _always
    chain: tuple[str, ...] | None = None


# stochastic depth is the identity in eval mode, and a deployed network runs in eval mode
_MBCONV = BlockPattern(("block", "stochastic_depth"), "block", adds=_uses_res_connect,
                       chain=("block",))

#: Block class (module path and name) -> how it adds its branch.
PATTERNS: dict[str, BlockPattern] = {
    "prune_env.nn.layers.Residual": BlockPattern(
        ("branch",), "branch", "shortcut", "act", adds=lambda b: b.branch is not None),
    "torchvision.models.resnet.BasicBlock": BlockPattern(
        ("conv1", "bn1", "conv2", "bn2"), "bn2", "downsample", "relu",
        chain=("conv1", "bn1", "relu", "conv2", "bn2")),
    "torchvision.models.resnet.Bottleneck": BlockPattern(
        ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"), "bn3", "downsample", "relu",
        chain=("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3")),
    "torchvision.models.regnet.ResBottleneckBlock": BlockPattern(
        ("f",), "f", "proj", "activation", chain=("f",)),
    "torchvision.models.mobilenetv2.InvertedResidual": BlockPattern(
        ("conv",), "conv", adds=_uses_res_connect, chain=("conv",)),
    "torchvision.models.mobilenetv3.InvertedResidual": BlockPattern(
        ("block",), "block", adds=_uses_res_connect, chain=("block",)),
    "torchvision.models.mnasnet._InvertedResidual": BlockPattern(
        ("layers",), "layers", adds=lambda b: bool(b.apply_residual), chain=("layers",)),
    "torchvision.models.efficientnet.MBConv": _MBCONV,
    "torchvision.models.efficientnet.FusedMBConv": _MBCONV,
    "segmentation_models_pytorch.encoders._efficientnet.MBConvBlock": BlockPattern(
        ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_se_reduce", "_se_expand",
         "_project_conv", "_bn2"), "_bn2",
        adds=lambda b: bool(getattr(b, "_has_drop_connect", False))),
}


@dataclass(frozen=True)
class ResidualBlock:
    """One block of a network that adds a branch to a shortcut.

    Attributes:
        name: the block's module name.
        pattern: how its class adds the branch.
        layers: names of every module inside the branch.
    """

    name: str
    pattern: BlockPattern
    layers: frozenset[str]

    @property
    def output(self) -> str:
        """Name of the module whose output is the branch's output."""
        return self.child(self.pattern.output)

    @property
    def identity(self) -> bool:
        """The shortcut is the block's input itself (no projection)."""
        return self.pattern.shortcut is None

    def child(self, attr: str) -> str:
        return f"{self.name}.{attr}" if self.name else attr


def pattern_of(module: nn.Module) -> BlockPattern | None:
    kind = type(module)
    return PATTERNS.get(f"{kind.__module__}.{kind.__qualname__}")


def residual_blocks(model: nn.Module) -> Iterator[ResidualBlock]:
    """The blocks of ``model`` that add a branch to a shortcut, in module order."""
    for name, module in model.named_modules():
        pattern = pattern_of(module)
        if pattern is None or not pattern.adds(module):
            continue
        if pattern.shortcut is not None and getattr(module, pattern.shortcut) is None:
            pattern = dataclasses.replace(pattern, shortcut=None)  # an identity this time
        prefix = f"{name}." if name else ""
        layers = {f"{prefix}{attr}.{n}".rstrip(".")
                  for attr in pattern.branch if getattr(module, attr, None) is not None
                  for n, _ in getattr(module, attr).named_modules()}
        yield ResidualBlock(name, pattern, frozenset(layers))


class Shortcut(nn.Module):
    """What a residual block becomes once surgery removed its branch:
    ``act(shortcut(x) + shift)``.

    Args:
        shortcut_name: the attribute the shortcut had in the block ("downsample" in
            torchvision's ResNets), kept so that its layers' names do not change; the
            shortcut itself is set as that attribute (None: the identity).
    """

    def __init__(self, shortcut_name: str = "shortcut"):
        super().__init__()
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, None)
        self.shift: ChannelShift | None = None
        self.act: nn.Module | None = None

    def forward(self, x: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
        # extra arguments: smp's EfficientNet encoder passes each block a drop-connect rate
        path = getattr(self, self.shortcut_name)
        out = x if path is None else path(x)
        if self.shift is not None:
            out = self.shift(out)
        return out if self.act is None else self.act(out)


def replace_with_shortcut(model: nn.Module, block: ResidualBlock) -> Shortcut:
    """Put a `Shortcut` (no constant yet) where ``block`` was, and return it."""
    module = model.get_submodule(block.name)
    pattern = block.pattern
    new = Shortcut(pattern.shortcut or "shortcut")
    if pattern.shortcut is not None:
        setattr(new, pattern.shortcut, getattr(module, pattern.shortcut))
    if pattern.act is not None:
        act = copy.deepcopy(getattr(module, pattern.act))  # shared with the branch
        if getattr(act, "inplace", False):  # it would overwrite the block's input
            act.inplace = False
        new.act = act
    parent, _, attr = block.name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)
    return new


class ScatterBlock(nn.Module):
    """A residual block whose branch computes only some of its output's channels and adds
    them at their positions: ``act(shortcut(x).index_add(1, scatter, chain(x)))`` (Tessier et
    al.'s adder; surgery's ``coupling="scatter"`` builds it from a block of `PATTERNS` with a
    chain). The block's children keep their names.

    Args:
        chain: the children the branch calls in order.
        shortcut_name: the child projecting the shortcut, or None for the identity.
        act_name: the child applied after the addition, or None.
        scatter: the output position of each channel the branch computes.
    """

    scatter: torch.Tensor

    def __init__(self, chain: list[str], shortcut_name: str | None, act_name: str | None,
                 scatter: torch.Tensor):
        super().__init__()
        self.chain, self.shortcut_name, self.act_name = list(chain), shortcut_name, act_name
        self.register_buffer("scatter", scatter)

    def forward(self, x: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
        y = x
        for name in self.chain:
            y = getattr(self, name)(y)
        path = getattr(self, self.shortcut_name) if self.shortcut_name else None
        out = (x if path is None else path(x)).index_add(1, self.scatter, y)
        return out if self.act_name is None else getattr(self, self.act_name)(out)


def replace_with_scatter(model: nn.Module, block: ResidualBlock,
                         scatter: torch.Tensor) -> ScatterBlock:
    """Put a `ScatterBlock` holding ``block``'s children where ``block`` was."""
    module = model.get_submodule(block.name)
    pattern = block.pattern
    assert pattern.chain is not None  # callers pick blocks with a chain
    new = ScatterBlock(list(pattern.chain), pattern.shortcut, pattern.act, scatter)
    for name in {*pattern.chain, pattern.shortcut or "", pattern.act or ""} - {""}:
        setattr(new, name, getattr(module, name))
    parent, _, attr = block.name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)
    return new
