"""Dynamic execution of a gated ResNet: really skip the filters FTWT switches off.

The authors' code multiplies dense outputs by the masks ("simulated" execution) and counts the
FLOPs the active filters would cost. `DynamicResNet` computes only the active filters, one
image at a time (each image has its own masks): per gated block it predicts conv1's active
filters from the block input, convolves with those rows of the BN-folded weight only,
predicts conv2's from that sparse output, convolves with the active rows of conv2 restricted
to the input channels active in conv1, and adds the result into the shortcut at the active
channels. Everything outside the gated blocks (stem, decoder, head) runs as in the backbone.
Its output equals `GatedNetwork` in eval mode (same masks) up to float rounding.

`folded_dense` is the dense network it is timed against: the backbone with the same BNs
folded, so that a ratio measures the gating, not the folding. `dynamic_flops` counts
simulated, executed and dense FLOPs; `measure_dynamic_latency` times the dense and the
dynamic network at batch 1, interleaved so drifts in CPU speed hit both.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from baselines.gating.network import BasicBlock, GatedNetwork, MaskPredictor, predicted_masks
from prune_env.measure.latency import synchronizer


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by BN as one conv with bias (running statistics; the originals untouched)."""
    return fuse_conv_bn_eval(copy.deepcopy(conv).eval(), copy.deepcopy(bn).eval())


def _projection(block: BasicBlock, net: nn.Module) -> tuple[str, str] | None:
    """The (conv, BN) names of a gated block's projection shortcut, or None (identity)."""
    if block.shortcut is None:
        return None
    conv, bn = (f"{block.shortcut}.{n}" for n, _ in  # both families project with conv, BN
                net.get_submodule(block.shortcut).named_children())
    return conv, bn


def _conv_bn_pairs(block: BasicBlock, net: nn.Module) -> Iterator[tuple[str, str]]:
    """The (conv, BN) names of a gated block: its branch's two and its projection's."""
    yield block.conv1, block.bn1
    yield block.conv2, block.bn2
    projection = _projection(block, net)
    if projection is not None:
        yield projection


def folded_dense(gated: GatedNetwork) -> nn.Module:
    """The dense backbone (eval mode) with the gated blocks' BNs folded into their convs, as
    `DynamicResNet` has them."""
    net = copy.deepcopy(gated.backbone).eval()
    for block in gated.blocks:
        for conv, bn in list(_conv_bn_pairs(block, net)):
            net.set_submodule(conv, _fold(cast(nn.Conv2d, net.get_submodule(conv)),
                                          cast(nn.BatchNorm2d, net.get_submodule(bn))))
            net.set_submodule(bn, nn.Identity())
    return net


def _active(predictor: MaskPredictor, pooled: Tensor) -> Tensor:
    """Indices of the filters the predictor switches on for one image ([1, C_in] pooled)."""
    return predicted_masks(predictor(pooled))[0].nonzero().flatten()


