"""Building blocks that surgery understands: residual blocks and per-channel shifts.

A `Residual` block computes ``act(branch(x) + shortcut(x))``. Keeping the branch and the
shortcut as named children lets surgery remove a branch whose filters were all dropped:
the block then becomes its shortcut plus the constant the branch still produced (the BN
shift), held by a `ChannelShift` or folded into the shortcut's BatchNorm.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


class ChannelShift(nn.Module):
    """Adds a learned constant per channel: ``y = x + shift[c]``.

    What remains of a residual branch once all its filters are dropped: in eval mode the
    branch's output no longer depends on its input, so it is a per-channel constant.

    Example:
        >>> shift = ChannelShift(torch.tensor([1.0, -2.0]))
        >>> shift(torch.zeros(1, 2, 1, 1)).flatten().tolist()
        [1.0, -2.0]
    """

    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.shift = nn.Parameter(shift.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = [1, -1] + [1] * (x.dim() - 2)
        return x + self.shift.view(view)


class ChannelShiftPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler for `ChannelShift`: its input and output channels are coupled."""

    def prune_out_channels(self, layer: ChannelShift, idxs) -> ChannelShift:
        keep = sorted(set(range(layer.shift.numel())) - set(int(i) for i in idxs))
        layer.shift = nn.Parameter(layer.shift.data[keep].clone())
        return layer

    # Same function object for both directions: that is how Torch-Pruning couples them.
    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: ChannelShift) -> int:
        return layer.shift.numel()

    def get_in_channels(self, layer: ChannelShift) -> int:
        return layer.shift.numel()


class Residual(nn.Module):
    """A residual block ``act(branch(x) + shortcut(x))``.

    Args:
        branch: the residual branch, or None once surgery removed it.
        shortcut: the shortcut path (a projection), or None for the identity.
        act: activation applied after the addition, or None (MobileNetV2 has none).
        scatter: where the branch's channels go among the shortcut's, when the branch
            computes only some of them (Tessier et al.'s adder: surgery's
            ``coupling="scatter"``); None: the same channels.
    """

    scatter: torch.Tensor | None

    def __init__(
        self,
        branch: nn.Module | None,
        shortcut: nn.Module | None = None,
        act: nn.Module | None = None,
        scatter: torch.Tensor | None = None,
    ):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.act = act
        self.register_buffer("scatter", scatter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        if self.branch is not None:
            if self.scatter is None:
                out = out + self.branch(x)
            else:
                out = out.index_add(1, self.scatter, self.branch(x))
        return out if self.act is None else self.act(out)


#: Pruners for this module's layers, to pass to every Torch-Pruning dependency graph.
CUSTOM_PRUNERS: dict[type[nn.Module], tp.pruner.function.BasePruningFunc] = {
    ChannelShift: ChannelShiftPruner()}
