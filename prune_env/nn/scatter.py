"""Tessier et al.'s adder: residual branches that compute only their own channels.

Where the convs joined by a residual addition carry different masks, surgery first keeps the
union of their channels, each conv's own dropped ones zeroed. With ``coupling="scatter"`` it
then cuts the last conv of each branch to its own channels and makes the block index-add them
into the union at their positions (exported to ONNX as ScatterND): smaller convs, the same
output.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_env.nn.blocks import replace_with_scatter, residual_blocks
from prune_env.nn.layers import Residual


def scatter_branches(model: nn.Module, masks: dict[str, torch.Tensor], bn_of: dict[str, str],
                     outputs: dict[str, list[int]]) -> dict[str, int]:
    """Cut each residual branch's last conv (and its BN) to its own kept channels and make
    the block add them into the union at their positions (Tessier et al.'s adder): our
    `Residual` blocks scatter themselves, blocks of `prune_env.nn.blocks.PATTERNS` whose
    branch is a chain become a `ScatterBlock`.

    After the union step the channels a branch's last conv dropped are zeroed in its BN, so
    the branch adds exactly 0 there: computing them is the work the adder saves.

    Args:
        masks: conv -> its own mask, over its original filters.
        outputs: conv -> the original index of each of its filters left after the union step.
    """
    scattered = {}
    for block in list(residual_blocks(model)):
        module = model.get_submodule(block.name)
        chain = ("branch",) if isinstance(module, Residual) else block.pattern.chain
        if chain is None:
            continue
        last = terminal_conv([(block.child(n), getattr(module, n)) for n in chain], bn_of)
        if last is None or last[0] not in masks:
            continue
        conv_name, conv, bn = last
        own = masks[conv_name][outputs[conv_name]]
        if bool(own.all()):
            continue
        keep = torch.nonzero(own).flatten()
        cut_outputs(conv, bn, keep)
        if isinstance(module, Residual):
            module.scatter = keep
        else:
            replace_with_scatter(model, block, keep)
        scattered[block.name] = int(keep.numel())
    return scattered


def terminal_conv(chain: list[tuple[str, nn.Module]], bn_of: dict[str, str]):
    """(name, conv, its BN or None) when a chain of layers ends with a conv (and its BN),
    looking into a last child that is itself a chain; else None."""
    last_name, last = chain[-1]
    if isinstance(last, nn.Sequential):
        return terminal_conv([(f"{last_name}.{n}", m) for n, m in last.named_children()],
                             bn_of)
    if isinstance(last, nn.Conv2d) and last.groups == 1:
        return last_name, last, None
    if len(chain) >= 2 and isinstance(last, nn.BatchNorm2d):
        conv_name, conv = chain[-2]
        if isinstance(conv, nn.Conv2d) and conv.groups == 1 and bn_of.get(conv_name) == last_name:
            return conv_name, conv, last
    return None


def cut_outputs(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, keep: torch.Tensor) -> None:
    """Keep only the ``keep`` output channels of a conv and its BatchNorm."""
    conv.weight = nn.Parameter(conv.weight.detach()[keep].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[keep].clone())
    conv.out_channels = int(keep.numel())
    if bn is None:
        return
    for name in ("weight", "bias"):
        if getattr(bn, name) is not None:
            setattr(bn, name, nn.Parameter(getattr(bn, name).detach()[keep].clone()))
    for name in ("running_mean", "running_var"):
        if getattr(bn, name) is not None:
            setattr(bn, name, getattr(bn, name)[keep].clone())
    bn.num_features = int(keep.numel())