class DynamicBlock(nn.Module):
    """A gated basic block executing only its active filters (batch 1, BN folded)."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    def __init__(self, net: nn.Module, block: BasicBlock, pred1: MaskPredictor,
                 pred2: MaskPredictor):
        super().__init__()
        convs = [cast(nn.Conv2d, net.get_submodule(n)) for n in (block.conv1, block.conv2)]
        c1, c2 = (_fold(c, cast(nn.BatchNorm2d, net.get_submodule(bn)))
                  for c, bn in zip(convs, (block.bn1, block.bn2), strict=True))
        assert c1.bias is not None and c2.bias is not None  # fusing with BN adds a bias
        self.register_buffer("w1", c1.weight.detach().clone())
        self.register_buffer("b1", c1.bias.detach().clone())
        self.register_buffer("w2", c2.weight.detach().clone())
        self.register_buffer("b2", c2.bias.detach().clone())
        # stride, padding and dilation of each conv (smp's DeepLabV3+ dilates the last stage)
        self.geometry = [(c.stride, c.padding, c.dilation) for c in convs]
        projection = _projection(block, net)
        self.shortcut = None if projection is None else _fold(
            cast(nn.Conv2d, net.get_submodule(projection[0])),
            cast(nn.BatchNorm2d, net.get_submodule(projection[1])))
        self.pred1, self.pred2 = copy.deepcopy(pred1), copy.deepcopy(pred2)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.shortcut is None else self.shortcut(x)
        (s1, p1, d1), (s2, p2, d2) = self.geometry
        a1 = _active(self.pred1, x.mean((2, 3)))
        h = F.relu(F.conv2d(x, self.w1.index_select(0, a1), self.b1.index_select(0, a1),
                            s1, p1, d1))
        # The masked network feeds the predictor the full-width input whose inactive
        # channels are exactly zero: scatter the active channels' means into zeros.
        pooled = h.new_zeros(1, self.w1.shape[0]).index_copy_(1, a1, h.mean((2, 3)))
        a2 = _active(self.pred2, pooled)
        w2 = self.w2.index_select(0, a2).index_select(1, a1)
        y = F.conv2d(h, w2, self.b2.index_select(0, a2), s2, p2, d2)
        # In place: ``out`` is the shortcut's fresh output or the previous layer's output,
        # which nothing else reads.
        return out.index_add_(1, a2, y).relu_()


class DynamicResNet(nn.Module):
    """A `GatedNetwork` (eval semantics) that computes only the active filters.

    Each gated block becomes a `DynamicBlock` (BNs folded); the rest of the backbone (stem,
    ungated blocks, decoder, classifier) runs as it is. Inputs are processed one image at a
    time, since each image has its own active filters. For inference only (run it under
    ``torch.inference_mode``): blocks add in place.

    Args:
        gated: the gated network; its running BN statistics and predictors are copied.
    """

    def __init__(self, gated: GatedNetwork):
        super().__init__()
        net = copy.deepcopy(gated.backbone)
        for block in gated.blocks:
            net.set_submodule(block.name, DynamicBlock(
                gated.backbone, block, gated.predictor(block.conv1),
                gated.predictor(block.conv2)))
        self.net = net.eval()
        if hasattr(gated, "input_shape"):
            self.input_shape = gated.input_shape

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            return self.net(x)
        return torch.cat([self.net(image[None]) for image in x])


def _dense_flops(model: nn.Module, image: Tensor) -> dict[str, int]:
    """2 * MACs per image of every conv and linear layer (torch.utils.flop_counter's rule)."""
    flops: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, _inputs, output: Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                fan_in = module.in_channels // module.groups * k
                flops[name] = 2 * output[0].numel() * fan_in
            else:
                linear = cast(nn.Linear, module)  # the hooks are on Conv2d and Linear only
                flops[name] = 2 * linear.in_features * linear.out_features
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.inference_mode():
            model(image[:1])
    finally:
        for handle in handles:
            handle.remove()
    return flops


def dynamic_flops(gated: GatedNetwork, images: Tensor, batch_size: int = 256) -> dict:
    """Mean FLOPs per image (2 * MACs) of the gated network's predicted masks.

    Returns:
        "simulated": the paper's count: a gated conv costs active_out * H*W * active_in * k^2
            (active_in: conv1's active filters for conv2, the full width for conv1), dense
            layers their full cost, predictors nothing.
        "executed": what `DynamicResNet` computes, i.e. simulated plus the predictors' 1x1
            convs (pooling and softmax, like BN and ReLU, are not counted).
        "dense": the dense backbone.
        "active": mean active filters per gate.
    """
    was = gated.training
    gated.eval()
    dense = _dense_flops(gated.backbone, images)
    counts: dict[str, list[Tensor]] = {gate: [] for gate in gated.gates}
    with torch.inference_mode():
        for chunk in images.split(batch_size):
            gated(chunk)
            for gate, mask in gated.last_masks.items():
                counts[gate].append(mask.sum(1).double())
    gated.train(was)
    active = {gate: torch.cat(c) for gate, c in counts.items()}
    simulated: int | Tensor = sum(dense.values()) - sum(dense[g] for g in gated.gates)
    for conv1, conv2 in zip(gated.gates[::2], gated.gates[1::2], strict=True):
        width1 = cast(nn.Conv2d, gated.backbone.get_submodule(conv1)).out_channels
        width2 = cast(nn.Conv2d, gated.backbone.get_submodule(conv2)).out_channels
        # dense[g] scales with out * in; rescale by the active fractions.
        simulated = simulated + dense[conv1] * active[conv1] / width1
        simulated = simulated + dense[conv2] * active[conv2] * active[conv1] / (width2 * width1)
    predictors = sum(2 * cast(MaskPredictor, p).linear.in_features
                     * cast(MaskPredictor, p).linear.out_features
                     for p in gated.predictors.values())
    # A Tensor: a GatedNetwork has at least one gated block (`gated_blocks` checks).
    assert isinstance(simulated, Tensor)
    mean = float(simulated.mean())
    return {"simulated": mean, "executed": mean + predictors,
            "dense": float(sum(dense.values())),
            "active": {gate: float(a.mean()) for gate, a in active.items()}}


def measure_dynamic_latency(dense: nn.Module, dynamic: nn.Module, images: Tensor,
                            rounds: int = 5, threads: int = 1) -> dict[str, Any]:
    """Batch-1 latency of a dense and a dynamic network over real images, interleaved.

    Per round and image, times ``dense(x_i)`` then ``dynamic(x_i)`` (perf_counter, inference
    mode, after a warm-up pass over the first images); interleaving puts drifts in CPU clock or
    load on both. Each image's time is its median over rounds, because a dynamic network's
    cost depends on the image. A `GatedNetwork` in eval mode may be passed as ``dynamic`` to
    time the simulated (masked) execution.

    Args:
        dense: the dense network.
        dynamic: the dynamic (or masked) network.
        images: [N, C, H, W] images.
        rounds: timings per image.
        threads: intra-op threads while timing (restored after).

    Returns:
        "dense_ms", "dynamic_ms": mean over images of the per-image medians;
        "ratio": dynamic_ms / dense_ms; "dense_iqr_ms", "dynamic_iqr_ms": interquartile range
        over images of the per-image medians; "dense_per_image_ms", "dynamic_per_image_ms":
        the per-image medians themselves (paired, for the ratio's interval).
    """
    before, modes = torch.get_num_threads(), (dense.training, dynamic.training)
    sync = synchronizer(images.device)  # a GPU's work is timed, not its queueing
    torch.set_num_threads(threads)
    dense.eval()
    dynamic.eval()
    times: list[list[list[float]]] = [[[] for _ in images] for _ in range(2)]  # [net][image]
    try:
        with torch.inference_mode():
            for x in images[:3]:
                dense(x[None])
                dynamic(x[None])
            for _ in range(rounds):
                for i, x in enumerate(images):
                    x = x[None]
                    sync()
                    t0 = time.perf_counter()
                    dense(x)
                    sync()
                    t1 = time.perf_counter()
                    dynamic(x)
                    sync()
                    t2 = time.perf_counter()
                    times[0][i].append(t1 - t0)
                    times[1][i].append(t2 - t1)
    finally:
        torch.set_num_threads(before)
        dense.train(modes[0])
        dynamic.train(modes[1])
    medians = torch.tensor(times, dtype=torch.float64).median(2).values * 1e3  # [2, N] ms
    iqr = medians.quantile(0.75, 1) - medians.quantile(0.25, 1)
    mean = medians.mean(1)
    return {"dense_ms": float(mean[0]), "dynamic_ms": float(mean[1]),
            "ratio": float(mean[1] / mean[0]),
            "dense_iqr_ms": float(iqr[0]), "dynamic_iqr_ms": float(iqr[1]),
            "dense_per_image_ms": medians[0].tolist(), "dynamic_per_image_ms": medians[1].tolist()}
